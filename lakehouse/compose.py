"""Assets of the docker-compose stack derived from the library: MinIO policies and the .env file.

The access matrix lives in one place, `storage.ROLE_GRANTS`; the MinIO policy files that
`minio-init` loads (docker/minio/policies/<role>.json) and the bucket list it creates are
rendered from it and committed, and a test fails when they drift. `.env` holds the compose
stack's secrets: it is rendered from the committed `.env.example` with a fresh random value for
every placeholder and written with mode 600; an existing one only gains the variables it lacks.

Run as `python -m lakehouse.compose policies docker/minio` or
`python -m lakehouse.compose env .env.example .env` (the make targets `compose-policies` and `env`).
Only the standard library is imported at module level, so `make env` needs no virtualenv.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import string
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

#: The value that marks a secret to generate in .env.example.
PLACEHOLDER = "change-me"

#: MinIO accepts access keys of at most 20 characters and secret keys of at most 40.
_ACCESS_KEY_MAX, _SECRET_KEY_LEN = 20, 32

#: Letters and digits only: the values go into URLs (MC_HOST_*), SQL and command lines unquoted,
#: and a leading "-" would read as an option to `mc`.
_ALPHABET = string.ascii_letters + string.digits

# Delta writers list, S3A aborts multipart uploads it does not finish (delete is an object action).
_WRITE_BUCKET_ACTIONS = ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"]
_BUCKET_ACTIONS = {
    "read": ["s3:GetBucketLocation", "s3:ListBucket"],
    "write": _WRITE_BUCKET_ACTIONS,
    "delete": _WRITE_BUCKET_ACTIONS,
    "admin": ["s3:*"],
}
#: `write` implies read and list but not delete: a Delta writer only adds files (the SeaweedFS
#: identities grant Tagging with Write, and S3A uses multipart uploads for large files). `delete`
#: adds s3:DeleteObject, for the maintenance role's VACUUM, retention and erasure.
_WRITE_OBJECT_ACTIONS = [
    "s3:AbortMultipartUpload",
    "s3:GetObject",
    "s3:GetObjectTagging",
    "s3:ListMultipartUploadParts",
    "s3:PutObject",
    "s3:PutObjectTagging",
]
_OBJECT_ACTIONS = {
    "read": ["s3:GetObject"],
    "write": _WRITE_OBJECT_ACTIONS,
    "delete": sorted([*_WRITE_OBJECT_ACTIONS, "s3:DeleteObject"]),
    "admin": ["s3:*"],
}


def minio_policy(grants: Mapping[str, str]) -> dict:
    """An S3 IAM policy granting exactly `grants` ({bucket: read | write | delete | admin}) and nothing else."""
    statements = []
    for bucket, level in grants.items():
        label = bucket.capitalize()
        statements.append(
            {
                "Sid": f"Bucket{label}",
                "Effect": "Allow",
                "Action": _BUCKET_ACTIONS[level],
                "Resource": [f"arn:aws:s3:::{bucket}"],
            }
        )
        statements.append(
            {
                "Sid": f"Objects{label}",
                "Effect": "Allow",
                "Action": _OBJECT_ACTIONS[level],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            }
        )
    if "admin" in grants.values():
        # `lakehouse status` checks the store by listing the buckets as admin.
        statements.append(
            {
                "Sid": "ListAllBuckets",
                "Effect": "Allow",
                "Action": ["s3:ListAllMyBuckets"],
                "Resource": ["arn:aws:s3:::*"],
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def minio_policies() -> dict[str, dict]:
    """One policy per role, from `storage.ROLE_GRANTS` (bucket names are the default physical names)."""
    from lakehouse.storage import ROLE_GRANTS

    return {role: minio_policy(grants) for role, grants in ROLE_GRANTS.items()}


def minio_assets() -> dict[str, str]:
    """Every file under docker/minio/ that is rendered from the library: path relative to it -> text."""
    from lakehouse.settings import BUCKETS

    files = {f"policies/{role}.json": json.dumps(policy, indent=2) + "\n" for role, policy in minio_policies().items()}
    files["buckets.txt"] = "".join(f"{bucket}\n" for bucket in BUCKETS)
    return files


def write_minio_assets(folder: Path) -> list[Path]:
    """Render the MinIO assets into `folder`, removing policy files of roles that no longer exist."""
    assets = minio_assets()
    (folder / "policies").mkdir(parents=True, exist_ok=True)
    for stale in (folder / "policies").glob("*.json"):
        if f"policies/{stale.name}" not in assets:
            stale.unlink()
    written = []
    for relative, text in assets.items():
        path = folder / relative
        path.write_text(text)
        written.append(path)
    return written


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def secret_value(name: str) -> str:
    """A fresh random value shaped for the variable `name`."""
    if name == "AIRFLOW_FERNET_KEY":
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    match = re.fullmatch(r"S3_(?P<role>[A-Z]+)_ACCESS_KEY", name)
    if match:
        role = match["role"].lower()
        return f"{role}-{secrets.token_hex(4)}"[:_ACCESS_KEY_MAX]
    if name.endswith("_USER"):
        return f"lakehouse-{secrets.token_hex(4)}"
    return _random(_SECRET_KEY_LEN)


def render_env(example: str) -> str:
    """The text of .env: `example` with every `NAME=change-me` line given a random value."""
    lines = []
    for line in example.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and value.strip() == PLACEHOLDER:
            line = f"{name}={secret_value(name.strip())}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _assignments(text: str) -> dict[str, str]:
    """The `NAME=value` lines of an env file, by name, in order."""
    return {line.partition("=")[0].strip(): line for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#")}


def write_env(example: Path, target: Path) -> list[str]:
    """Create `target` (mode 600) from `example`, or append to it the variables it lacks.

    Values already in `target` are never changed. Returns the names that were written.
    """
    rendered = render_env(example.read_text())
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        present = _assignments(target.read_text())
        missing = {name: line for name, line in _assignments(rendered).items() if name not in present}
        if missing:
            with open(target, "a") as handle:
                handle.write("\n# added by `make env` from .env.example\n" + "\n".join(missing.values()) + "\n")
        return list(missing)
    with os.fdopen(fd, "w") as handle:
        handle.write(rendered)
    return list(_assignments(rendered))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the make targets `compose-policies` and `env`."""
    parser = argparse.ArgumentParser(prog="python -m lakehouse.compose", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    policies = commands.add_parser("policies", help="render the MinIO policies and bucket list")
    policies.add_argument("folder", type=Path)
    env = commands.add_parser("env", help="create .env with random secrets (never changes a value)")
    env.add_argument("example", type=Path)
    env.add_argument("target", type=Path)
    args = parser.parse_args(argv)

    if args.command == "policies":
        for path in write_minio_assets(args.folder):
            print(f"wrote {path}")
    elif not args.target.exists():
        write_env(args.example, args.target)
        print(f"wrote {args.target} (mode 600) with fresh random secrets; keep it out of git")
    elif added := write_env(args.example, args.target):
        print(f"{args.target} exists: kept its values, added {', '.join(added)}")
    else:
        print(f"{args.target} exists and is complete: left unchanged (delete it to generate new secrets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
