"""The architecture flow chart of the lakehouse, rendered to docs/architecture.png (`make docs`).

Drawn with the `diagrams` package (in requirements/lock.txt), which needs Graphviz's `dot`
(Debian: `apt-get install graphviz`). Every node names something that exists in the repository;
docs/architecture.md describes each one. Solid edges carry data, dashed edges are control (Airflow
starting a job), dotted edges are lineage and metadata.

    .venv/bin/python docs/architecture.py [output.png]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from diagrams import Cluster, Diagram, Edge
from diagrams.generic.storage import Storage
from diagrams.onprem.analytics import Spark
from diagrams.onprem.client import Users
from diagrams.onprem.database import Postgresql
from diagrams.onprem.mlops import Mlflow
from diagrams.onprem.workflow import Airflow
from diagrams.programming.flowchart import Decision, Document, MultipleDocuments
from diagrams.programming.language import Python

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "architecture.png"

TITLE = "Lakehouse: the data backend of a quarterly ML model build\nsolid: data  |  dashed: control (Airflow starts a job)  |  dotted: lineage and metadata"

GRAPH = {
    "fontsize": "22",
    "fontname": "Helvetica",
    "pad": "0.4",
    "nodesep": "0.45",
    "ranksep": "0.9",
    "splines": "spline",
    "dpi": "72",
    "labelloc": "t",
}
NODE = {"fontsize": "14", "fontname": "Helvetica"}
EDGE = {"fontsize": "13", "fontname": "Helvetica"}
CLUSTER = {"fontsize": "15", "fontname": "Helvetica"}


def group(label: str) -> Cluster:
    return Cluster(label, graph_attr=CLUSTER)


def data(label: str = "") -> Edge:
    return Edge(label=label, color="#1f4e79", style="bold")


def control(label: str = "") -> Edge:
    return Edge(label=label, color="#c55a11", style="dashed")


def lineage(label: str = "") -> Edge:
    return Edge(label=label, color="#7f7f7f", style="dotted")


def draw(output: Path) -> Path:
    """Render the chart to `output` (a .png path); return it."""
    if shutil.which("dot") is None:
        raise SystemExit("error: Graphviz's `dot` is not on PATH (Debian: apt-get install graphviz)")
    stem = output.with_suffix("")
    with Diagram(TITLE, filename=str(stem), outformat="png", show=False, direction="LR", graph_attr=GRAPH, node_attr=NODE, edge_attr=EDGE):
        with group("Source systems\n(simulated: `lakehouse land`)"):
            sources = MultipleDocuments("BTS on-time 2001\nnycflights13 2013\nmonthly extracts (CSV.gz)\n+ snapshots")

        with group("Orchestration: Airflow 3 (LocalExecutor)\nretries with backoff, timeouts;\none writer at a time: pool lakehouse_writers"):
            monthly = Airflow("lakehouse_monthly_ingest\n0 0 1 * *\nwait_for_extracts -> ingest")
            quarterly = Airflow("lakehouse_quarterly_build\n0 0 1 */3 *\nwait_for_quarter -> silver\n-> gold -> record -> maintain")

        with group("S3 object store: SeaweedFS (native) / MinIO (compose)\nno anonymous access, one key pair per role (ROLE_GRANTS)"):
            landing = Storage("landing\nbts/flights/2001-01.csv.gz ...")
            with group("Delta tables (ACID, time travel)"):
                bronze = Storage("bronze\n7 feed tables (strings, append-only,\nchange data feed) + _ingest_log")
                silver = Storage("silver\nflights, airports, carriers, planes,\nweather_hourly + _quarantine, _progress")
                gold = Storage("gold\nroute_daily, airport_daily,\ntraining_set (per quarter) + _builds")
            quality = Storage("quality\nreports/ (GX JSON + HTML)")
            mlflow_bucket = Storage("mlflow\nrun artifacts")

        with group("Spark jobs: the lakehouse library\nlocal[*] or spark://master:7077 (LAKEHOUSE_SPARK_MASTER)"):
            ingest = Spark("ingest (bronze/ingest.py)\nrole ingest: exactly once\nper object key + ETag")
            conform = Spark("silver (silver/*.py)\nrole transform: change feed,\nfates, MERGE on keys")
            features = Spark("gold (gold/*.py)\nrole transform: features of\none quarter, replaceWhere")
            gates = Decision("quality gates (Great Expectations)\npublish only when the suite passes;\nreport kept either way")

        with group("Lineage"):
            mlflow = Mlflow("MLflow tracking server\none run per build,\nDelta versions as inputs")
            metadata = Postgresql("metadata of Airflow + MLflow\nPostgres (compose)\nSQLite (native)")

        with group("Delivery to the ML frontend"):
            loader = Python("load_training_set(quarter, build)\nlakehouse export\nrole ml: reads gold, writes nothing;\ndigest verified")
            notebooks = Document("JupyterLab notebooks 01-04\nread-only views (delta-rs):\ngold as ml, bronze/silver as transform")
            model = Users("quarterly ML model build\n(the frontend, out of scope)")

        sources >> data("monthly") >> landing
        landing >> data() >> ingest >> data("append") >> bronze
        bronze >> data("new rows (CDF)") >> conform
        conform >> data("stage") >> quality
        silver >> data() >> features
        features >> data("stage") >> quality
        quality >> data("audit") >> gates
        gates >> data("publish: MERGE") >> silver
        gates >> data("publish: replaceWhere") >> gold
        conform >> data("quarantine + reason") >> silver
        gold >> data("time travel to the\nmanifest's version") >> loader
        loader >> data("pandas / arrow / Spark") >> model
        gold >> data() >> notebooks

        monthly >> control() >> ingest
        quarterly >> control() >> conform
        quarterly >> control() >> features

        features >> lineage("record: MLflow run\n+ gold._builds row") >> mlflow
        mlflow >> lineage() >> metadata
        mlflow >> lineage("artifacts") >> mlflow_bucket
        quarterly >> lineage("DAG runs, task state") >> metadata
        notebooks >> lineage("runs") >> mlflow
    return output


def main() -> None:
    output = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else DEFAULT_OUTPUT
    print(draw(output))


if __name__ == "__main__":
    main()
