{{/* Names, labels and shared fragments of the opskit chart. */}}

{{- define "opskit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "opskit.fullname" -}}
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

{{- define "opskit.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "opskit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "opskit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "opskit.labels" -}}
helm.sh/chart: {{ include "opskit.chart" . }}
{{ include "opskit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "opskit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "opskit.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest, from an image block {repository, tag, digest}. */}}
{{- define "opskit.imageRef" -}}
{{- $image := index . 0 }}
{{- $defaultTag := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $defaultTag $image.tag) }}
{{- end }}
{{- end }}

{{- define "opskit.redisName" -}}
{{- printf "%s-redis" (include "opskit.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "opskit.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "opskit.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The Secret holding OPSKIT_REDIS_URL, and its key; empty when Redis is off. */}}
{{- define "opskit.redisSecretName" -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled both scale the Deployment: enable one (KEDA creates its own HPA)" }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicas) (int .Values.keda.maxReplicas)) }}
{{- fail (printf "keda.minReplicas (%v) must not exceed keda.maxReplicas (%v)" .Values.keda.minReplicas .Values.keda.maxReplicas) }}
{{- end }}
{{- if and (eq .Values.redis.mode "external") .Values.redis.external.existingSecret }}
{{- .Values.redis.external.existingSecret }}
{{- else if ne .Values.redis.mode "none" }}
{{- printf "%s-redis-url" (include "opskit.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "opskit.redisSecretKey" -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled both scale the Deployment: enable one (KEDA creates its own HPA)" }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicas) (int .Values.keda.maxReplicas)) }}
{{- fail (printf "keda.minReplicas (%v) must not exceed keda.maxReplicas (%v)" .Values.keda.minReplicas .Values.keda.maxReplicas) }}
{{- end }}
{{- if and (eq .Values.redis.mode "external") .Values.redis.external.existingSecret }}
{{- .Values.redis.external.existingSecretKey }}
{{- else }}
{{- "redis-url" }}
{{- end }}
{{- end }}

{{- define "opskit.terminationGracePeriodSeconds" -}}
{{- $floor := add .Values.preStopSleepSeconds .Values.serving.gracefulTimeout }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $floor 10 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) (int $floor) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed preStopSleepSeconds + serving.gracefulTimeout (%v): the kubelet would kill requests still draining" .Values.terminationGracePeriodSeconds $floor) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* True when the monitoring.coreos.com kind (ServiceMonitor, PrometheusRule) may be rendered. */}}
{{- define "opskit.hasMonitoringKind" -}}
{{- $root := index . 0 }}
{{- $kind := index . 1 }}
{{- $force := index . 2 }}
{{- if or $force ($root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" $kind)) }}true{{ end }}
{{- end }}

{{/* "true" when the KEDA ScaledObject is rendered: enabled, and the cluster serves its API (or forced). */}}
{{- define "opskit.keda" -}}
{{- if and .Values.keda.enabled (or .Values.keda.force (.Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject")) }}true{{ end }}
{{- end }}

{{/* Sanity rules values.schema.json cannot express (relations between values). */}}
{{- define "opskit.validate" -}}
{{- if and .Values.app.metricsPort (eq (int .Values.app.metricsPort) (int .Values.app.port)) }}
{{- fail "app.metricsPort must differ from app.port (0 serves metrics on the app port)" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%v) must not exceed autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) }}
{{- end }}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled both scale the Deployment: enable one (KEDA creates its own HPA)" }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicas) (int .Values.keda.maxReplicas)) }}
{{- fail (printf "keda.minReplicas (%v) must not exceed keda.maxReplicas (%v)" .Values.keda.minReplicas .Values.keda.maxReplicas) }}
{{- end }}
{{- if and (eq .Values.redis.mode "external") (not .Values.redis.external.url) (not .Values.redis.external.existingSecret) }}
{{- fail "redis.mode=external needs redis.external.url or redis.external.existingSecret" }}
{{- end }}
{{- if and .Values.serving.maxRequestsJitter (not .Values.serving.maxRequests) }}
{{- fail "serving.maxRequestsJitter needs serving.maxRequests > 0" }}
{{- end }}
{{- end }}
