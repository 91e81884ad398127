{{/* The name of one queue's glue Deployment and pod template: <fullname>-agent-<queue>. */}}
{{- define "mlrig.agent.queueName" -}}
{{- include "mlrig.componentName" (dict "root" .root "component" (printf "agent-%s" .queue)) }}
{{- end }}

{{/* A queue's step container resources: agent.stepPod.resources with the queue's pod.resources
over them; a GPU count is set as both request and limit (Kubernetes wants them equal). */}}
{{- define "mlrig.agent.stepResources" -}}
{{- $resources := deepCopy .root.Values.agent.stepPod.resources }}
{{- $own := dig "pod" "resources" dict (.queue | default dict) }}
{{- $resources = mustMergeOverwrite $resources (deepCopy $own) }}
{{- $gpu := coalesce (dig "limits" "nvidia.com/gpu" nil $resources) (dig "requests" "nvidia.com/gpu" nil $resources) }}
{{- if $gpu }}
{{- range $kind := list "requests" "limits" }}
{{- if not (get $resources $kind) }}{{ $_ := set $resources $kind dict }}{{ end }}
{{- $_ := set (get $resources $kind) "nvidia.com/gpu" $gpu }}
{{- end }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/* What each queue's pods provide, as JSON for MLRIG_CLEARML_QUEUE_RESOURCES: GPUs, and the
CPU and memory a step may use (the limits, else the requests). */}}
{{- define "mlrig.agent.queueResources" -}}
{{- $queues := dict }}
{{- range $queue, $settings := .Values.agent.queues }}
{{- $resources := include "mlrig.agent.stepResources" (dict "root" $ "queue" $settings) | fromYaml }}
{{- $provides := dict "gpu" (int (dig "limits" "nvidia.com/gpu" 0 $resources)) }}
{{- range $name := list "cpu" "memory" }}
{{- with coalesce (dig "limits" $name "" $resources) (dig "requests" $name "" $resources) }}
{{- $_ := set $provides $name (toString .) }}
{{- end }}
{{- end }}
{{- $_ := set $queues $queue $provides }}
{{- end }}
{{- toJson $queues }}
{{- end }}

{{/* The agent's value errors, a YAML list (mlrig.validateValues reports them with the rest). */}}
{{- define "mlrig.agent.valueErrors" -}}
{{- $errors := list }}
{{- if and .Values.agent.enabled (not .Values.agent.trustedImages.prefix) }}
{{- $errors = append $errors "agent.enabled needs agent.trustedImages.prefix (the registry path the step images are pushed to, e.g. registry.example.com/team/mlrig/steps/): the glue starts only images under it, by digest" }}
{{- end }}
{{- range $queue, $settings := .Values.agent.queues }}
{{- $own := dig "pod" "resources" dict ($settings | default dict) }}
{{- $request := dig "requests" "nvidia.com/gpu" nil $own }}
{{- $limit := dig "limits" "nvidia.com/gpu" nil $own }}
{{- if and $request $limit (ne (toString $request) (toString $limit)) }}
{{- $errors = append $errors (printf "agent.queues.%s.pod.resources asks for nvidia.com/gpu %v (requests) and %v (limits): Kubernetes wants them equal, give one" $queue $request $limit) }}
{{- end }}
{{- end }}
{{- toYaml $errors }}
{{- end }}
