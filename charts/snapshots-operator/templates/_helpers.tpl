{{/* The chart's name. */}}
{{- define "snapshots-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name prefix of every resource. */}}
{{- define "snapshots-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "snapshots-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "snapshots-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: snapshots
{{- end -}}

{{/* Labels that select the operator's pod. */}}
{{- define "snapshots-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "snapshots-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The operator's service account. */}}
{{- define "snapshots-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "snapshots-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces watched in namespaced mode (default: the release's). */}}
{{- define "snapshots-operator.namespaces" -}}
{{- if .Values.watch.namespaces -}}
{{- join "," (uniq .Values.watch.namespaces) -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* The operator's image. */}}
{{- define "snapshots-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The sync Jobs' image. */}}
{{- define "snapshots-operator.jobImage" -}}
{{- $repository := default .Values.image.repository .Values.jobImage.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.jobImage.tag -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/* The RBAC rules the operator needs on its resources (in each watched namespace). */}}
{{- define "snapshots-operator.rules" -}}
# kopf watches SnapshotSources and keeps its bookkeeping in their annotations; the
# operator reads them and writes their status.
- apiGroups: [snapshots.dev]
  resources: [snapshotsources]
  verbs: [get, list, watch, patch]
- apiGroups: [snapshots.dev]
  resources: [snapshotsources/status]
  verbs: [get, patch]
# Owner references with blockOwnerDeletion need this where the
# OwnerReferencesPermissionEnforcement admission plugin is on (e.g. OpenShift).
- apiGroups: [snapshots.dev]
  resources: [snapshotsources/finalizers]
  verbs: [update]
# One CronJob per SnapshotSource: created, or patched to the spec (never watched).
- apiGroups: [batch]
  resources: [cronjobs]
  verbs: [get, create, patch]
# Jobs: watched for their end, created for immediate runs, annotated once recorded.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
# A finished Job's pods hold the run's summary in their termination message.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# Kubernetes Events on the SnapshotSources.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}
