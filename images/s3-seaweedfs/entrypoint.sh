#!/bin/sh
# MinIO's root user, as the chart's MinIO slot sets it, is SeaweedFS's administrator identity:
# weed takes it from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY when no -s3.config is given.
# Then `weed` runs with the arguments given.
set -eu
AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-${MINIO_ROOT_USER:?MINIO_ROOT_USER must be set}}
AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD must be set}}
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
exec weed "$@"
