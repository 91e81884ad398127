#!/bin/sh
# How the chart's SeaweedFS container starts: its S3 identities (s3.json) written from the key
# pairs in its environment, each allowed what its role needs, then `weed` with the arguments
# given. The keys go into JSON as they are, so only the characters S3 keys use are accepted.
# The scoring server's (SERVING, with MLRIG_REQUESTS_BUCKET and _PREFIX) and the drift
# CronJob's (DRIFT, with MLRIG_DRIFT_DATA_BUCKET) keys are there only when those are enabled.
set -eu
roles="ADMIN PIPELINE MLFLOW"
if [ -n "${MLRIG_SERVING_ACCESS_KEY:-}" ]; then roles="$roles SERVING"; fi
if [ -n "${MLRIG_DRIFT_ACCESS_KEY:-}" ]; then roles="$roles DRIFT"; fi
for role in $roles; do
  for part in ACCESS_KEY SECRET_KEY; do
    eval "value=\${MLRIG_${role}_${part}:-}"
    case "$value" in
      ''|*[!A-Za-z0-9+/=._-]*)
        echo "mlrig: MLRIG_${role}_${part} is empty or holds a character outside A-Z a-z 0-9 + / = . _ -" >&2
        exit 1;;
    esac
  done
done
for bucket in "$MLRIG_DVC_BUCKET" "$MLRIG_MLFLOW_BUCKET" ${MLRIG_REQUESTS_BUCKET:+"$MLRIG_REQUESTS_BUCKET"} \
    ${MLRIG_DRIFT_DATA_BUCKET:+"$MLRIG_DRIFT_DATA_BUCKET"}; do
  case "$bucket" in
    ''|*[!a-z0-9.-]*) echo "mlrig: bucket name '$bucket' is not a valid S3 bucket name" >&2; exit 1;;
  esac
done
case "${MLRIG_REQUESTS_PREFIX:-}" in
  *[!A-Za-z0-9/._-]*) echo "mlrig: request log prefix '$MLRIG_REQUESTS_PREFIX' holds a character outside A-Z a-z 0-9 / . _ -" >&2; exit 1;;
esac
on_bucket() {  # the actions of one bucket, as a JSON list
  printf '["Read:%s", "Write:%s", "List:%s", "Tagging:%s"]' "$1" "$1" "$1" "$1"
}
identity() {  # name, access key, secret key, actions (a JSON list)
  printf '{"name": "%s", "credentials": [{"accessKey": "%s", "secretKey": "%s"}], "actions": %s}' \
    "$1" "$2" "$3" "$4"
}
umask 077
{
  printf '{"identities": [\n'
  identity admin "$MLRIG_ADMIN_ACCESS_KEY" "$MLRIG_ADMIN_SECRET_KEY" \
    '["Admin", "Read", "Write", "List", "Tagging"]'
  printf ',\n'
  identity pipeline "$MLRIG_PIPELINE_ACCESS_KEY" "$MLRIG_PIPELINE_SECRET_KEY" \
    "$(on_bucket "$MLRIG_DVC_BUCKET")"
  printf ',\n'
  identity mlflow-server "$MLRIG_MLFLOW_ACCESS_KEY" "$MLRIG_MLFLOW_SECRET_KEY" \
    "$(on_bucket "$MLRIG_MLFLOW_BUCKET")"
  case " $roles " in *" SERVING "*)
    # the model (read), and new objects under the request log's prefix only: not a read of it
    printf ',\n'
    identity serving "$MLRIG_SERVING_ACCESS_KEY" "$MLRIG_SERVING_SECRET_KEY" \
      "$(printf '["Read:%s", "List:%s", "Write:%s/%s/*"]' "$MLRIG_MLFLOW_BUCKET" \
        "$MLRIG_MLFLOW_BUCKET" "$MLRIG_REQUESTS_BUCKET" "${MLRIG_REQUESTS_PREFIX%/}")";;
  esac
  case " $roles " in *" DRIFT "*)
    # the training split (the DVC remote) and the new data's bucket, read only
    printf ',\n'
    identity drift "$MLRIG_DRIFT_ACCESS_KEY" "$MLRIG_DRIFT_SECRET_KEY" \
      "$(printf '["Read:%s", "List:%s", "Read:%s", "List:%s"]' "$MLRIG_DVC_BUCKET" \
        "$MLRIG_DVC_BUCKET" "$MLRIG_DRIFT_DATA_BUCKET" "$MLRIG_DRIFT_DATA_BUCKET")";;
  esac
  printf '\n]}\n'
} > "$MLRIG_S3_CONFIG"
# the keys stay in the file only (weed would take AWS_* as an administrator of its own)
unset MLRIG_ADMIN_ACCESS_KEY MLRIG_ADMIN_SECRET_KEY MLRIG_PIPELINE_ACCESS_KEY \
  MLRIG_PIPELINE_SECRET_KEY MLRIG_MLFLOW_ACCESS_KEY MLRIG_MLFLOW_SECRET_KEY \
  MLRIG_SERVING_ACCESS_KEY MLRIG_SERVING_SECRET_KEY MLRIG_DRIFT_ACCESS_KEY \
  MLRIG_DRIFT_SECRET_KEY AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
exec weed "$@"
