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

{{/* An image reference from {repository, tag, digest}: the digest wins, the tag defaults to appVersion; global.imageRegistry replaces the registry. */}}
{{- define "mlrig.image" -}}
{{- $repository := .image.repository }}
{{- with .root.Values.global.imageRegistry }}
{{- $parts := splitList "/" $repository }}
{{- $first := first $parts }}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) }}
{{- $repository = rest $parts | join "/" }}
{{- end }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repository .image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* A credential: the one already in the release's Secret (lookup keeps it across upgrades), else a random one (validateValues allows that only with generateSecrets). */}}
{{- define "mlrig.credential" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret }}
{{- if and $existing (hasKey ($existing.data | default dict) .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum (int .length) }}
{{- end }}
{{- end }}

{{/* The Secret of the pipeline's S3 keys `access-key` and `secret-key` (the DVC bucket only): what the step pods and the CronJob use. */}}
{{- define "mlrig.objectStore.secretName" -}}
{{- default (include "mlrig.componentName" (dict "root" . "component" "s3-pipeline")) .Values.objectStore.identities.pipeline.existingSecret }}
{{- end }}

{{/* The S3 endpoint URL every client uses. */}}
{{- define "mlrig.objectStore.endpoint" -}}
{{- if eq .Values.objectStore.provider "external" }}
{{- .Values.objectStore.external.endpoint }}
{{- else }}
{{- printf "http://%s:%d" (include "mlrig.componentName" (dict "root" . "component" "s3")) (int (include "mlrig.objectStore.port" .)) }}
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

{{/* The URL of one ClearML server part: agent.<part>Host, else the Service of the clearml release beside this one. */}}
{{- define "mlrig.clearml.url" -}}
{{- $explicit := index .root.Values.agent (printf "%sHost" .part) }}
{{- if $explicit }}
{{- $explicit }}
{{- else }}
{{- $ports := dict "api" 8008 "web" 8080 "files" 8081 }}
{{- $services := dict "api" "apiserver" "web" "webserver" "files" "fileserver" }}
{{- printf "http://%s-%s:%d" (include "mlrig.clearml.fullname" .root) (index $services .part) (index $ports .part) }}
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
{{- $store := .Values.objectStore }}
{{- if and (eq $store.provider "external") (not $store.external.endpoint) }}
{{- $errors = append $errors "objectStore.provider external needs objectStore.external.endpoint (the S3 endpoint URL)" }}
{{- end }}
{{- if eq $store.provider "external" }}
{{- range $role := list "pipeline" "mlflow" }}
{{- if not (index $store.identities $role).existingSecret }}
{{- $errors = append $errors (printf "objectStore.provider external needs objectStore.identities.%s.existingSecret (a Secret with access-key and secret-key your S3 provider issued for the %s bucket only)" $role (index $store.buckets (ternary "dvc" "mlflow" (eq $role "pipeline")))) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (eq $store.provider "external") (include "mlrig.serving.logsRequests" .) (not $store.identities.serving.existingSecret) }}
{{- $errors = append $errors (printf "serving.logRequests with objectStore.provider external needs objectStore.identities.serving.existingSecret (a Secret with access-key and secret-key that read the %s bucket and write under s3://%s/%s/ only)" $store.buckets.mlflow .Values.serving.logRequests.bucket .Values.serving.logRequests.prefix) }}
{{- end }}
{{- if and (eq $store.provider "external") .Values.drift.schedule.enabled (not $store.identities.drift.existingSecret) }}
{{- $errors = append $errors (printf "drift.schedule.enabled with objectStore.provider external needs objectStore.identities.drift.existingSecret (a Secret with access-key and secret-key that only read the %s bucket and the new data's)" $store.buckets.dvc) }}
{{- end }}
{{- if and .Values.postgresql.external.enabled (not .Values.postgresql.external.host) }}
{{- $errors = append $errors "postgresql.external.enabled needs postgresql.external.host" }}
{{- end }}
{{- if and .Values.postgresql.external.enabled (not .Values.postgresql.auth.existingSecret) }}
{{- $errors = append $errors "postgresql.external.enabled needs postgresql.auth.existingSecret (a Secret with password)" }}
{{- end }}
{{- if and .Values.mlflow.ingress.enabled (not .Values.mlflow.ingress.hosts) }}
{{- $errors = append $errors "mlflow.ingress.enabled needs mlflow.ingress.hosts (at least one host)" }}
{{- end }}
{{- if eq .Values.mlflow.pipelineUser.username .Values.mlflow.auth.adminUsername }}
{{- $errors = append $errors "mlflow.pipelineUser.username must differ from mlflow.auth.adminUsername: the pipeline's user is not an admin" }}
{{- end }}
{{- if and .Values.mlflow.metrics.serviceMonitor.enabled (not .Values.mlflow.metrics.enabled) }}
{{- $errors = append $errors "mlflow.metrics.serviceMonitor.enabled needs mlflow.metrics.enabled" }}
{{- end }}
{{- if and .Values.agent.enabled (not .Values.agent.existingSecret) }}
{{- $errors = append $errors "agent.enabled needs agent.existingSecret (a Secret with the agent's ClearML access-key and secret-key)" }}
{{- end }}
{{- if and .Values.agent.enabled (not .Values.clearmlServer.enabled) (not .Values.agent.apiHost) }}
{{- $errors = append $errors "agent.enabled without clearmlServer.enabled needs agent.apiHost (the ClearML API server URL)" }}
{{- end }}
{{- if and .Values.agent.enabled .Values.networkPolicy.enabled (not .Values.networkPolicy.apiServer.cidrs) }}
{{- $errors = append $errors "agent.enabled with networkPolicy.enabled needs networkPolicy.apiServer.cidrs, the Kubernetes API server's addresses the glue's kubectl calls (kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes)" }}
{{- end }}
{{- range include "mlrig.images" . | fromJsonArray }}
{{- if not .digest }}
{{- $errors = append $errors (printf "%s.digest is empty: the chart runs every image by digest (the sha256 digest its registry gives %s)" .value .repository) }}
{{- end }}
{{- end }}
{{- if not .Values.generateSecrets }}
{{- $absent := list }}
{{- range include "mlrig.generatedSecrets" . | fromJsonArray }}
{{- $existing := lookup "v1" "Secret" $.Release.Namespace .name }}
{{- $missing := list }}
{{- range $key, $_ := .keys }}
{{- if not (and $existing (hasKey ($existing.data | default dict) $key)) }}
{{- $missing = append $missing $key }}
{{- end }}
{{- end }}
{{- if $missing }}
{{- $absent = append $absent (printf "%s (%s): then set %s" .name (keys .keys | sortAlpha | join ", ") .value) }}
{{- end }}
{{- end }}
{{- if $absent }}
{{- $errors = append $errors (printf "these Secrets are not in the cluster and generateSecrets is false (rendered without a cluster, as helm template does, they would get new credentials at every render). Create each one with its keys (kubectl create secret generic NAME --from-literal=KEY=...), or set generateSecrets=true for a first helm install:\n      %s" (join "\n      " $absent)) }}
{{- end }}
{{- end }}
{{- $errors = concat $errors (include "mlrig.agent.valueErrors" . | fromYamlArray) }}
{{- if $errors }}
{{- fail (printf "\n\nmlrig: invalid values:\n  - %s\n" (join "\n  - " $errors)) }}
{{- end }}
{{- end }}

{{/* The port of the in-chart S3 store's Service: SeaweedFS's S3 gateway or MinIO. */}}
{{- define "mlrig.objectStore.port" -}}
{{- if eq .Values.objectStore.provider "minio" }}{{ .Values.objectStore.minio.port }}{{ else }}{{ .Values.objectStore.seaweedfs.ports.s3 }}{{ end }}
{{- end }}

{{/* The component label of the in-chart S3 store's pods (empty with the external provider). */}}
{{- define "mlrig.objectStore.component" -}}
{{- if ne .Values.objectStore.provider "external" }}{{ .Values.objectStore.provider }}{{ end }}
{{- end }}

{{/* The Secret of the store's administrator keys (root identity): the store and the bucket-init hook only. Empty with the external provider and no objectStore.existingSecret. */}}
{{- define "mlrig.objectStore.adminSecretName" -}}
{{- if .Values.objectStore.existingSecret }}
{{- .Values.objectStore.existingSecret }}
{{- else if ne .Values.objectStore.provider "external" }}
{{- include "mlrig.componentName" (dict "root" . "component" "s3") }}
{{- end }}
{{- end }}

{{/* The Secret of the MLflow server's S3 keys (the MLflow bucket only). */}}
{{- define "mlrig.objectStore.mlflowSecretName" -}}
{{- default (include "mlrig.componentName" (dict "root" . "component" "s3-mlflow")) .Values.objectStore.identities.mlflow.existingSecret }}
{{- end }}

{{/* The Secret of the scoring server's S3 keys (read the MLflow bucket, write the request log's prefix). */}}
{{- define "mlrig.objectStore.servingSecretName" -}}
{{- default (include "mlrig.componentName" (dict "root" . "component" "s3-serving")) .Values.objectStore.identities.serving.existingSecret }}
{{- end }}

{{/* The Secret of the drift CronJob's S3 keys (read the DVC and request-log buckets). */}}
{{- define "mlrig.objectStore.driftSecretName" -}}
{{- default (include "mlrig.componentName" (dict "root" . "component" "s3-drift")) .Values.objectStore.identities.drift.existingSecret }}
{{- end }}

{{/* "true" when the scoring server Deployment logs its requests (serving.logRequests), else empty. */}}
{{- define "mlrig.serving.logsRequests" -}}
{{- if and .Values.serving.enabled .Values.serving.logRequests.enabled (not .Values.serving.kserve.enabled) }}true{{ end }}
{{- end }}

{{/* The request log's location: s3://<bucket>/<prefix>. */}}
{{- define "mlrig.serving.requestLog" -}}
{{- printf "s3://%s/%s" .Values.serving.logRequests.bucket (trimAll "/" .Values.serving.logRequests.prefix) }}
{{- end }}

{{/* The buckets the bucket-init hook creates: the DVC and MLflow buckets, and the request log's when the scoring server logs to the chart's store. */}}
{{- define "mlrig.objectStore.bucketList" -}}
{{- $buckets := list .Values.objectStore.buckets.dvc .Values.objectStore.buckets.mlflow }}
{{- if include "mlrig.serving.logsRequests" . }}
{{- $buckets = append $buckets .Values.serving.logRequests.bucket }}
{{- end }}
{{- uniq $buckets | join "," }}
{{- end }}

{{/* The bucket an s3:// URL names. */}}
{{- define "mlrig.s3Bucket" -}}
{{- regexReplaceAll "^s3://([^/]+).*$" . "${1}" }}
{{- end }}

{{/* What the store's start script and the bucket-init hook need for the scoped identities (env entries): the request log's bucket and prefix, the drift data's bucket. */}}
{{- define "mlrig.objectStore.scopedIdentities" -}}
{{- if include "mlrig.serving.logsRequests" . }}
- name: MLRIG_REQUESTS_BUCKET
  value: {{ .Values.serving.logRequests.bucket | quote }}
- name: MLRIG_REQUESTS_PREFIX
  value: {{ trimAll "/" .Values.serving.logRequests.prefix | quote }}
{{- end }}
{{- if and .Values.drift.schedule.enabled (include "mlrig.drift.data" .) }}
- name: MLRIG_DRIFT_DATA_BUCKET
  value: {{ include "mlrig.s3Bucket" (include "mlrig.drift.data" .) | quote }}
{{- end }}
{{- end }}

{{/* The Secret of the pipeline's MLflow user's `password`. */}}
{{- define "mlrig.mlflow.pipelineSecretName" -}}
{{- default (include "mlrig.componentName" (dict "root" . "component" "mlflow-pipeline")) .Values.mlflow.pipelineUser.existingSecret }}
{{- end }}

{{/* The fullname of the clearml chart's release beside this one (its Services are <fullname>-apiserver, ...; its pods are labelled app.kubernetes.io/name: <fullname>). */}}
{{- define "mlrig.clearml.fullname" -}}
{{- $release := default (printf "%s-clearml" .Release.Name) .Values.clearmlServer.release }}
{{- if contains "clearml" $release }}{{ $release | trunc 63 | trimSuffix "-" }}{{ else }}{{ printf "%s-clearml" $release | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}

{{/* The Secrets the chart makes when no existingSecret names one (JSON list of {name, component, keys: {key: length}, value}). */}}
{{- define "mlrig.generatedSecrets" -}}
{{- $store := .Values.objectStore }}
{{- $secrets := list }}
{{- if not .Values.mlflow.auth.existingSecret }}
{{- $secrets = append $secrets (dict "component" "mlflow" "keys" (dict "admin-password" 32 "flask-secret-key" 48) "value" "mlflow.auth.existingSecret") }}
{{- end }}
{{- if not .Values.mlflow.pipelineUser.existingSecret }}
{{- $secrets = append $secrets (dict "component" "mlflow-pipeline" "keys" (dict "password" 32) "value" "mlflow.pipelineUser.existingSecret") }}
{{- end }}
{{- if not .Values.postgresql.auth.existingSecret }}
{{- $secrets = append $secrets (dict "component" "postgresql" "keys" (dict "password" 32) "value" "postgresql.auth.existingSecret") }}
{{- end }}
{{- if ne $store.provider "external" }}
{{- if not $store.existingSecret }}
{{- $secrets = append $secrets (dict "component" "s3" "keys" (dict "access-key" 20 "secret-key" 40) "value" "objectStore.existingSecret") }}
{{- end }}
{{- if not $store.identities.pipeline.existingSecret }}
{{- $secrets = append $secrets (dict "component" "s3-pipeline" "keys" (dict "access-key" 20 "secret-key" 40) "value" "objectStore.identities.pipeline.existingSecret") }}
{{- end }}
{{- if not $store.identities.mlflow.existingSecret }}
{{- $secrets = append $secrets (dict "component" "s3-mlflow" "keys" (dict "access-key" 20 "secret-key" 40) "value" "objectStore.identities.mlflow.existingSecret") }}
{{- end }}
{{- if and (include "mlrig.serving.logsRequests" .) (not $store.identities.serving.existingSecret) }}
{{- $secrets = append $secrets (dict "component" "s3-serving" "keys" (dict "access-key" 20 "secret-key" 40) "value" "objectStore.identities.serving.existingSecret") }}
{{- end }}
{{- if and .Values.drift.schedule.enabled (not $store.identities.drift.existingSecret) }}
{{- $secrets = append $secrets (dict "component" "s3-drift" "keys" (dict "access-key" 20 "secret-key" 40) "value" "objectStore.identities.drift.existingSecret") }}
{{- end }}
{{- end }}
{{- if and .Values.clearmlServer.enabled .Values.clearmlServer.createSecret }}
{{- $secrets = append $secrets (dict "component" "clearml-server" "keys" (dict "apiserver_key" 20 "apiserver_secret" 50 "secure_auth_token_secret" 50 "test_user_key" 20 "test_user_secret" 50) "value" "clearmlServer.createSecret=false") }}
{{- end }}
{{- $named := list }}
{{- range $secrets }}
{{- $named = append $named (set . "name" (include "mlrig.componentName" (dict "root" $ "component" .component))) }}
{{- end }}
{{- toJson $named }}
{{- end }}

{{/* One generated Secret (from mlrig.generatedSecrets, by component), kept when the release is uninstalled. */}}
{{- define "mlrig.generatedSecret" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- range include "mlrig.generatedSecrets" $root | fromJsonArray }}
{{- if eq .component $component }}
{{- $name := .name }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace | quote }}
  labels:
    {{- include "mlrig.labels" (dict "root" $root "component" $component) | nindent 4 }}
  annotations:
    # `helm uninstall` leaves it: what it opens (PostgreSQL's volume, the S3 data, MLflow's
    # users) outlives the release, and a reinstall reads it back with `lookup`
    helm.sh/resource-policy: keep
type: Opaque
stringData:
  {{- range $key, $length := .keys }}
  {{ $key }}: {{ include "mlrig.credential" (dict "root" $root "secret" $name "key" $key "length" $length) | quote }}
  {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Every image of the chart's own servers, hooks and glue, for validateValues (JSON list of {value, repository, digest}). */}}
{{- define "mlrig.images" -}}
{{- $images := list (dict "value" "mlflow.image" "image" .Values.mlflow.image) }}
{{- if not .Values.postgresql.external.enabled }}
{{- $images = append $images (dict "value" "postgresql.image" "image" .Values.postgresql.image) }}
{{- end }}
{{- if eq .Values.objectStore.provider "seaweedfs" }}
{{- $images = append $images (dict "value" "objectStore.seaweedfs.image" "image" .Values.objectStore.seaweedfs.image) }}
{{- else if eq .Values.objectStore.provider "minio" }}
{{- $images = append $images (dict "value" "objectStore.minio.image" "image" .Values.objectStore.minio.image) }}
{{- $images = append $images (dict "value" "objectStore.minio.clientImage" "image" .Values.objectStore.minio.clientImage) }}
{{- end }}
{{- if .Values.agent.enabled }}
{{- $images = append $images (dict "value" "agent.image" "image" .Values.agent.image) }}
{{- end }}
{{- $listed := list }}
{{- range $images }}
{{- $listed = append $listed (dict "value" .value "repository" .image.repository "digest" .image.digest) }}
{{- end }}
{{- toJson $listed }}
{{- end }}

{{/* The ServiceAccount of the chart's servers and hooks. */}}
{{- define "mlrig.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}{{ default (include "mlrig.fullname" .) .Values.serviceAccount.name }}{{ else }}{{ default "default" .Values.serviceAccount.name }}{{ end }}
{{- end }}

{{/* Pod spec fields every pod of a server or hook shares: its ServiceAccount (no token), the pull Secrets, the host network switch. */}}
{{- define "mlrig.podIdentity" -}}
serviceAccountName: {{ include "mlrig.serviceAccountName" . }}
automountServiceAccountToken: false
hostNetwork: {{ .Values.hostNetwork }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A component's placement: mlrig.scheduling (dict "root" $ "component" "mlflow" "values" $.Values.mlflow). */}}
{{- define "mlrig.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- range . }}
  - {{- toYaml (omit . "labelSelector") | nindent 4 }}
    labelSelector:
      {{- toYaml (default (dict "matchLabels" (fromYaml (include "mlrig.selectorLabels" (dict "root" $.root "component" $.component)))) .labelSelector) | nindent 6 }}
  {{- end }}
{{- end }}
{{- end }}

{{/* The environment of a pipeline's pod (a step pod, the CronJob): the pipeline's MLflow user and S3 keys, never an admin's or the store's root keys, and no ClearML keys. */}}
{{- define "mlrig.pipelineEnv" -}}
- name: MLFLOW_TRACKING_URI
  value: {{ include "mlrig.mlflow.uri" . | quote }}
- name: MLFLOW_TRACKING_USERNAME
  value: {{ .Values.mlflow.pipelineUser.username | quote }}
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "mlrig.mlflow.pipelineSecretName" . }}
      key: password
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "mlrig.objectStore.secretName" . }}
      key: access-key
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "mlrig.objectStore.secretName" . }}
      key: secret-key
- name: AWS_DEFAULT_REGION
  value: {{ .Values.objectStore.region | quote }}
- name: AWS_ENDPOINT_URL
  value: {{ include "mlrig.objectStore.endpoint" . | quote }}
{{- end }}

{{/* The S3 client settings of a container from one Secret's keys: mlrig.s3Env (dict "secret" NAME "endpoint" URL "region" R). */}}
{{- define "mlrig.s3Env" -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: access-key
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: secret-key
- name: AWS_DEFAULT_REGION
  value: {{ .region | quote }}
{{- end }}

{{/* Labels that select the pods of this release (every component; the k8s/ CronJob's pods carry them too). */}}
{{- define "mlrig.releaseSelector" -}}
app.kubernetes.io/name: {{ include "mlrig.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* A pod selector: the pods of this release with one of the given components. */}}
{{- define "mlrig.componentsSelector" -}}
matchLabels:
  {{- include "mlrig.releaseSelector" .root | nindent 2 }}
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values: {{ toJson .components }}
{{- end }}

{{/* A NetworkPolicy peer: the pods of this release with one of the given components. */}}
{{- define "mlrig.peers" -}}
podSelector:
  {{- include "mlrig.componentsSelector" . | nindent 2 }}
{{- end }}

{{/* NetworkPolicy egress rules to networkPolicy.extraEgress's CIDRs. */}}
{{- define "mlrig.extraEgress" -}}
{{- range .Values.networkPolicy.extraEgress }}
- to:
    - ipBlock:
        cidr: {{ .cidr }}
        {{- with .except }}
        except: {{ toJson . }}
        {{- end }}
  ports:
    {{- range .ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end }}
{{- end }}

{{/* The MLflow the scoring server reads the model from: serving.trackingUri, else the chart's. */}}
{{- define "mlrig.serving.trackingUri" -}}
{{- default (include "mlrig.mlflow.uri" .) .Values.serving.trackingUri }}
{{- end }}

{{/* The version the serving pods pin: serving.version, else the one a rollout set on the live Deployment (lookup), else none (the alias's at start). */}}
{{- define "mlrig.serving.version" -}}
{{- $live := lookup "apps/v1" "Deployment" .Release.Namespace (include "mlrig.componentName" (dict "root" . "component" "serving")) }}
{{- $annotations := dig "spec" "template" "metadata" "annotations" (dict) $live }}
{{- default (get $annotations "mlrig.io/model-version") .Values.serving.version }}
{{- end }}

{{/* Fails with every error in the serving values at once. */}}
{{- define "mlrig.serving.validateValues" -}}
{{- $serving := .Values.serving }}
{{- $errors := list }}
{{- if not $serving.model }}
{{- $errors = append $errors "serving.enabled needs serving.model (the registered model whose champion is served)" }}
{{- end }}
{{- if and (not $serving.kserve.enabled) (not $serving.image.digest) }}
{{- $errors = append $errors (printf "serving.image.digest is empty: the chart runs every image by digest (the sha256 digest its registry gives %s)" $serving.image.repository) }}
{{- end }}
{{- if not $serving.existingSecret }}
{{- $errors = append $errors "serving.enabled needs serving.existingSecret (a Secret with the serving identity's mlflow-username and mlflow-password, read-only)" }}
{{- end }}
{{- if and $serving.ingress.enabled (not $serving.ingress.host) }}
{{- $errors = append $errors "serving.ingress.enabled needs serving.ingress.host" }}
{{- end }}
{{- if and $serving.kserve.enabled (not $serving.kserve.storageUri) }}
{{- $errors = append $errors "serving.kserve.enabled needs serving.kserve.storageUri (the model version's artifact location)" }}
{{- end }}
{{- if and $serving.kserve.enabled $serving.logRequests.enabled }}
{{- $errors = append $errors "serving.logRequests needs the chart's scoring server: KServe's (serving.kserve.enabled) does not run mlrig's request log" }}
{{- end }}
{{- if and $serving.autoscaling.enabled (lt (int $serving.autoscaling.maxReplicas) (int $serving.autoscaling.minReplicas)) }}
{{- $errors = append $errors "serving.autoscaling.maxReplicas is below serving.autoscaling.minReplicas" }}
{{- end }}
{{- if $errors }}
{{- fail (printf "\n\nmlrig: invalid serving values:\n  - %s\n" (join "\n  - " $errors)) }}
{{- end }}
{{- end }}

{{/* The registered model the drift CronJob checks: drift.schedule.model, else serving.model. */}}
{{- define "mlrig.drift.model" -}}
{{- default .Values.serving.model .Values.drift.schedule.model }}
{{- end }}

{{/* The drift CronJob's new data: drift.schedule.data, else the request log of its model. */}}
{{- define "mlrig.drift.data" -}}
{{- if .Values.drift.schedule.data }}
{{- .Values.drift.schedule.data }}
{{- else if .Values.serving.logRequests.enabled }}
{{- printf "%s/%s/" (include "mlrig.serving.requestLog" .) (include "mlrig.drift.model" .) }}
{{- end }}
{{- end }}

{{/* The drift CronJob's image: drift.schedule.image, else the scoring server's (it holds the drift group). */}}
{{- define "mlrig.drift.image" -}}
{{- if .Values.drift.schedule.image.repository }}{{ toJson .Values.drift.schedule.image }}{{ else }}{{ toJson .Values.serving.image }}{{ end }}
{{- end }}

{{/* The Secret of the drift CronJob's read-only MLflow user. */}}
{{- define "mlrig.drift.mlflowSecretName" -}}
{{- default .Values.serving.existingSecret .Values.drift.schedule.existingSecret }}
{{- end }}

{{/* The read-only MLflow identities the mlflow-users hook makes, each from its Secret (JSON list of {role, secret, registeredModels}): the scoring server's (KServe's reads S3 only) and the drift CronJob's, one identity when both name the same Secret. None when they read another MLflow (serving.trackingUri). */}}
{{- define "mlrig.mlflow.readers" -}}
{{- $readers := list }}
{{- $serving := .Values.serving }}
{{- $drift := .Values.drift.schedule.enabled }}
{{- $driftSecret := include "mlrig.drift.mlflowSecretName" . }}
{{- $servingReads := and $serving.enabled (not $serving.kserve.enabled) }}
{{- $shared := and $servingReads $drift (eq $driftSecret $serving.existingSecret) }}
{{- if not $serving.trackingUri }}
{{- if $servingReads }}
{{- $models := list $serving.model }}
{{- if $shared }}{{ $models = append $models (include "mlrig.drift.model" .) | uniq }}{{ end }}
{{- $readers = append $readers (dict "role" "serving" "secret" $serving.existingSecret "registeredModels" $models) }}
{{- end }}
{{- if and $drift (not $shared) }}
{{- $readers = append $readers (dict "role" "drift" "secret" $driftSecret "registeredModels" (list (include "mlrig.drift.model" .))) }}
{{- end }}
{{- end }}
{{- toJson $readers }}
{{- end }}

{{/* Fails with every error in the drift CronJob's values at once. */}}
{{- define "mlrig.drift.validateValues" -}}
{{- $schedule := .Values.drift.schedule }}
{{- $errors := list }}
{{- if not (include "mlrig.drift.model" .) }}
{{- $errors = append $errors "drift.schedule.enabled needs drift.schedule.model or serving.model (the registered model whose champion is checked)" }}
{{- end }}
{{- if not (include "mlrig.drift.data" .) }}
{{- $errors = append $errors "drift.schedule.enabled needs drift.schedule.data (an s3:// prefix or file) or serving.logRequests.enabled (its request log)" }}
{{- end }}
{{- if not $schedule.source.gitUrl }}
{{- $errors = append $errors "drift.schedule.enabled needs drift.schedule.source.gitUrl (the project to check out: params.yaml and dvc.lock)" }}
{{- end }}
{{- if not (include "mlrig.drift.mlflowSecretName" .) }}
{{- $errors = append $errors "drift.schedule.enabled needs drift.schedule.existingSecret or serving.existingSecret (a Secret with mlflow-username and mlflow-password of a user that may READ the registered model)" }}
{{- end }}
{{- $image := include "mlrig.drift.image" . | fromJson }}
{{- if not $image.digest }}
{{- $errors = append $errors (printf "the drift image (drift.schedule.image, else serving.image) needs its digest: the chart runs every image by digest (the sha256 digest its registry gives %s)" $image.repository) }}
{{- end }}
{{- if not $schedule.gitImage.digest }}
{{- $errors = append $errors "drift.schedule.gitImage.digest is empty: the chart runs every image by digest" }}
{{- end }}
{{- if $errors }}
{{- fail (printf "\n\nmlrig: invalid drift values:\n  - %s\n" (join "\n  - " $errors)) }}
{{- end }}
{{- end }}
