{{/* The chart name, truncated to a DNS label. */}}
{{- define "pykaito.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name, plus the chart name unless it already holds it. */}}
{{- define "pykaito.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "pykaito.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pykaito.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pykaito.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pykaito.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "pykaito.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pykaito.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pykaito.image" -}}
{{- printf "%s:%s" .repository (default .appVersion .tag) }}
{{- end }}

{{- define "pykaito.webhookServiceName" -}}
{{- printf "%s-webhook" (include "pykaito.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pykaito.webhookSecretName" -}}
{{- if .Values.webhook.existingSecret }}
{{- .Values.webhook.existingSecret }}
{{- else }}
{{- printf "%s-webhook-cert" (include "pykaito.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* kopf's log format for ours: json stays json, text is kopf's "full". */}}
{{- define "pykaito.kopfLogFormat" -}}
{{- if eq .Values.logFormat "text" }}full{{ else }}json{{ end }}
{{- end }}
