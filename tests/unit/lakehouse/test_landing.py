import gzip

from lakehouse.landing import gzip_bytes, nyc_monthly_extracts, sample, split_csv_by_month

CSV = 'year,month,day,name\n2013,1,1,a\n2013,2,1,"b, c"\n2013,1,31,d\n2014,1,1,e\n'


def test_split_by_month_keeps_each_line_as_it_was():
    months = split_csv_by_month(CSV, "year", "month")
    assert sorted(months) == ["2013-01", "2013-02", "2014-01"]
    header, lines = months["2013-01"]
    assert header == "year,month,day,name"
    assert lines == ["2013,1,1,a", "2013,1,31,d"]
    assert months["2013-02"][1] == ['2013,2,1,"b, c"']


def test_sample_takes_every_nth_line():
    assert sample(list("abcdefg"), 3) == ["a", "d", "g"]
    assert sample(list("abc"), 1) == ["a", "b", "c"]


def test_gzip_is_deterministic():
    assert gzip_bytes(b"x" * 100) == gzip_bytes(b"x" * 100)
    assert gzip.decompress(gzip_bytes(b"abc")) == b"abc"


def test_monthly_extracts_are_named_by_month_and_count_rows():
    out = list(nyc_monthly_extracts("nyc_flights", CSV, "nyc/flights/", {"2013-01", "2013-02"}, 1))
    assert [(e.key, e.rows, e.month) for e in out] == [("nyc/flights/2013-01.csv", 2, "2013-01"), ("nyc/flights/2013-02.csv", 1, "2013-02")]
    assert out[0].data.decode().splitlines()[0] == "year,month,day,name"
