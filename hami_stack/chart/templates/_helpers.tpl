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
{{/* The chart makes the TLS Secret unless one is brought (tls.existingSecret, or patch.enabled false). */}}
{{- define "hami.tls-generated" -}}{{ if and .Values.scheduler.patch.enabled (not .Values.scheduler.tls.existingSecret) }}true{{ end }}{{- end -}}

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

{{/*
An image reference, as upstream composes it: global.imageRegistry (when set) wins over the image's own
registry; the image's tag, else .tag (global.imageTag for the stack images, the cluster version for
kube-scheduler). Call with (dict "image" <image values> "global" .Values.global "tag" <default tag>).
*/}}
{{- define "hami.imageRef" -}}
{{- $registry := .global.imageRegistry | default .image.registry -}}
{{- $tag := .image.tag | default .tag | toString | trim -}}
{{- if $registry -}}
{{ $registry }}/{{ .image.repository }}:{{ $tag }}
{{- else -}}
{{ .image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{- define "hami.stackImage" -}}
{{- include "hami.imageRef" (dict "image" .image "global" .root.Values.global "tag" .root.Values.global.imageTag) -}}
{{- end -}}

{{/* imagePullSecrets of a pod: global ones, then each image's pullSecrets (names), without repeats. */}}
{{- define "hami.pullSecrets" -}}
{{- $names := list -}}
{{- $lists := list .root.Values.global.imagePullSecrets -}}
{{- range .images }}{{ $lists = append $lists .pullSecrets }}{{ end -}}
{{- range $lists -}}
{{- range . -}}
{{- if kindIs "map" . }}{{ $names = append $names .name }}{{ else }}{{ $names = append $names . }}{{ end -}}
{{- end -}}
{{- end -}}
{{- with uniq $names }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/*
Arguments from a user list, after the flags the chart owns: an entry equal to one of .owned is not
repeated; another value for an owned flag (same name before "=") fails the render, naming the key.
*/}}
{{- define "hami.extraArgs" -}}
{{- $owned := .owned -}}
{{- $out := list -}}
{{- range .args -}}
{{- $arg := toString . -}}
{{- $name := regexReplaceAll "=.*$" $arg "" -}}
{{- $clash := false -}}
{{- range $owned -}}
{{- if and (ne $arg .) (eq $name (regexReplaceAll "=.*$" . "")) -}}{{ $clash = true }}{{- end -}}
{{- end -}}
{{- if $clash -}}
{{- fail (printf "%s: %q conflicts with the chart's own %s (the chart mounts and passes its config itself)" $.key $arg $name) -}}
{{- end -}}
{{- if not (has $arg $owned) -}}{{- $out = append $out $arg -}}{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Every resource the extender manages; kube-scheduler must ignore them (ignoredByScheduler). */}}
{{- define "hami.managedResources" -}}
{{- $v := .Values -}}
{{- $names := list $v.resourceName $v.resourceMem $v.resourceCores $v.resourceMemPercentage $v.resourcePriority -}}
{{- if $v.devices.cambricon.enabled }}{{ $names = append $names $v.mluResourceName }}{{ end -}}
{{- if $v.devices.hygon.enabled }}{{ $names = concat $names (list $v.dcuResourceName $v.dcuResourceMem $v.dcuResourceCores) }}{{ end -}}
{{- if $v.devices.metax.enabled }}{{ $names = concat $names (list "metax-tech.com/gpu" $v.metaxResourceName $v.metaxResourceCore $v.metaxResourceMem) }}{{ end -}}
{{- if $v.devices.ascend.enabled }}{{ $names = concat $names $v.devices.ascend.customresources }}{{ end -}}
{{- range list "mthreads" "enflame" "kunlun" -}}
{{- $d := index $v.devices . -}}
{{- if $d.enabled }}{{ $names = concat $names $d.customresources }}{{ end -}}
{{- end -}}
{{- if $v.devices.awsneuron.enabled }}{{ $names = concat $names $v.devices.awsneuron.customresources }}{{ end -}}
{{- if $v.devices.iluvatar.enabled }}{{ $names = concat $names $v.devices.iluvatar.customresources }}{{ end -}}
{{- range list "vastai" "biren" -}}
{{- $d := index $v.devices . -}}
{{- if $d.enabled }}{{ $names = concat $names $d.customresources }}{{ end -}}
{{- end -}}
{{- if $v.devices.amd.enabled }}{{ $names = concat $names $v.devices.amd.customresources }}{{ end -}}
{{- toJson (uniq $names) -}}
{{- end -}}

{{/* The names the extender's serving certificate is valid for; serverName of the scheduler's tlsConfig. */}}
{{- define "hami.servingName" -}}
{{ include "hami.scheduler" . }}.{{ include "hami.namespace" . }}.svc
{{- end -}}

{{- define "hami.extenderURL" -}}
https://127.0.0.1:{{ .Values.scheduler.service.httpTargetPort }}
{{- end -}}

{{/*
The TLS Secret's data (base64 values by key) as JSON, computed once per render and shared by the
templates that need it (the Secret, the webhook's caBundle, the Deployment's checksum): genCA is
random, so a second computation would make a different CA. Reuses the Secret in the cluster when it
holds all five keys, or when the Secret is brought by the user; otherwise generates a new set.
*/}}
{{- define "hami.tlsData" -}}
{{- if not (hasKey .Values "hamiTLSDataCache") -}}
{{- $svc := include "hami.scheduler" . -}}
{{- $ns := include "hami.namespace" . -}}
{{- $generate := include "hami.tls-generated" . -}}
{{- $data := dict -}}
{{- $existing := lookup "v1" "Secret" $ns (include "hami.tls-secret" .) -}}
{{- if and $existing $existing.data -}}
{{- $complete := true -}}
{{- range list "ca.crt" "tls.crt" "tls.key" "client.crt" "client.key" }}{{ if not (index $existing.data .) }}{{ $complete = false }}{{ end }}{{ end -}}
{{- if or $complete (not $generate) }}{{ $data = $existing.data }}{{ end -}}
{{- end -}}
{{- if and $generate (not $data) -}}
{{- $days := int .Values.scheduler.tls.validityDays -}}
{{- $ca := genCA (printf "%s-ca" $svc) $days -}}
{{- $alt := list $svc (printf "%s.%s" $svc $ns) (include "hami.servingName" .) (printf "%s.cluster.local" (include "hami.servingName" .)) -}}
{{- $serving := genSignedCert (include "hami.servingName" .) (list "127.0.0.1") $alt $days $ca -}}
{{- $client := genSignedCert .Values.scheduler.tls.clientCommonName nil nil $days $ca -}}
{{- $data = dict "ca.crt" ($ca.Cert | b64enc) "tls.crt" ($serving.Cert | b64enc) "tls.key" ($serving.Key | b64enc) "client.crt" ($client.Cert | b64enc) "client.key" ($client.Key | b64enc) -}}
{{- end -}}
{{- $_ := set .Values "hamiTLSDataCache" $data -}}
{{- end -}}
{{- toJson .Values.hamiTLSDataCache -}}
{{- end -}}
