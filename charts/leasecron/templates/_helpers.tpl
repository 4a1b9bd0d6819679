{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "leasecron.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources: fullnameOverride, else "<release>-<chart>", or just the
release name when it already contains the chart name.
*/}}
{{- define "leasecron.fullname" -}}
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

{{/*
"name-version" for the helm.sh/chart label.
*/}}
{{- define "leasecron.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels common to every resource of the release: the chart's own, then commonLabels (whose keys
leasecron.validate has checked against the chart's).
*/}}
{{- define "leasecron.labels" -}}
{{- include "leasecron.labelsWith" (list . dict) }}
{{- end }}

{{/*
leasecron.labels plus the map extra (podLabels, serviceMonitor.labels): (list $ extra). A key in
both extra and commonLabels is written once, with extra's value, since a label key given twice
makes the object invalid YAML.
*/}}
{{- define "leasecron.labelsWith" -}}
{{- $ := index . 0 }}
{{- $extra := index . 1 -}}
helm.sh/chart: {{ include "leasecron.chart" $ }}
{{ include "leasecron.selectorLabels" $ }}
app.kubernetes.io/version: {{ $.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $.Release.Service }}
app.kubernetes.io/part-of: leasecron
{{- with merge (deepCopy ($extra | default dict)) (deepCopy ($.Values.commonLabels | default dict)) }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The label keys the chart sets itself (leasecron.labels, the helm test Pod's): commonLabels may not
set them.
*/}}
{{- define "leasecron.ownLabelKeys" -}}
{{- list "helm.sh/chart" "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/component" "app.kubernetes.io/version" "app.kubernetes.io/managed-by" "app.kubernetes.io/part-of" | toJson }}
{{- end }}

{{/*
Labels that select the controller Pods (Deployment, Service, PDB, topology spread). The component
label keeps the helm test Pod out of these selectors.
*/}}
{{- define "leasecron.selectorLabels" -}}
app.kubernetes.io/name: {{ include "leasecron.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
Name of the ServiceAccount the controller runs as.
*/}}
{{- define "leasecron.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "leasecron.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Annotations that keep the controller's identity and permissions on `helm uninstall`: Helm deletes
every object of a release at once, and the leader needs both to release the Lease while it stops.
*/}}
{{- define "leasecron.keepOnUninstall" -}}
{{- if .Values.rbac.keepOnUninstall -}}
helm.sh/resource-policy: keep
{{- end }}
{{- end }}

{{/*
Name of the Lease the replicas compete for.
*/}}
{{- define "leasecron.leaseName" -}}
{{- default (include "leasecron.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
Image reference: repository plus digest when set, else tag (default: appVersion).
*/}}
{{- define "leasecron.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret that holds the DSN; fails when no DSN source is configured.
*/}}
{{- define "leasecron.dsnSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else if .Values.database.dsn }}
{{- printf "%s-db" (include "leasecron.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- fail "leasecron: a database is required: set database.dsn (the chart creates a Secret) or database.existingSecret (+ database.existingSecretKey) to a Secret holding the DSN" }}
{{- end }}
{{- end }}

{{/*
Where the DSN Secret is mounted and the file the controller reads. The DSN Secret and the jobs
ConfigMap are mounted side by side under /etc/leasecron, neither inside the other: a Secret volume
is mounted read-only, so the mount point of a volume nested in it cannot be made by the container
runtime; the kubelet makes it inside the Secret's own directory (kubernetes#60341), and runtimes
that set up mounts themselves (Kata Containers 2, kata-containers#3140; hcsshim's LCOW guest) have
failed to start such Pods.
*/}}
{{- define "leasecron.dsnMountPath" -}}/etc/leasecron/db{{- end }}
{{- define "leasecron.dsnFile" -}}/etc/leasecron/db/dsn{{- end }}

{{/*
The jobs ConfigMap (jobs.items, with jobs.source=file), the directory it is mounted at and the file
the controller watches (--jobs-file).
*/}}
{{- define "leasecron.jobsConfigMapName" -}}
{{- printf "%s-jobs" (include "leasecron.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "leasecron.jobsMountPath" -}}/etc/leasecron/jobs{{- end }}
{{- define "leasecron.jobsFile" -}}/etc/leasecron/jobs/jobs.yaml{{- end }}

{{/*
The DSN Secret volume (used by the controller and the test Pod).
*/}}
{{- define "leasecron.dsnVolume" -}}
- name: dsn
  secret:
    secretName: {{ include "leasecron.dsnSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.database.existingSecretKey }}
        path: dsn
{{- end }}

{{/*
Seconds in a Go duration string ("1h30m", "2.5s", "300ms"), printed as a float. The schema has
already checked the syntax; this sums each number × unit.
*/}}
{{- define "leasecron.durationSeconds" -}}
{{- $units := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 }}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" (toString .) -1 }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" . | float64 }}
{{- $unit := regexReplaceAll "^[0-9]+(\\.[0-9]+)?" . "" }}
{{- $total = addf $total (mulf $num (get $units $unit)) }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
Checks that the schema cannot express: relations between values. Fails the render with one line
that says what is wrong and how to fix it.
*/}}
{{- define "leasecron.validate" -}}
{{- $grace := include "leasecron.durationSeconds" .Values.shutdownGracePeriod | float64 }}
{{- $term := .Values.terminationGracePeriodSeconds | float64 }}
{{- if le $term $grace }}
{{- fail (printf "leasecron: terminationGracePeriodSeconds (%v) must be greater than shutdownGracePeriod (%s = %vs), or the kubelet kills jobs that are still finishing; raise terminationGracePeriodSeconds or lower shutdownGracePeriod" .Values.terminationGracePeriodSeconds .Values.shutdownGracePeriod $grace) }}
{{- end }}
{{- $lease := include "leasecron.durationSeconds" .Values.leaderElection.leaseDuration | float64 }}
{{- $renew := include "leasecron.durationSeconds" .Values.leaderElection.renewDeadline | float64 }}
{{- $retry := include "leasecron.durationSeconds" .Values.leaderElection.retryPeriod | float64 }}
{{- if ne $lease (floor $lease) }}
{{- fail (printf "leasecron: leaderElection.leaseDuration (%s) must be a whole number of seconds, as a Lease records it" .Values.leaderElection.leaseDuration) }}
{{- end }}
{{- if le $lease $renew }}
{{- fail (printf "leasecron: leaderElection.leaseDuration (%s) must be greater than leaderElection.renewDeadline (%s)" .Values.leaderElection.leaseDuration .Values.leaderElection.renewDeadline) }}
{{- end }}
{{- if le $renew (mulf 1.2 $retry) }}
{{- fail (printf "leasecron: leaderElection.renewDeadline (%s) must be greater than 1.2 × leaderElection.retryPeriod (%s)" .Values.leaderElection.renewDeadline .Values.leaderElection.retryPeriod) }}
{{- end }}
{{- range $key := include "leasecron.ownLabelKeys" . | fromJsonArray }}
{{- if hasKey ($.Values.commonLabels | default dict) $key }}
{{- fail (printf "leasecron: commonLabels.%s: the chart sets this label itself (and selects its Pods by some of them): remove it from commonLabels" $key) }}
{{- end }}
{{- end }}
{{- if and (not .Values.serviceAccount.create) .Values.rbac.create (not .Values.serviceAccount.name) }}
{{- fail "leasecron: rbac.create binds the Role to the ServiceAccount: with serviceAccount.create=false set serviceAccount.name to the account the Pods run as" }}
{{- end }}
{{- /*
helm upgrade does not install crds/ (only the first install does), so a release of chart 0.1.x
upgraded to jobs.source=cluster would start controllers that find no ScheduledJob API and exit.
On upgrade Helm asks the cluster which APIs it serves; helm template (an install, unless
--is-upgrade) knows none, so the check is made only on upgrade.
*/}}
{{- if and .Release.IsUpgrade (eq (include "leasecron.jobsSource" .) "cluster") (not (.Capabilities.APIVersions.Has "leasecron.io/v1alpha1/ScheduledJob")) }}
{{- fail "leasecron: jobs.source=cluster needs the ScheduledJob CRD, which helm upgrade does not install: apply it first (kubectl apply --server-side -f <chart>/crds/), or keep jobs.source=file" }}
{{- end }}
{{- $own := dict "dsn" (include "leasecron.dsnMountPath" .) "jobs" (include "leasecron.jobsMountPath" .) "tmp" "/tmp" }}
{{- range $i, $v := .Values.extraVolumes }}
{{- if hasKey $own $v.name }}
{{- fail (printf "leasecron: extraVolumes[%d].name: %q is the name of one of the chart's own volumes (dsn, jobs, tmp): give yours another name" $i $v.name) }}
{{- end }}
{{- end }}
{{- /*
A mount at or above one of the chart's would hide it; one inside the read-only dsn or jobs volume
would nest in it (see leasecron.dsnMountPath). Inside the tmp emptyDir is fine.
*/}}
{{- range $i, $m := .Values.extraVolumeMounts }}
{{- $path := clean $m.mountPath }}
{{- range $name, $at := $own }}
{{- $inside := and (ne $name "tmp") (hasPrefix (printf "%s/" $at) $path) }}
{{- if or (eq $path $at) $inside (hasPrefix (printf "%s/" (trimSuffix "/" $path)) $at) }}
{{- fail (printf "leasecron: extraVolumeMounts[%d].mountPath: %s is at, above or inside %s, where the chart mounts its %s volume: mount it elsewhere, such as /etc/leasecron/secrets/%s" $i $m.mountPath $at $name $m.name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The jobs source, "cluster" or "file" (jobs.source; the schema checks the word), after the checks on
.Values.jobs that the schema cannot make. Every template that reads .Values.jobs includes this
first, so a values file of an older chart, where `jobs` was the list of jobs, fails with one line
that says where the list went instead of a template error:
- `jobs` is a map; the schema lets a list through only so that this can say so;
- item names are unique, and none is also defined by `schedules` (a null there defines nothing:
  after `helm upgrade --reuse-values` the templates can still see `schedules: {daily-stats: null}`);
- an item of the command or kubernetesJob kind needs the value that lets the controller run it.
*/}}
{{- define "leasecron.jobsSource" -}}
{{- if kindIs "slice" .Values.jobs }}
{{- fail "leasecron: jobs is a map since chart 0.2.0: move your list of jobs to jobs.items, and set jobs.source to cluster (the default: ScheduledJob objects) or file (the jobs ConfigMap, as before)" }}
{{- end }}
{{- $jobs := .Values.jobs | default dict }}
{{- $seen := dict }}
{{- range $i, $job := $jobs.items }}
{{- if hasKey $seen $job.name }}
{{- fail (printf "leasecron: jobs.items[%d].name: job %q is already defined by jobs.items[%v]; job names key the ledger and must be unique: rename one of them" $i $job.name (get $seen $job.name)) }}
{{- end }}
{{- if get $.Values.schedules $job.name }}
{{- fail (printf "leasecron: jobs.items[%d].name: job %q is also defined by schedules.%s; rename the job, or leave the built-in one out with schedules: {%s: null}" $i $job.name $job.name $job.name) }}
{{- end }}
{{- if and (hasKey $job.spec "command") (not $.Values.allowCommandJobs) }}
{{- fail (printf "leasecron: jobs.items[%d].spec.command: command jobs are off: set allowCommandJobs=true to run them (they run programs in the controller's container), or remove job %q" $i $job.name) }}
{{- end }}
{{- if and (hasKey $job.spec "kubernetesJob") (not $.Values.kubernetesJob.enabled) }}
{{- fail (printf "leasecron: jobs.items[%d].spec.kubernetesJob: Kubernetes Jobs are off: set kubernetesJob.enabled=true to run them (it lets the controller create Jobs in the namespace), or remove job %q" $i $job.name) }}
{{- end }}
{{- $_ := set $seen $job.name $i }}
{{- end }}
{{- $jobs.source | default "cluster" }}
{{- end }}
