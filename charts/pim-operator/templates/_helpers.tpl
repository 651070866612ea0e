{{/* Chart name, truncated to a DNS label. */}}
{{- define "pim-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name of the release's objects. */}}
{{- define "pim-operator.fullname" -}}
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

{{- define "pim-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pim-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "pim-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pim-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: pim-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels for cluster-wide objects that are not the controller itself (no component). */}}
{{- define "pim-operator.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "pim-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: pim-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pim-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The operator's config file: the values' config, plus what the chart decides. */}}
{{- define "pim-operator.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $_ := set $config "metricsAddress" (printf "0.0.0.0:%d" (int .Values.metrics.port)) }}
{{- $_ := set $config "namespace" .Release.Namespace }}
{{- if .Values.webhook.enabled }}
{{- $fullname := include "pim-operator.fullname" . }}
{{- $webhook := dict "enabled" true "address" (printf "0.0.0.0:%d" (int .Values.webhook.port)) }}
{{- if eq .Values.webhook.certificates "cert-manager" }}
{{- $_ := set $webhook "certFile" "/var/run/pim/webhook-tls/tls.crt" }}
{{- $_ := set $webhook "keyFile" "/var/run/pim/webhook-tls/tls.key" }}
{{- else }}
{{- $_ := set $webhook "selfSigned" (dict "service" (printf "%s-webhook" $fullname) "secret" (printf "%s-webhook-tls" $fullname) "mutatingConfiguration" $fullname "validatingConfiguration" $fullname) }}
{{- end }}
{{- with .Values.webhook.mfaClaim }}
{{- $_ := set $webhook "mfaClaim" . }}
{{- end }}
{{- with .Values.webhook.authTimeClaim }}
{{- $_ := set $webhook "authTimeClaim" . }}
{{- end }}
{{- $_ := set $config "webhook" $webhook }}
{{- if .Values.attestation.existingSecret }}
{{- $_ := set $config "attestation" (dict "keyFile" "/var/run/pim/attestation/key") }}
{{- else }}
{{- $_ := set $config "attestation" (dict "secret" (printf "%s-attestation" $fullname)) }}
{{- end }}
{{- end }}
{{- toYaml $config }}
{{- end }}
