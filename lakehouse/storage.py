"""Object storage: the access matrix of the roles, the S3 client, buckets and object work.

The `minio` SDK is the project's S3 client; it speaks to any S3-compatible server (SeaweedFS
locally, MinIO in docker-compose, AWS S3 on a cluster). Spark reaches the same buckets via S3A.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

from minio import Minio
from minio.error import S3Error

from lakehouse.settings import BUCKETS, Settings

READ, WRITE, DELETE, ADMIN = "read", "write", "delete", "admin"

#: What each role may do on each logical bucket; nothing else is granted. `write` is read, list and
#: put: a Delta writer adds data files and log entries and never removes one (a MERGE or a partition
#: replace only marks files removed in the log), so the job roles cannot delete a table's files or
#: its `_delta_log`. `delete` is write plus delete: only `maintain` (VACUUM, retention, erasure) holds
#: it on the lake's buckets; `control` holds the writer lease's object, which its holder deletes.
#: `reader` is the notebooks' and analysts' role: it reads the lake and writes nothing.
#: docker-compose's MinIO policies, the local SeaweedFS identities and their bucket policies are all
#: generated from this one table.
ROLE_GRANTS: Mapping[str, Mapping[str, str]] = {
    "ingest": {"landing": WRITE, "bronze": WRITE, "control": DELETE},
    "transform": {"bronze": READ, "silver": WRITE, "gold": WRITE, "quality": WRITE, "control": DELETE},
    "maintain": {"landing": DELETE, "bronze": DELETE, "silver": DELETE, "gold": DELETE, "quality": DELETE, "control": DELETE},
    "reader": {"bronze": READ, "silver": READ, "gold": READ, "quality": READ},
    "ml": {"gold": READ},
    "mlflow": {"mlflow": DELETE},
    "admin": {bucket: ADMIN for bucket in BUCKETS},
}

#: The roles JupyterLab's notebooks hold (`lakehouse.services`, docker-compose): both read-only.
NOTEBOOK_ROLES = ("reader", "ml")

#: The levels that may put objects (and so own a Delta table's writes).
WRITERS = (WRITE, DELETE, ADMIN)


def grant(role: str, bucket: str) -> str | None:
    """The access a role has on a logical bucket, or None."""
    return ROLE_GRANTS[role].get(bucket)


def seaweed_identities(settings: Settings) -> dict:
    """The SeaweedFS identities document (-s3.config): one identity per configured role.

    SeaweedFS's identity actions cannot tell a put from a delete (both are `Write`): the delete
    that `write` lacks is denied by each bucket's policy (`bucket_policy`).
    """
    actions_for = {
        READ: ("Read", "List"),
        WRITE: ("Read", "List", "Write", "Tagging"),
        DELETE: ("Read", "List", "Write", "Tagging"),
    }
    identities = []
    for role, grants in ROLE_GRANTS.items():
        creds = settings.credentials_for(role)
        if role == "admin":
            actions = ["Admin", "Read", "List", "Write", "Tagging"]
        else:
            actions = [f"{action}:{settings.bucket(bucket)}" for bucket, level in grants.items() for action in actions_for[level]]
        identities.append(
            {
                "name": role,
                "credentials": [{"accessKey": creds.access_key, "secretKey": creds.secret_key}],
                "actions": actions,
            }
        )
    return {"identities": identities}


#: The principal of a SeaweedFS identity in a bucket policy (its default account).
SEAWEED_PRINCIPAL = "arn:aws:iam::000000000000:user/{role}"


def bucket_policy(settings: Settings, logical: str) -> dict | None:
    """A bucket's policy on the local SeaweedFS: it denies delete to the roles that only `write` it (None: no such role)."""
    writers_only = sorted(role for role, grants in ROLE_GRANTS.items() if grants.get(logical) == WRITE)
    if not writers_only:
        return None
    bucket = settings.bucket(logical)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OnlyMaintenanceDeletes",
                "Effect": "Deny",
                "Principal": {"AWS": [SEAWEED_PRINCIPAL.format(role=role) for role in writers_only]},
                "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }


def client(settings: Settings, role: str) -> Minio:
    """An S3 client acting as `role`."""
    creds = settings.credentials_for(role)
    url = urlparse(settings.s3_endpoint)
    return Minio(
        url.netloc,
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        secure=url.scheme == "https",
        region=settings.s3_region,
    )


def ensure_buckets(settings: Settings) -> list[str]:
    """Create every bucket that is missing and set the local store's bucket policies (as admin); return the names created."""
    admin = client(settings, "admin")
    created = []
    for logical in BUCKETS:
        name = settings.bucket(logical)
        if not admin.bucket_exists(name):
            admin.make_bucket(name)
            created.append(name)
    for logical in BUCKETS:
        _set_bucket_policy(settings, admin, logical)
    return created


def _set_bucket_policy(settings: Settings, admin: Minio, logical: str) -> None:
    """Set a bucket's policy on our own SeaweedFS (MinIO's role policies grant no delete themselves: docker/minio)."""
    policy = bucket_policy(settings, logical) if settings.s3_is_local else None
    if policy is not None:
        admin.set_bucket_policy(settings.bucket(logical), json.dumps(policy))


@dataclass(frozen=True)
class ObjectInfo:
    """An object in a bucket, identified for ingestion by key, ETag and size."""

    bucket: str
    key: str
    etag: str
    size: int


def list_objects(s3: Minio, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
    """Every object under a prefix, recursively, in key order."""
    for obj in s3.list_objects(bucket, prefix=prefix, recursive=True):
        if not obj.is_dir:
            yield ObjectInfo(bucket, obj.object_name, (obj.etag or "").strip('"'), obj.size or 0)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


#: The error codes S3 servers answer for an object that is not there (AWS, MinIO, SeaweedFS).
NO_SUCH_OBJECT = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})


def put_if_changed(s3: Minio, bucket: str, key: str, data: bytes, content_type: str) -> bool:
    """Upload unless an object with the same content (single-part ETag = MD5) is already there."""
    digest = md5_hex(data)
    try:
        if (s3.stat_object(bucket, key).etag or "").strip('"') == digest:
            return False
    except S3Error as err:
        if err.code not in NO_SUCH_OBJECT:
            raise
    s3.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)
    return True


def remove_objects(s3: Minio, bucket: str, names: list[str]) -> int:
    """Delete the named objects (in batches); return how many; fail naming the first that could not go."""
    from minio.deleteobjects import DeleteObject

    errors = list(s3.remove_objects(bucket, [DeleteObject(n) for n in names]))
    if errors:
        raise RuntimeError(f"could not delete {len(errors)} of {len(names)} objects in s3://{bucket}: {errors[0]}")
    return len(names)


def remove_prefix(settings: Settings, role: str, logical_bucket: str, prefix: str) -> int:
    """Delete every object under a prefix; return how many went."""
    s3 = client(settings, role)
    bucket = settings.bucket(logical_bucket)
    return remove_objects(s3, bucket, [o.object_name for o in s3.list_objects(bucket, prefix=prefix, recursive=True)])


def empty_bucket(settings: Settings, logical_bucket: str) -> None:
    """Delete a bucket with everything in it and create it again, empty (as admin: tests and the benchmark)."""
    remove_prefix(settings, "admin", logical_bucket, "")
    # SeaweedFS keeps empty folders after their objects go; dropping the bucket clears them too
    admin = client(settings, "admin")
    admin.remove_bucket(settings.bucket(logical_bucket))
    admin.make_bucket(settings.bucket(logical_bucket))
    _set_bucket_policy(settings, admin, logical_bucket)


def s3a_url(settings: Settings, logical_bucket: str, path: str) -> str:
    """The Spark (S3A) URL of a path in a logical bucket."""
    return f"s3a://{settings.bucket(logical_bucket)}/{path.lstrip('/')}"


def arrow_filesystem(settings: Settings, role: str):
    """pyarrow's native S3 filesystem, acting as `role` (for reading Delta data files with pyarrow)."""
    from pyarrow import fs

    creds, endpoint = settings.credentials_for(role), urlparse(settings.s3_endpoint)
    return fs.S3FileSystem(
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        endpoint_override=endpoint.netloc,
        scheme=endpoint.scheme,
        region=settings.s3_region,
        allow_bucket_creation=False,
        allow_bucket_deletion=False,
    )


def delta_rs_storage_options(settings: Settings, role: str) -> dict[str, str]:
    """Storage options for the deltalake (delta-rs) reader, acting as `role`."""
    creds = settings.credentials_for(role)
    return {
        "AWS_ENDPOINT_URL": settings.s3_endpoint,
        "AWS_REGION": settings.s3_region,
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "AWS_ALLOW_HTTP": "true" if settings.s3_endpoint.startswith("http://") else "false",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
    }
