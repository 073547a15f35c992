"""Write the class-data archive of the Spark driver's JVM (`make setup`): `python scripts/class_archive.py ARCHIVE`.

Every Spark step starts a JVM that loads and verifies some 20,000 classes of Spark, Delta, Hadoop
and the AWS SDK before its first job. A dynamic class-data-sharing archive (JDK 13+, JEP 350) holds
them ready to map: a training session runs the kinds of work a build does (a partitioned Delta
write, a read, a window, an aggregate, a MERGE, Arrow batches through Python, an S3A file system)
on a temporary folder, and its JVM writes the archive as it exits. `lakehouse.spark` passes the
archive to every driver JVM when the file exists; a JVM of another build, or other jars, ignores it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from lakehouse.settings import settings_from_mapping
from lakehouse.spark import spark_conf


def _train(spark: SparkSession, folder: Path) -> None:
    """Run once what the build steps run, so that their classes are loaded (and archived)."""
    path = str(folder / "table")
    frame = spark.range(2000).selectExpr("id", "CAST(id % 5 AS STRING) AS part", "id * 1.5 AS value", "current_date() AS day")
    frame.write.format("delta").partitionBy("part").save(path)
    table = spark.read.format("delta").load(path)
    latest = Window.partitionBy("part").orderBy(F.col("id").desc())
    table.withColumn("rank", F.row_number().over(latest)).where("rank = 1").collect()
    table.groupBy("part").agg(F.count(F.lit(1)), F.sum("value"), F.countDistinct("id")).collect()
    spark.sql(
        f"MERGE INTO delta.`{path}` AS t USING (SELECT 1L AS id, '1' AS part, 9.0D AS value, current_date() AS day) AS s "
        "ON t.id = s.id WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
    )
    table.mapInArrow(lambda batches: batches, table.schema).count()
    spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()
    # S3A and the AWS SDK: a file system for a bucket, created without a request to any store
    jvm, conf = spark._jvm, spark._jsc.hadoopConfiguration()  # type: ignore[attr-defined,union-attr]
    conf.set("fs.s3a.endpoint", "http://127.0.0.1:9")
    conf.set("fs.s3a.access.key", "class-archive")
    conf.set("fs.s3a.secret.key", "class-archive")
    jvm.org.apache.hadoop.fs.FileSystem.newInstance(jvm.java.net.URI("s3a://class-archive/"), conf).close()


def main(archive: Path) -> int:
    t0 = time.monotonic()
    archive = archive.resolve()
    partial = archive.with_name(archive.name + ".partial")
    for stale in (archive, partial):
        stale.unlink(missing_ok=True)
    settings = settings_from_mapping({**os.environ, "LAKEHOUSE_JARS_DIR": str(archive.parent)})
    conf = spark_conf(settings, [], "lakehouse-class-archive")
    conf.update({"spark.master": "local[2]", "spark.driver.memory": "1g", "spark.eventLog.enabled": "false"})
    conf["spark.driver.extraJavaOptions"] += f" -XX:ArchiveClassesAtExit={partial} -Xlog:cds=off -Xlog:cds+dynamic=off"
    os.environ["PYSPARK_PYTHON"] = settings.spark_python  # the Arrow step's workers: this environment's Python
    os.environ.setdefault("SPARK_LOCAL_IP", settings.spark_driver_host)
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    with tempfile.TemporaryDirectory(prefix="class-archive-") as folder:
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        gateway = spark.sparkContext._gateway  # type: ignore[attr-defined]
        try:
            _train(spark, Path(folder))
        finally:
            spark.stop()
            # the JVM exits when its standard input closes, and writes the archive as it does
            gateway.proc.stdin.close()
            gateway.proc.wait(timeout=600)
    if not partial.is_file():
        print(f"error: the JVM wrote no class-data archive to {partial}", file=sys.stderr)
        return 1
    partial.rename(archive)
    print(f"class-data archive of the Spark driver: {archive} ({archive.stat().st_size / 2**20:.0f} MB, {time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.splitlines()[0])
    sys.exit(main(Path(sys.argv[1])))
