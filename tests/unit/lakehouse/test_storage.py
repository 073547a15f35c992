from datetime import UTC, datetime

from dotenv import dotenv_values
from pyspark.sql import Row

from lakehouse.services import generate_secrets
from lakehouse.settings import load_settings
from lakehouse.spark import adaptive_wanted, bucket_roles, class_archive, client_compiler_wanted, local_frame, spark_conf
from lakehouse.storage import ROLE_GRANTS, seaweed_identities
from lakehouse.tables import BUILDS, PROGRESS


def _settings(tmp_path):
    generate_secrets(tmp_path / "secrets.env")
    return load_settings({"LAKEHOUSE_HOME": str(tmp_path)})


def _fake_jars(tmp_path) -> None:
    """Empty stand-ins for the Delta and S3A jars under tmp_path/jars (spark_conf checks that they are there)."""
    (tmp_path / "jars").mkdir()
    for jar in ("delta-spark_4.1_2.13-4.4.0.jar", "hadoop-aws-3.4.2.jar"):
        (tmp_path / "jars" / jar).write_bytes(b"")


def test_generated_secrets_are_private_and_not_overwritten(tmp_path):
    path = tmp_path / "secrets.env"
    assert generate_secrets(path)
    first = path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not generate_secrets(path)
    assert path.read_text() == first
    assert len(dotenv_values(path)["LAKEHOUSE_PII_KEY"] or "") == 64


def test_a_secrets_file_from_before_the_pseudonymisation_key_gets_one_and_keeps_its_keys(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text("LAKEHOUSE_ML_ACCESS_KEY=ml-1\nLAKEHOUSE_ML_SECRET_KEY=s\n")
    assert not generate_secrets(path)
    found = dotenv_values(path)
    assert (found["LAKEHOUSE_ML_ACCESS_KEY"], found["LAKEHOUSE_ML_SECRET_KEY"], len(found["LAKEHOUSE_PII_KEY"] or "")) == ("ml-1", "s", 64)
    generate_secrets(path)
    assert dotenv_values(path) == found


def test_identities_grant_each_role_only_its_buckets(tmp_path):
    doc = seaweed_identities(_settings(tmp_path))
    actions = {i["name"]: set(i["actions"]) for i in doc["identities"]}
    assert actions["ml"] == {"Read:gold", "List:gold"}
    assert actions["ingest"] == {f"{a}:{b}" for b in ("landing", "bronze", "control") for a in ("Read", "List", "Write", "Tagging")}
    assert "Write:bronze" not in actions["transform"] and "Read:bronze" in actions["transform"]
    assert "Admin" in actions["admin"]
    assert set(actions) == set(ROLE_GRANTS)


def test_each_bucket_gets_the_least_privileged_role_that_covers_the_job():
    assert bucket_roles(["ingest"]) == {"landing": "ingest", "bronze": "ingest"}
    assert bucket_roles(["ml"]) == {"gold": "ml"}
    # bronze: ingest writes it; transform only reads it, so a combined job writes bronze as ingest
    assert bucket_roles(["transform", "ingest"])["bronze"] == "ingest"
    assert bucket_roles(["transform", "ingest"])["silver"] == "transform"


def test_spark_conf_is_loopback_and_carries_per_bucket_keys(tmp_path):
    settings = _settings(tmp_path)
    _fake_jars(tmp_path)
    settings = load_settings({"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_JARS_DIR": str(tmp_path / "jars")})
    conf = spark_conf(settings, ["ml"], "t")
    assert conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.hadoop.fs.s3a.bucket.gold.access.key"] == settings.credentials_for("ml").access_key
    assert not any(".bucket.bronze." in k for k in conf)
    assert conf["spark.jars"].count(".jar") == 2

    kept = spark_conf(load_settings({"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_JARS_DIR": str(tmp_path / "jars"), "LAKEHOUSE_SPARK_SHIP_JARS": "false"}), ["ml"], "t")
    assert "spark.jars" not in kept and kept["spark.driver.extraClassPath"].count(".jar") == 2


def test_adaptive_execution_is_on_and_a_setting_turns_it_off(tmp_path):
    _fake_jars(tmp_path)
    base = {"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_JARS_DIR": str(tmp_path / "jars"), "LAKEHOUSE_ML_ACCESS_KEY": "k", "LAKEHOUSE_ML_SECRET_KEY": "s"}
    assert spark_conf(load_settings(base), ["ml"], "t")["spark.sql.adaptive.enabled"] == "true"
    assert spark_conf(load_settings({**base, "LAKEHOUSE_SPARK_ADAPTIVE": "false"}), ["ml"], "t")["spark.sql.adaptive.enabled"] == "false"


def test_adaptive_execution_follows_the_rows_a_step_reads(tmp_path):
    base = {"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_SPARK_ADAPTIVE_MIN_ROWS": "1000"}
    on, off = load_settings(base), load_settings({**base, "LAKEHOUSE_SPARK_ADAPTIVE": "false"})
    assert [adaptive_wanted(on, rows) for rows in (999, 1000, 3_000_000, None)] == [False, True, True, True]
    assert [adaptive_wanted(off, rows) for rows in (999, 3_000_000, None)] == [False, False, False]
    assert load_settings({"LAKEHOUSE_HOME": str(tmp_path)}).spark_adaptive_min_rows == 1_000_000


def test_event_logs_are_written_only_when_a_folder_is_set(tmp_path):
    _fake_jars(tmp_path)
    base = {"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_JARS_DIR": str(tmp_path / "jars"), "LAKEHOUSE_ML_ACCESS_KEY": "k", "LAKEHOUSE_ML_SECRET_KEY": "s"}
    assert "spark.eventLog.enabled" not in spark_conf(load_settings(base), ["ml"], "t")
    conf = spark_conf(load_settings({**base, "LAKEHOUSE_SPARK_EVENT_LOG_DIR": str(tmp_path / "events")}), ["ml"], "t")
    assert conf["spark.eventLog.enabled"] == "true" and conf["spark.eventLog.dir"] == (tmp_path / "events").as_uri()
    assert conf["spark.eventLog.compress"] == "false"


def test_the_driver_jvm_maps_the_class_archive_when_setup_made_one_and_takes_extra_options(tmp_path):
    _fake_jars(tmp_path)
    base = {"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_JARS_DIR": str(tmp_path / "jars"), "LAKEHOUSE_ML_ACCESS_KEY": "k", "LAKEHOUSE_ML_SECRET_KEY": "s"}
    options = spark_conf(load_settings(base), ["ml"], "t")["spark.driver.extraJavaOptions"]
    assert options.startswith("-Dlog4j.configurationFile=file:") and "SharedArchiveFile" not in options

    archive = class_archive(load_settings(base))
    archive.write_bytes(b"")
    options = spark_conf(load_settings({**base, "LAKEHOUSE_SPARK_DRIVER_JAVA_OPTIONS": " -XX:+UseSerialGC "}), ["ml"], "t")["spark.driver.extraJavaOptions"]
    assert f"-XX:SharedArchiveFile={archive} " in options and options.endswith(" -XX:+UseSerialGC")


def test_a_small_step_compiles_with_the_client_compiler_only(tmp_path):
    _fake_jars(tmp_path)
    base = {"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_JARS_DIR": str(tmp_path / "jars"), "LAKEHOUSE_SPARK_CLIENT_COMPILER_ROWS": "1000"}
    settings = load_settings(base)
    assert [client_compiler_wanted(settings, rows) for rows in (0, 999, 1000, None)] == [True, True, False, False]
    assert "-XX:TieredStopAtLevel=1" in spark_conf(settings, [], "t", rows=999)["spark.driver.extraJavaOptions"]
    assert "TieredStopAtLevel" not in spark_conf(settings, [], "t", rows=5000)["spark.driver.extraJavaOptions"]
    assert "TieredStopAtLevel" not in spark_conf(settings, [], "t")["spark.driver.extraJavaOptions"]  # size unknown
    assert load_settings({"LAKEHOUSE_HOME": str(tmp_path)}).spark_client_compiler_rows == 1_000_000


def test_the_client_compiler_gets_the_code_cache_of_both_compilers(tmp_path):
    """Its default of 48 MB fills within a small build, and then the JVM's sweeper burns CPU; 240 MB is the tiered default."""
    _fake_jars(tmp_path)
    base = {"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_JARS_DIR": str(tmp_path / "jars"), "LAKEHOUSE_SPARK_CLIENT_COMPILER_ROWS": "1000"}

    def options(rows: int | None, own: str | None = None) -> str:
        extra = {"LAKEHOUSE_SPARK_DRIVER_JAVA_OPTIONS": own} if own else {}
        return spark_conf(load_settings({**base, **extra}), [], "t", rows=rows)["spark.driver.extraJavaOptions"]

    assert "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m" in options(999)
    assert "ReservedCodeCacheSize" not in options(5000)  # both compilers: the JVM's own default, 240 MB
    # the client compiler asked for in one's own options (the tests) gets it too, before those options
    assert options(5000, "-XX:TieredStopAtLevel=1").endswith("-XX:ReservedCodeCacheSize=240m -XX:TieredStopAtLevel=1")
    # a code cache of one's own wins
    assert options(999, "-XX:ReservedCodeCacheSize=64m").endswith("-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=64m")


def test_the_driver_collects_garbage_with_the_parallel_collector_unless_its_options_choose_one(tmp_path):
    _fake_jars(tmp_path)
    base = {"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_JARS_DIR": str(tmp_path / "jars")}

    def options(own: str | None = None) -> list[str]:
        extra = {"LAKEHOUSE_SPARK_DRIVER_JAVA_OPTIONS": own} if own else {}
        return spark_conf(load_settings({**base, **extra}), [], "t")["spark.driver.extraJavaOptions"].split()

    assert "-XX:+UseParallelGC" in options()
    assert "-XX:+UseParallelGC" in options("-XX:TieredStopAtLevel=1 -XX:+UseGCOverheadLimit")
    # two collectors would stop the JVM from starting: one's own choice is the only one
    for own in ("-XX:+UseG1GC", "-Xss4m -XX:+UseZGC", "-XX:+UseSerialGC"):
        chosen = [o for o in options(own) if o.startswith("-XX:+Use") and o.endswith("GC")]
        assert chosen == own.split()[-1:], own


def test_rows_of_the_driver_become_a_relation_in_the_jvm_with_the_values_spark_would_give(spark):
    ended = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
    record = {
        "build_id": "b1", "quarter": "2013Q1", "status": "SUCCEEDED", "mlflow_run_id": None, "run_id": "build-x",
        "feature_contract_version": "3", "code_version": "c", "config_digest": "d", "tables_read": {"silver.flights": 7},
        "tables_written": {}, "digest": None, "row_counts": {"gold.training_set": 10, "eligible_silver_rows": 12},
        "gate_reports": {"gold.route_daily.2013Q1": "s3://quality/r.json"}, "error": None,
        "started_at": datetime(2026, 4, 1, 8, 30, 15, 123456, tzinfo=UTC), "ended_at": ended,
    }  # fmt: skip
    frame = local_frame(spark, [record], BUILDS.schema)
    assert frame.schema == BUILDS.schema
    assert frame.collect() == spark.createDataFrame([record], BUILDS.schema).collect()
    # a local relation: no scan of pickled rows, which Python workers would re-serialize for every job
    assert "LocalTableScan" in frame._jdf.queryExecution().executedPlan().toString()
    # tuples in schema order, a DDL schema, no rows; a naive datetime is UTC (the session's zone)
    progress = local_frame(spark, [("silver.flights", "bronze.nyc_flights", 4, "build-x", datetime(2026, 4, 1, 8, 30))], PROGRESS.schema)
    assert progress.selectExpr("cast(updated_at AS STRING) AS t").collect() == [Row(t="2026-04-01 08:30:00")]
    assert local_frame(spark, [("JFK",), ("LGA",)], "_code STRING").collect() == [Row(_code="JFK"), Row(_code="LGA")]
    assert local_frame(spark, [], BUILDS.schema).count() == 0
