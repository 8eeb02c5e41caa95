{{/* The release's name for objects: "<release>-sdrt", or the release name when it already says sdrt. */}}
{{- define "sdrt.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sdrt.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sdrt.labels" -}}
{{ include "sdrt.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sdrt.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default (printf "%s-cuda" .Chart.AppVersion) }}
{{- end -}}

{{- define "sdrt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ .Values.serviceAccount.name | default (include "sdrt.fullname" .) }}
{{- else -}}
{{ .Values.serviceAccount.name | default "default" }}
{{- end -}}
{{- end -}}

{{- define "sdrt.cacheClaim" -}}
{{ .Values.cache.persistence.existingClaim | default (printf "%s-cache" (include "sdrt.fullname" .)) }}
{{- end -}}

{{/* What `sdrt serve -m` gets: the hub id (pulled into the cache first) or the path on the models volume. */}}
{{- define "sdrt.modelSpec" -}}
{{- if .Values.model.hubId -}}
{{ .Values.model.hubId }}
{{- else -}}
{{- $_ := required "model.path is a path on model.existingClaim: set model.existingClaim" .Values.model.existingClaim -}}
{{ required "model.hubId, or model.existingClaim with model.path, must be set" .Values.model.path | printf "/models/%s" }}
{{- end -}}
{{- end -}}

{{- define "sdrt.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
