{{/* The chart name, or nameOverride. */}}
{{- define "mlrig.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: <release>-mlrig, or fullnameOverride. */}}
{{- define "mlrig.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The name of one component's resources: mlrig.component (dict "root" $ "component" "mlflow"). */}}
{{- define "mlrig.componentName" -}}
{{- printf "%s-%s" (include "mlrig.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource of one component. */}}
{{- define "mlrig.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: mlrig
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "mlrig.selectorLabels" . }}
{{- end }}

{{/* Labels that select one component's pods. */}}
{{- define "mlrig.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlrig.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* An image reference from {repository, tag, digest}: the digest wins, the tag defaults to appVersion. */}}
{{- define "mlrig.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* A random credential, or the one already in the release's Secret (lookup keeps it across upgrades). */}}
{{- define "mlrig.credential" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret }}
{{- if and $existing (hasKey $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum (int .length) }}
{{- end }}
{{- end }}

{{/* The Secret holding the S3 keys `access-key` and `secret-key`. */}}
{{- define "mlrig.objectStore.secretName" -}}
{{- default (include "mlrig.componentName" (dict "root" . "component" "s3")) .Values.objectStore.existingSecret }}
{{- end }}

{{/* The S3 endpoint URL every client uses. */}}
{{- define "mlrig.objectStore.endpoint" -}}
{{- if .Values.objectStore.external.enabled }}
{{- .Values.objectStore.external.endpoint }}
{{- else }}
{{- printf "http://%s:%d" (include "mlrig.componentName" (dict "root" . "component" "minio")) (int .Values.objectStore.minio.port) }}
{{- end }}
{{- end }}

{{/* The Secret holding MLflow's database password under `password`. */}}
{{- define "mlrig.postgresql.secretName" -}}
{{- default (include "mlrig.componentName" (dict "root" . "component" "postgresql")) .Values.postgresql.auth.existingSecret }}
{{- end }}

{{/* The PostgreSQL host MLflow connects to. */}}
{{- define "mlrig.postgresql.host" -}}
{{- if .Values.postgresql.external.enabled }}
{{- .Values.postgresql.external.host }}
{{- else }}
{{- include "mlrig.componentName" (dict "root" . "component" "postgresql") }}
{{- end }}
{{- end }}

{{/* The PostgreSQL port MLflow connects to. */}}
{{- define "mlrig.postgresql.port" -}}
{{- if .Values.postgresql.external.enabled }}{{ .Values.postgresql.external.port }}{{ else }}{{ .Values.postgresql.port }}{{ end }}
{{- end }}

{{/* The Secret holding the MLflow admin password and the Flask secret key. */}}
{{- define "mlrig.mlflow.secretName" -}}
{{- default (include "mlrig.componentName" (dict "root" . "component" "mlflow")) .Values.mlflow.auth.existingSecret }}
{{- end }}

{{/* The MLflow tracking URI inside the cluster. */}}
{{- define "mlrig.mlflow.uri" -}}
{{- printf "http://%s:%d" (include "mlrig.componentName" (dict "root" . "component" "mlflow")) (int .Values.mlflow.service.port) }}
{{- end }}

{{/* The URL of one ClearML server part: agent.<part>Host, else the clearml dependency's Service. */}}
{{- define "mlrig.clearml.url" -}}
{{- $explicit := index .root.Values.agent (printf "%sHost" .part) }}
{{- if $explicit }}
{{- $explicit }}
{{- else }}
{{- $ports := dict "api" 8008 "web" 8080 "files" 8081 }}
{{- $services := dict "api" "apiserver" "web" "webserver" "files" "fileserver" }}
{{- printf "http://%s-clearml-%s:%d" .root.Release.Name (index $services .part) (index $ports .part) }}
{{- end }}
{{- end }}

{{/* Volumes every pod mounts: an emptyDir for /tmp under a read-only root filesystem. */}}
{{- define "mlrig.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end }}

{{/* Every error in the values at once (bitnami's validateValues pattern). */}}
{{- define "mlrig.validateValues" -}}
{{- $errors := list }}
{{- if and .Values.objectStore.external.enabled (not .Values.objectStore.external.endpoint) }}
{{- $errors = append $errors "objectStore.external.enabled needs objectStore.external.endpoint (the S3 endpoint URL)" }}
{{- end }}
{{- if and .Values.objectStore.external.enabled (not .Values.objectStore.existingSecret) }}
{{- $errors = append $errors "objectStore.external.enabled needs objectStore.existingSecret (a Secret with access-key and secret-key)" }}
{{- end }}
{{- if and .Values.postgresql.external.enabled (not .Values.postgresql.external.host) }}
{{- $errors = append $errors "postgresql.external.enabled needs postgresql.external.host" }}
{{- end }}
{{- if and .Values.postgresql.external.enabled (not .Values.postgresql.auth.existingSecret) }}
{{- $errors = append $errors "postgresql.external.enabled needs postgresql.auth.existingSecret (a Secret with password)" }}
{{- end }}
{{- if and .Values.mlflow.ingress.enabled (not .Values.mlflow.ingress.host) }}
{{- $errors = append $errors "mlflow.ingress.enabled needs mlflow.ingress.host" }}
{{- end }}
{{- if and .Values.agent.enabled (not .Values.agent.existingSecret) }}
{{- $errors = append $errors "agent.enabled needs agent.existingSecret (a Secret with the agent's ClearML access-key and secret-key)" }}
{{- end }}
{{- if and .Values.agent.enabled (not .Values.clearml.enabled) (not .Values.agent.apiHost) }}
{{- $errors = append $errors "agent.enabled without clearml.enabled needs agent.apiHost (the ClearML API server URL)" }}
{{- end }}
{{- if and .Values.clearml.enabled (not .Values.clearml.clearml.existingSecret) }}
{{- $errors = append $errors "clearml.enabled needs clearml.clearml.existingSecret: the clearml chart's own default keys are public" }}
{{- end }}
{{- $errors = concat $errors (include "mlrig.agent.valueErrors" . | fromYamlArray) }}
{{- if $errors }}
{{- fail (printf "\n\nmlrig: invalid values:\n  - %s\n" (join "\n  - " $errors)) }}
{{- end }}
{{- end }}
