{{/* Names */}}
{{- define "hami.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hami.fullname" -}}
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

{{- define "hami.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride -}}
{{- end -}}

{{- define "hami.scheduler" -}}{{ include "hami.fullname" . }}-scheduler{{- end -}}
{{- define "hami.device-plugin" -}}{{ include "hami.fullname" . }}-device-plugin{{- end -}}
{{- define "hami.tls-secret" -}}{{ default (printf "%s-tls" (include "hami.scheduler" .)) .Values.scheduler.tls.existingSecret }}{{- end -}}

{{- define "hami.labels" -}}
app.kubernetes.io/name: {{ include "hami.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.global.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "hami.selector" -}}
app.kubernetes.io/name: {{ include "hami.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The cluster minor as a number: "33", "27+" (EKS/GKE style) -> 33, 27. */}}
{{- define "hami.k8sMinor" -}}
{{- regexFind "[0-9]+" .Capabilities.KubeVersion.Minor | default "0" -}}
{{- end -}}

{{/* kube-scheduler tag: the server version without distribution suffixes (v1.31.1+k3s1 -> v1.31.1). */}}
{{- define "hami.kubeSchedulerTag" -}}
{{- default (regexFind "v[0-9]+\\.[0-9]+\\.[0-9]+" .Capabilities.KubeVersion.Version) .Values.scheduler.kubeScheduler.image.tag -}}
{{- end -}}

{{- define "hami.image" -}}
{{- $tag := default .Values.global.imageTag .Values.image.tag -}}
{{- if .Values.global.imageRegistry -}}
{{ .Values.global.imageRegistry }}/{{ .Values.image.repository }}:{{ $tag }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/* Every resource the extender manages; kube-scheduler must ignore them (ignoredByScheduler). */}}
{{- define "hami.managedResources" -}}
{{- $names := list .Values.resourceName .Values.resourceMem .Values.resourceMemPercentage .Values.resourceCores .Values.resourcePriority .Values.mluResourceName .Values.dcuResourceName .Values.dcuResourceMem .Values.dcuResourceCores "metax-tech.com/gpu" .Values.metaxResourceName .Values.metaxResourceCore .Values.metaxResourceMem -}}
{{- if .Values.devices.ascend.enabled }}{{ $names = concat $names .Values.devices.ascend.customresources }}{{ end -}}
{{- $names = concat $names .Values.devices.mthreads.customresources .Values.devices.enflame.customresources .Values.devices.kunlun.customresources .Values.devices.awsneuron.customresources -}}
{{- if .Values.devices.iluvatar.enabled }}{{ $names = concat $names .Values.devices.iluvatar.customresources }}{{ end -}}
{{- $names = concat $names .Values.devices.vastai.customresources .Values.devices.biren.customresources .Values.devices.amd.customresources -}}
{{- toJson (uniq $names) -}}
{{- end -}}

{{- define "hami.extenderURL" -}}
{{- if .Values.scheduler.admissionWebhook.enabled -}}https://127.0.0.1:{{ .Values.scheduler.service.httpTargetPort }}{{- else -}}http://127.0.0.1:80{{- end -}}
{{- end -}}
