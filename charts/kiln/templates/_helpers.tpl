{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "kiln.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kiln.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "kiln.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "kiln.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kiln.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference from {repository, tag, digest}: the digest pins it when given. Call with (list image appVersion). */}}
{{- define "kiln.imageRef" -}}
{{- $img := index . 0 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default (index . 1) $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "kiln.controllerImage" -}}
{{- include "kiln.imageRef" (list .Values.image .Chart.AppVersion) -}}
{{- end -}}

{{- define "kiln.builderImage" -}}
{{- if .Values.builderImage.repository -}}
{{- include "kiln.imageRef" (list .Values.builderImage .Chart.AppVersion) -}}
{{- else -}}
{{- include "kiln.controllerImage" . -}}
{{- end -}}
{{- end -}}

{{/* Namespaces the build ServiceAccount is created in, as a list. */}}
{{- define "kiln.buildNamespaces" -}}
{{- $ns := .Values.builds.serviceAccount.namespaces -}}
{{- if not $ns -}}
{{- $ns = list (default .Release.Namespace .Values.watchNamespace) -}}
{{- end -}}
{{- toJson $ns -}}
{{- end -}}

{{/* Where the controller's pod mounts the registry CA bundle, or "" without one. */}}
{{- define "kiln.registryCASource" -}}
{{- $ca := .Values.registryCA -}}
{{- $n := 0 -}}
{{- if $ca.bundle }}{{ $n = add1 $n }}{{ end -}}
{{- if $ca.configMap.name }}{{ $n = add1 $n }}{{ end -}}
{{- if $ca.secret.name }}{{ $n = add1 $n }}{{ end -}}
{{- if gt $n 1 -}}
{{- fail "registryCA: set one of bundle, configMap.name and secret.name" -}}
{{- end -}}
{{- if $ca.bundle -}}
{{- toJson (dict "configMap" (dict "name" (printf "%s-registry-ca" (include "kiln.fullname" .)) "items" (list (dict "key" "ca.crt" "path" "ca.crt")))) -}}
{{- else if $ca.configMap.name -}}
{{- toJson (dict "configMap" (dict "name" $ca.configMap.name "items" (list (dict "key" $ca.configMap.key "path" "ca.crt")))) -}}
{{- else if $ca.secret.name -}}
{{- toJson (dict "secret" (dict "secretName" $ca.secret.name "items" (list (dict "key" $ca.secret.key "path" "ca.crt")))) -}}
{{- end -}}
{{- end -}}

{{- define "kiln.leaseName" -}}
{{- default (include "kiln.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}
