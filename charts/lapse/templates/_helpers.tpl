{{/* Chart name, at most 63 characters (a DNS label). */}}
{{- define "lapse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: the release name when it already holds the chart name. */}}
{{- define "lapse.fullname" -}}
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

{{- define "lapse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lapse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lapse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "lapse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lapse
{{- end }}

{{- define "lapse.serviceAccountName" -}}
{{- default (include "lapse.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/*
Checks the values every template depends on, so a bad install fails at once with a message that
names the value, instead of a pod that crash-loops. Included by the Deployment.
*/}}
{{- define "lapse.validate" -}}
{{- $_ := required "clusterName is required: the name of this cluster, a DNS label that marks every Azure object the operator owns (--set clusterName=prod-weu-1)" .Values.clusterName }}
{{- $_ = required "oidcIssuer is required: this cluster's ServiceAccount token issuer, an https URL (on AKS: az aks show --query oidcIssuerProfile.issuerUrl)" .Values.oidcIssuer }}
{{- $_ = required "azure.tenantId is required: the Entra tenant of the operator's identity" .Values.azure.tenantId }}
{{- $_ = required "azure.clientId is required: the client ID of the operator's identity (managed identity or app registration)" .Values.azure.clientId }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" .Values.clusterName) }}
{{- fail (printf "clusterName %q is not a DNS label: lower-case letters, digits and '-', at most 63 characters, starting and ending with a letter or digit" .Values.clusterName) }}
{{- end }}
{{- if not (hasPrefix "https://" .Values.oidcIssuer) }}
{{- fail (printf "oidcIssuer %q must be an https URL" .Values.oidcIssuer) }}
{{- end }}
{{- if not (has .Values.azure.cloud (list "public" "us-government" "china")) }}
{{- fail (printf "azure.cloud %q is not one of public, us-government, china (use armEndpoint/graphEndpoint/authorityHost for other clouds)" .Values.azure.cloud) }}
{{- end }}
{{- if and .Values.azure.workloadIdentity .Values.azure.clientSecret.existingSecret }}
{{- fail "azure.workloadIdentity and azure.clientSecret.existingSecret are both set: the operator takes exactly one credential; set azure.workloadIdentity=false to use the client secret" }}
{{- end }}
{{- if not (or .Values.azure.workloadIdentity .Values.azure.clientSecret.existingSecret) }}
{{- fail "no Azure credential: set azure.workloadIdentity=true (AKS workload identity) or name a Secret in azure.clientSecret.existingSecret" }}
{{- end }}
{{- if and (not .Values.leaderElection.enabled) (gt (int .Values.replicas) 1) }}
{{- fail (printf "replicas is %d with leaderElection.enabled=false: replicas would act at the same time; enable leader election or set replicas=1" (int .Values.replicas)) }}
{{- end }}
{{- end }}

{{/* The approval bridge: its own name and labels, so the operator's selectors never match it. */}}
{{- define "lapse.bridge.fullname" -}}
{{- printf "%s-approval-bridge" (include "lapse.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lapse.bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lapse.name" . }}-approval-bridge
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lapse.bridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "lapse.bridge.selectorLabels" . }}
app.kubernetes.io/component: approval-bridge
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lapse
{{- end }}

{{/*
The bridge's values: a secret to verify requests with, and users it may impersonate (RBAC reads
an empty resourceNames as every name, so an empty list is refused); every user and group the
inline user map names must be impersonatable, or its approvals would all be refused.
*/}}
{{- define "lapse.bridge.validate" -}}
{{- $b := .Values.approvalBridge }}
{{- if not (or $b.slack.existingSecret $b.teams.existingSecret) }}
{{- fail "approvalBridge.enabled needs approvalBridge.slack.existingSecret (the Slack signing secret) or approvalBridge.teams.existingSecret (the Teams security token)" }}
{{- end }}
{{- if not $b.impersonate.users }}
{{- fail "approvalBridge.impersonate.users is empty: list the Kubernetes users the bridge may act as (an empty RBAC resourceNames would let it impersonate everyone)" }}
{{- end }}
{{- range $platform, $entries := dict "slack" ($b.users.slack | default dict) "teams" ($b.users.teams | default dict) }}
{{- range $id, $m := $entries }}
{{- if not (has $m.user $b.impersonate.users) }}
{{- fail (printf "approvalBridge.users.%s.%s maps to user %q, which approvalBridge.impersonate.users does not list" $platform $id $m.user) }}
{{- end }}
{{- range $g := ($m.groups | default list) }}
{{- if not (has $g $b.impersonate.groups) }}
{{- fail (printf "approvalBridge.users.%s.%s decides as group %q, which approvalBridge.impersonate.groups does not list" $platform $id $g) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
