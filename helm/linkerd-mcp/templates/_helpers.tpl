{{- define "lm.name" -}}{{ .Release.Name }}{{- end -}}

{{- define "lm.labels" -}}
app.kubernetes.io/name: linkerd-mcp
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "lm.selector" -}}
app.kubernetes.io/name: linkerd-mcp
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lm.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}

{{/* The Redis/Valkey URL as an env entry: the bundled Valkey, or an existing Secret. */}}
{{- define "lm.redisEnv" -}}
{{- if .Values.valkey.enabled }}
- name: MESH_REDIS_URL
  value: redis://{{ include "lm.name" . }}-valkey:6379
{{- else }}
- name: MESH_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ required "externalRedis.urlSecret is required when valkey.enabled is false" .Values.externalRedis.urlSecret }}, key: url}
{{- end }}
- name: MESH_KEY_PREFIX
  value: {{ .Values.keyPrefix | quote }}
{{- end -}}

{{- define "lm.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "lm.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end -}}
