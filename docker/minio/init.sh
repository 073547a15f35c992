#!/bin/sh
# One-shot set-up of MinIO, run by the `minio-init` service (the mc image) on every
# `docker compose up`. Every step is idempotent, so a second run changes nothing.
#
# - the buckets in buckets.txt, private (no anonymous access);
# - one policy per role from policies/<role>.json and one user per role, holding only that
#   policy. Both files are rendered from lakehouse.storage.ROLE_GRANTS
#   (`make compose-policies`), so MinIO grants exactly what the local SeaweedFS identities grant.
#
# The server is reached through MC_HOST_lake (root credentials from .env, set by compose) and
# role keys are piped to mc, so no secret appears on a command line. Role keys come from
# S3_<ROLE>_ACCESS_KEY and S3_<ROLE>_SECRET_KEY. Only shell built-ins and coreutils are used:
# the mc image (ubi-micro) has no grep or sed.
set -eu

here=$(dirname "$0")

while read -r bucket; do
  [ -n "$bucket" ] || continue
  mc mb --ignore-existing "lake/$bucket"
  mc anonymous set none "lake/$bucket"
done < "$here/buckets.txt"

for file in "$here"/policies/*.json; do
  role=$(basename "$file" .json)
  upper=$(printf '%s' "$role" | tr '[:lower:]' '[:upper:]')
  eval "access=\${S3_${upper}_ACCESS_KEY:-}"
  eval "secret=\${S3_${upper}_SECRET_KEY:-}"
  if [ -z "$access" ] || [ -z "$secret" ]; then
    echo "error: S3_${upper}_ACCESS_KEY and S3_${upper}_SECRET_KEY must be set (run make env)" >&2
    exit 1
  fi

  mc admin policy create lake "lakehouse-$role" "$file"
  # keys on stdin, not in the command line; `user add` updates the secret of an existing user
  printf '%s\n%s\n' "$access" "$secret" | mc admin user add lake >/dev/null
  # attach is a no-op when the policy is attached already
  mc admin policy attach lake "lakehouse-$role" --user "$access" >/dev/null
  # the mc image has no grep: match the policy in the JSON with the shell
  info=$(mc admin user info lake "$access" --json)
  case "$info" in
    *"\"lakehouse-$role\""*) ;;
    *) echo "error: the user of role $role does not hold policy lakehouse-$role" >&2; exit 1 ;;
  esac
  echo "role $role: user and policy lakehouse-$role in place"
done
