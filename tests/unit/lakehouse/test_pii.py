"""Personal data: keyed pseudonyms computed in Spark without the key in any plan, and gate reports without personal samples."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from lakehouse import pii, quality
from lakehouse.errors import UserError
from lakehouse.settings import settings_from_mapping
from lakehouse.spark import local_frame

KEY = b"0123456789abcdef-a-test-key-only"


def test_a_pseudonym_is_the_keyed_hmac_of_the_value_in_spark_as_in_python_and_null_stays_null(spark):
    frame = local_frame(spark, [("N14228",), (None,), ("N14228",), ("N24211",)], "tailnum STRING")
    found = [r[0] for r in frame.select(pii.pseudonym(frame["tailnum"], KEY).alias("p")).collect()]
    expected = "pn_" + hmac.new(KEY, b"N14228", hashlib.sha256).hexdigest()[:32]
    assert found == [expected, None, expected, pii.pseudonym_of("N24211", KEY)]
    assert pii.pseudonym_of("N14228", b"another key") != expected  # without the key, no one can compute it
    # the key is in no plan (nor so in the Spark UI or an event log): only in the UDF's pickled closure
    plan = frame.select(pii.pseudonym(frame["tailnum"], KEY))._jdf.queryExecution().toString()
    assert KEY.decode() not in plan and KEY.hex() not in plan and bytes(b ^ 0x36 for b in KEY).hex() not in plan


def test_without_a_key_silver_refuses_to_store_personal_data_and_says_where_the_key_comes_from(tmp_path):
    with pytest.raises(UserError, match=r"LAKEHOUSE_PII_KEY is not set: .*`lakehouse up`"):
        pii.key(settings_from_mapping({"LAKEHOUSE_HOME": str(tmp_path)}))
    assert pii.key(settings_from_mapping({"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_PII_KEY": "k"})) == b"k"


def test_a_failed_gate_reports_no_sample_value_of_a_personal_column(spark):
    frame = local_frame(spark, [("N14228", 3), ("SECRET-N1", 5), ("SECRET-N2", -1)], "tailnum STRING, seats INT")
    checks = [
        quality.Check("tailnum_pattern", "ExpectColumnValuesToMatchRegex", {"column": "tailnum", "regex": "^N[0-9]+$"}),
        quality.Check("seats_non_negative", "ExpectColumnValuesToBeBetween", {"column": "seats", "min_value": 0}),
    ]
    gate, gx_result = quality.validate(frame, "silver.planes", checks, personal=("tailnum",))
    assert not gate.success
    by_rule = {r["rule"]: r for r in gate.results}
    assert by_rule["tailnum_pattern"]["unexpected_count"] == 2 and by_rule["tailnum_pattern"]["partial_unexpected_list"] == [quality.REDACTED]
    assert by_rule["seats_non_negative"]["partial_unexpected_list"] == [-1]  # other columns keep their samples
    report = json.dumps(gx_result.to_json_dict(), default=str) + json.dumps(gate.results, default=str) + quality._render_html(gx_result)
    assert "SECRET" not in report and gate.failed and "SECRET" not in quality.GateFailed(gate).args[0]
