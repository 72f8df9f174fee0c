{{- /*
Deliberate faults (hami_stack/faults): the HAMI_FAULTS env entry of one stack container, holding the
names in .Values.faultInjection.faults that start with one of "prefixes" (so a webhook fault does not
restart the device plugins). Renders nothing when no fault applies: a default install has no fault env.
Usage: include "hami.faultsEnv" (dict "root" . "prefixes" (list "webhook-" "scheduler-"))
*/ -}}
{{- define "hami.faultsEnv" -}}
{{- $names := list }}
{{- $prefixes := .prefixes }}
{{- range (.root.Values.faultInjection.faults | default list) }}
{{- $name := . }}
{{- range $prefixes }}
{{- if and (hasPrefix . $name) (not (has $name $names)) }}
{{- $names = append $names $name }}
{{- end }}
{{- end }}
{{- end }}
{{- if $names }}
- name: HAMI_FAULTS
  value: {{ join "," $names | quote }}
{{- end }}
{{- end -}}

{{- /* Whether chart fault "name" is on: include "hami.faultOn" (dict "root" . "name" "chart-...") */ -}}
{{- define "hami.faultOn" -}}
{{- if has .name (.root.Values.faultInjection.faults | default list) }}true{{ end }}
{{- end -}}
