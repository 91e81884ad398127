#!/bin/sh
# The bucket-init hook with MinIO: both buckets, and one user per role allowed its bucket only
# (the keys of the pipeline's and the MLflow server's Secrets). `mc` reaches MinIO as its root
# user through MC_HOST_store.
set -eu
waited=0
until mc ready store >/dev/null 2>&1; do
  waited=$((waited + 3))
  if [ "$waited" -gt 600 ]; then echo "mlrig: MinIO was not ready in 600 s" >&2; exit 1; fi
  sleep 3
done
mc mb --ignore-existing --region="$AWS_DEFAULT_REGION" "store/$DVC_BUCKET" "store/$MLFLOW_BUCKET"
policy() {  # the policy allowing one bucket and its objects
  printf '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::%s", "arn:aws:s3:::%s/*"]}]}' "$1" "$1"
}
user() {  # role, access key, secret key, bucket
  policy "$4" > "/tmp/$1.json"
  mc admin policy create store "mlrig-$1" "/tmp/$1.json"
  # mc takes the secret key as an argument: it shows in the process list while mc runs
  mc admin user add store "$2" "$3"
  # attaching a policy the user already has is an error: attach only what is missing (no grep
  # in the mc image: the shell's own matching)
  case "$(mc admin user info store "$2" --json)" in
    *"\"mlrig-$1\""*) ;;
    *) mc admin policy attach store "mlrig-$1" --user "$2";;
  esac
  echo "user of $1: bucket $4 only"
}
user pipeline "$PIPELINE_ACCESS_KEY" "$PIPELINE_SECRET_KEY" "$DVC_BUCKET"
user mlflow "$MLFLOW_ACCESS_KEY" "$MLFLOW_SECRET_KEY" "$MLFLOW_BUCKET"
