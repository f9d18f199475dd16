{{/* The chart name, or nameOverride. */}}
{{- define "distill-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of every object: fullnameOverride, else <release>-<chart name> (the release
name alone when it already contains the chart name), cut to 63 characters.
*/}}
{{- define "distill-operator.fullname" -}}
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

{{/* helm.sh/chart: name-version. */}}
{{- define "distill-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the operator pods (never change them on upgrade). */}}
{{- define "distill-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "distill-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The labels of every object. */}}
{{- define "distill-operator.labels" -}}
helm.sh/chart: {{ include "distill-operator.chart" . }}
{{ include "distill-operator.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "distill-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "distill-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The namespaces watched without rbac.clusterWide, as a JSON list (use with fromJsonArray):
watchNamespaces, or the release namespace.
*/}}
{{- define "distill-operator.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- toJson (uniq .Values.watchNamespaces) }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/* "true" when the replicas join a kopf peering: replicaCount > 1 or peering.enabled. */}}
{{- define "distill-operator.peering" -}}
{{- if or .Values.peering.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/*
What the operator calls, per watched namespace (a Role) or cluster-wide (a ClusterRole).
Exactly the verbs of the code paths named; nothing on pods, nothing that lists Secrets.
*/}}
{{- define "distill-operator.rules" -}}
# kopf watches projects (list, watch) and patches their finalizer and annotations;
# kube.py reads a project before each pass (get).
- apiGroups: [distill.dev]
  resources: [distillationprojects]
  verbs: [get, list, watch, patch]
# kube.py replaces the status (update); kopf patches its progress into status (patch).
- apiGroups: [distill.dev]
  resources: [distillationprojects/status]
  verbs: [patch, update]
# kopf and the handlers post events about projects.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# kube.py reads the Secrets a project references by name (never lists them).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# kube.py publishes report ConfigMaps: read, create, replace.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, update]
# launch/deployment.py: the router Service by server-side apply (patch, and create when
# the apply creates it), deleted with the project.
- apiGroups: [""]
  resources: [services]
  verbs: [create, patch, delete]
# launch/deployment.py: router Deployments are read, created and deleted, never changed.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, create, delete]
# launch/rayjob.py: KubeRay RayJobs are read, created and deleted, never changed.
- apiGroups: [ray.io]
  resources: [rayjobs]
  verbs: [get, create, delete]
{{- end }}
