#!/bin/sh
# How the chart's SeaweedFS container starts: its S3 identities (s3.json) written from the three
# key pairs in its environment, each allowed what its role needs, then `weed` with the arguments
# given. The keys go into JSON as they are, so only the characters S3 keys use are accepted.
set -eu
for role in ADMIN PIPELINE MLFLOW; do
  for part in ACCESS_KEY SECRET_KEY; do
    eval "value=\${MLRIG_${role}_${part}:-}"
    case "$value" in
      ''|*[!A-Za-z0-9+/=._-]*)
        echo "mlrig: MLRIG_${role}_${part} is empty or holds a character outside A-Z a-z 0-9 + / = . _ -" >&2
        exit 1;;
    esac
  done
done
for bucket in "$MLRIG_DVC_BUCKET" "$MLRIG_MLFLOW_BUCKET"; do
  case "$bucket" in
    ''|*[!a-z0-9.-]*) echo "mlrig: bucket name '$bucket' is not a valid S3 bucket name" >&2; exit 1;;
  esac
done
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
  printf '\n]}\n'
} > "$MLRIG_S3_CONFIG"
# the keys stay in the file only (weed would take AWS_* as an administrator of its own)
unset MLRIG_ADMIN_ACCESS_KEY MLRIG_ADMIN_SECRET_KEY MLRIG_PIPELINE_ACCESS_KEY \
  MLRIG_PIPELINE_SECRET_KEY MLRIG_MLFLOW_ACCESS_KEY MLRIG_MLFLOW_SECRET_KEY \
  AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
exec weed "$@"
