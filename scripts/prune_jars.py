"""Remove from a jar folder every jar whose artifact the pyspark wheel already bundles.

Maven copies the full runtime closure of Delta and hadoop-aws; pyspark ships its own Hadoop client,
Parquet, Jackson, Scala and logging jars, and a second copy on the classpath only risks conflicts.
"""

import re
import sys
from pathlib import Path

import pyspark

_ARTIFACT = re.compile(r"^(?P<artifact>.+?)-\d[\w.\-]*\.jar$")


def artifact_of(jar_name: str) -> str:
    """Return the artifact id of a versioned jar file name."""
    match = _ARTIFACT.match(jar_name)
    return match.group("artifact") if match else jar_name


def main(folder: str) -> None:
    bundled = {artifact_of(p.name) for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    for jar in sorted(Path(folder).glob("*.jar")):
        if artifact_of(jar.name) in bundled:
            jar.unlink()
            print(f"pruned {jar.name} (bundled with pyspark)")


if __name__ == "__main__":
    main(sys.argv[1])
