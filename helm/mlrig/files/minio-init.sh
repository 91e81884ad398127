#!/bin/sh
# The bucket-init hook with MinIO: the buckets, and one user per role allowed its bucket only
# (the keys of the pipeline's and the MLflow server's Secrets), and with their features on the
# scoring server's (read the model, write the request log's prefix) and drift's (read only). `mc` reaches MinIO as its root
# user through MC_HOST_store.
set -eu
waited=0
until mc ready store >/dev/null 2>&1; do
  waited=$((waited + 3))
  if [ "$waited" -gt 600 ]; then echo "mlrig: MinIO was not ready in 600 s" >&2; exit 1; fi
  sleep 3
done
mc mb --ignore-existing --region="$AWS_DEFAULT_REGION" "store/$DVC_BUCKET" "store/$MLFLOW_BUCKET"
if [ -n "${MLRIG_REQUESTS_BUCKET:-}" ]; then
  mc mb --ignore-existing --region="$AWS_DEFAULT_REGION" "store/$MLRIG_REQUESTS_BUCKET"
fi
policy() {  # the policy allowing one bucket and its objects
  printf '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::%s", "arn:aws:s3:::%s/*"]}]}' "$1" "$1"
}
statement() {  # actions (a JSON list), resources (a JSON list)
  printf '{"Effect": "Allow", "Action": %s, "Resource": %s}' "$1" "$2"
}
user() {  # role, access key, secret key, bucket (or, with a fifth argument, the policy itself)
  if [ -n "${5:-}" ]; then printf '%s' "$5" > "/tmp/$1.json"; else policy "$4" > "/tmp/$1.json"; fi
  mc admin policy create store "mlrig-$1" "/tmp/$1.json"
  # mc takes the secret key as an argument: it shows in the process list while mc runs
  mc admin user add store "$2" "$3"
  # attaching a policy the user already has is an error: attach only what is missing (no grep
  # in the mc image: the shell's own matching)
  case "$(mc admin user info store "$2" --json)" in
    *"\"mlrig-$1\""*) ;;
    *) mc admin policy attach store "mlrig-$1" --user "$2";;
  esac
  if [ -n "${5:-}" ]; then echo "user of $1: its policy (/tmp/$1.json)"; else echo "user of $1: bucket $4 only"; fi
}
user pipeline "$PIPELINE_ACCESS_KEY" "$PIPELINE_SECRET_KEY" "$DVC_BUCKET"
user mlflow "$MLFLOW_ACCESS_KEY" "$MLFLOW_SECRET_KEY" "$MLFLOW_BUCKET"
if [ -n "${SERVING_ACCESS_KEY:-}" ]; then
  # the scoring server: read the model's bucket, write new objects under the request log's prefix
  user serving "$SERVING_ACCESS_KEY" "$SERVING_SECRET_KEY" "$MLFLOW_BUCKET" \
    "{\"Version\": \"2012-10-17\", \"Statement\": [$(statement '["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"]' "[\"arn:aws:s3:::$MLFLOW_BUCKET\", \"arn:aws:s3:::$MLFLOW_BUCKET/*\"]"), $(statement '["s3:PutObject"]' "[\"arn:aws:s3:::$MLRIG_REQUESTS_BUCKET/$MLRIG_REQUESTS_PREFIX/*\"]")]}"
fi
if [ -n "${DRIFT_ACCESS_KEY:-}" ]; then
  # the drift CronJob: read the DVC remote and the new data's bucket
  user drift "$DRIFT_ACCESS_KEY" "$DRIFT_SECRET_KEY" "$DVC_BUCKET" \
    "{\"Version\": \"2012-10-17\", \"Statement\": [$(statement '["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"]' "[\"arn:aws:s3:::$DVC_BUCKET\", \"arn:aws:s3:::$DVC_BUCKET/*\", \"arn:aws:s3:::$MLRIG_DRIFT_DATA_BUCKET\", \"arn:aws:s3:::$MLRIG_DRIFT_DATA_BUCKET/*\"]")]}"
fi
