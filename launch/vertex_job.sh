#!/usr/bin/env bash
# Runs the multi-worker trainer (MultiWorkerMirroredStrategy) as a Vertex AI CustomJob: Vertex AI
# provisions the VMs, runs launch/Dockerfile's image on each, sets TF_CONFIG and restarts replicas;
# optionally with a continuous evaluator in worker pool 3 (submit --evaluator).
# Kept to bash 3.2 features, like gcloud_cluster.sh: it usually runs on a laptop.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: launch/vertex_job.sh SUBCOMMAND [options] [-- trainer.main flags (submit only)]

Subcommands:
  submit   build the CustomJob spec (JSON, which gcloud reads as YAML), write it to --spec_file
           and create the job: gcloud ai custom-jobs create --region=R --display-name=NAME
           --config=SPEC_FILE. With --evaluator the spec has empty placeholder pools, which the
           gcloud CLI's --config check refuses (it wants a containerSpec in every pool) while the
           API accepts them (CustomJobSpec.workerPoolSpecs in the REST reference: any pool after
           the first may be left empty): so the same spec, as {"displayName": NAME,
           "jobSpec": SPEC}, is POSTed to the API with curl
           (https://R-aiplatform.googleapis.com/v1/projects/P/locations/R/customJobs), with the
           token from gcloud auth print-access-token passed on curl's stdin, never on a command line.
           Prints the job's resource name and the status/logs/cancel commands for it.
  status   gcloud ai custom-jobs describe JOB (state, error, start and end times)
  logs     gcloud ai custom-jobs stream-logs JOB (every replica's log, until the job ends; Ctrl-C stops)
  cancel   gcloud ai custom-jobs cancel JOB (Vertex AI stops every replica; a later submit with the
           same --model_dir resumes from the newest complete checkpoint there)

The job (submit):
  worker pool 0   the chief: 1 replica
  worker pool 1   the other workers: --num_workers - 1 replicas (an empty placeholder when there
                  are none and pool 3 is used)
  worker pool 2   an empty placeholder (parameter servers: not used), only with --evaluator
  worker pool 3   with --evaluator, 1 continuous evaluator
  Every pool runs --image (build it from launch/Dockerfile, whose ENTRYPOINT is
  tini -- python -m trainer.main, and push it to Artifact Registry) on --machine_type with
  --accelerator_count x --accelerator_type, with the container args
    --strategy=multi_worker_mirrored --model_dir=gs://... FLAGS...
    --config.distribute.connect_timeout_seconds=600
  (the last one only when FLAGS do not set it: replicas start as their VMs come up, and pulling
  the CUDA image can take longer than the trainer's default 120 s wait for its peers). The
  evaluator's args are the same with --mode=continuous_eval appended (the trainer takes a flag's
  last value). No container command is set, so the image's ENTRYPOINT runs.

TF_CONFIG: Vertex AI sets it on every replica of a distributed job; nothing here sets it. Pool 0
  is the task type "chief" and pool 1's replicas are "worker" 0..N-2, as in
  {"cluster": {"chief": ["<host>:2222"], "worker": [...]}, "task": {"type": "chief", "index": 0},
  "environment": "cloud", "job": {...}}; pool 3's task type is "evaluator". The trainer's TF_CONFIG
  check accepts these (with or without the evaluator listed in the cluster); the "evaluator" task
  evaluates on its own VM's devices, joins no collective and refuses any --mode but
  continuous_eval. The workers should then run --mode=train (a warning says so otherwise).

Restarts and exit statuses under Vertex AI:
  The spec sets scheduling.restartJobOnWorkerRestart: true and scheduling.timeout (--timeout).
  Vertex AI restarts a replica whose VM goes through maintenance (on another VM) and a replica
  whose container exits with a non-zero status (on the same VM), under the same hostname (Vertex
  AI docs, "Understand the custom training service"). With restartJobOnWorkerRestart, one
  replica's restart restarts the whole CustomJob (Scheduling in the Vertex AI REST reference,
  which offers it for jobs that cannot have workers leave and rejoin): MultiWorkerMirroredStrategy
  cannot take back one restarted worker alone, so every replica starts again and the cluster
  forms anew.
  Vertex AI has no per-exit-status policy (unlike the TFJob's restartPolicy: ExitCode), so:
  143  SIGTERM (preemption, maintenance) after the trainer saved a checkpoint, if the VM gave it
       the time, or a peer worker lost: the job restarts and every replica resumes from the
       newest complete checkpoint in gs://MODEL_DIR.
  2    a bad flag, config, data file or model_dir: retried like any non-zero exit, fails the same
       way each time, and the job fails once Vertex AI's restart limit is used up (no checkpoint
       is harmed). Fix the input and submit again; the launcher refuses what it can check first
       (a non-gs:// --model_dir, the flags it sets itself).
  1    a crash or a failed checkpoint write (3, a diverged loss, the same): the job restarts from
       the newest checkpoint; a passing cause (a GCS error) recovers, a lasting one fails the job
       after the restarts. Read the logs (logs JOB).
  The evaluator is a replica like the others: its non-zero exit restarts the whole job too (the
  workers redo the steps since their last checkpoint), while its exit 0 (after the final step's
  checkpoint) ends only the evaluator. A job that keeps failing is ended by --timeout at the latest.

Options (--opt VALUE or --opt=VALUE):
  --region REGION          Vertex AI region, e.g. us-central1 (required)
  --project PROJECT        Google Cloud project (default: gcloud's configured project)
  --dry-run                print the job spec and every command, as a shell script that would do
                           the same (cat > SPEC_FILE <<'EOF' ... EOF, then the gcloud or curl
                           command), and run nothing; needs no gcloud
  -h, --help               this help
 submit:
  --image URI              the trainer image, e.g.
                           us-central1-docker.pkg.dev/PROJECT/REPO/bert-trainer:v1 (required)
  --num_workers N          workers in all, the chief included, a positive integer (required)
  --model_dir gs://B/P     checkpoints, summaries and exports: a gs:// path, since every replica
                           runs on its own VM (required; may also be given after --)
  --display_name NAME      the job's display name (default: bert-trainer)
  --machine_type TYPE      (default: n1-standard-8)
  --accelerator_type TYPE  a Vertex AI accelerator, e.g. NVIDIA_TESLA_T4, NVIDIA_L4
                           (nvidia-tesla-t4 is taken as NVIDIA_TESLA_T4; default: NVIDIA_TESLA_T4)
  --accelerator_count K    accelerators per replica (default: 1; 0 = CPU-only machines)
  --evaluator              add pool 3: one continuous evaluator (--mode=continuous_eval) on the
                           workers' machine type and accelerators. It evaluates each new
                           checkpoint in --model_dir (eval/ summaries; best/ and export/ with
                           --config.train.best_metric) and exits 0 after the final step's.
  --service_account EMAIL  run the replicas as this service account (it needs read and write
                           access to the gs:// paths; default: Vertex AI's Custom Code Service Agent)
  --spot                   scheduling.strategy SPOT: Spot VMs, cheaper and preemptible (each
                           preemption restarts the job from the newest checkpoint, as above)
  --timeout SECONDS        scheduling.timeout, the longest the job may run (default: 604800,
                           Vertex AI's own default of 7 days, written out)
  --spec_file PATH         where the spec is written (default: a temporary file, removed after
                           the submission; vertex_job_spec.json in a --dry-run)
  -- FLAGS...              passed to trainer.main in every pool, e.g. --config=configs/minilm_imdb.py
                           --config.data.path=gs://B/data/aclImdb_v1.tar.gz (data on gs:// too: a
                           local path would be read inside each container). Not --worker_hosts or
                           --task_index (Vertex AI sets TF_CONFIG); --strategy only as
                           multi_worker_mirrored.
 status, logs, cancel:
  --job JOB                the job's ID or resource name (projects/P/locations/R/customJobs/ID),
                           as submit prints it (required)

Example:
  launch/vertex_job.sh submit --region us-central1 --num_workers 2 \
      --image us-central1-docker.pkg.dev/my-project/trainers/bert-trainer:v1 \
      --model_dir gs://my-bucket/runs/minilm_imdb -- --config=configs/minilm_imdb.py \
      --config.data.path=gs://my-bucket/data/aclImdb_v1.tar.gz
  launch/vertex_job.sh logs   --region us-central1 --job 1234567890
  launch/vertex_job.sh status --region us-central1 --job 1234567890
  launch/vertex_job.sh cancel --region us-central1 --job 1234567890
With a continuous evaluator beside the workers, which then only train:
  launch/vertex_job.sh submit --region us-central1 --num_workers 2 --evaluator \
      --image us-central1-docker.pkg.dev/my-project/trainers/bert-trainer:v1 \
      --model_dir gs://my-bucket/runs/minilm_imdb -- --config=configs/minilm_imdb.py --mode=train
Add --dry-run to see the spec and the commands first.
USAGE
}

tag=vertex_job
# No `dirname`: a --dry-run must work on a PATH without coreutils.
launch_dir=${BASH_SOURCE[0]%/*}
[[ $launch_dir == "${BASH_SOURCE[0]}" ]] && launch_dir=.
# shellcheck source=launch/lib/common.sh
source "$launch_dir/lib/common.sh"

# A bucket name, then an optional object path without blanks.
gs_path_re='^gs://[a-z0-9][-a-z0-9_.]*(/[^[:space:]]*)?$'
job_re='^([0-9]+|projects/[^/[:space:]]+/locations/[^/[:space:]]+/customJobs/[0-9]+)$'
service_account_re='^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+$'
subcommands="submit, status, logs, cancel"

if [[ $# -eq 0 ]]; then
  die_usage "missing SUBCOMMAND ($subcommands)"
fi
subcommand=$1
shift
case "$subcommand" in
  -h|--help) usage; exit 0 ;;
  submit|status|logs|cancel) ;;
  *) die_usage "unknown subcommand '$subcommand' ($subcommands)" ;;
esac

region=""
project=""
display_name="bert-trainer"
image=""
num_workers=""
model_dir=""
machine_type="n1-standard-8"
accelerator_type="NVIDIA_TESLA_T4"
accelerator_count=1
evaluator=0
service_account=""
spot=0
timeout=604800
spec_file=""
job=""
dry_run=0
trainer_args=()
have_trainer_args=0

while [[ $# -gt 0 ]]; do
  opt=$1
  value=""
  words=1
  case "$opt" in
    --*=*) value=${opt#*=}; opt=${opt%%=*} ;;
  esac
  case "$opt" in
    -h|--help) usage; exit 0 ;;
    --dry-run|--dry_run) dry_run=1; shift; continue ;;
    --evaluator) evaluator=1; shift; continue ;;
    --spot) spot=1; shift; continue ;;
    --) shift; trainer_args=("$@"); have_trainer_args=1; break ;;
    --region|--project|--display_name|--image|--num_workers|--model_dir|--machine_type|\
    --accelerator_type|--accelerator_count|--service_account|--timeout|--spec_file|--job)
      if [[ $1 != *=* ]]; then
        # A value that is an option is a forgotten value: `--image --dry-run` must not submit.
        [[ $# -ge 2 && $2 != --* ]] || die_usage "$opt needs a value"
        value=$2
        words=2
      fi
      ;;
    *) die_usage "unknown option '$1' (trainer flags go after --, for submit)" ;;
  esac
  case "$opt" in
    --region) region=$value ;;
    --project) project=$value ;;
    --display_name) display_name=$value ;;
    --image) image=$value ;;
    --num_workers) num_workers=$value ;;
    --model_dir) model_dir=$value ;;
    --machine_type) machine_type=$value ;;
    --accelerator_type) accelerator_type=$value ;;
    --accelerator_count) accelerator_count=$value ;;
    --service_account) service_account=$value ;;
    --timeout) timeout=$value ;;
    --spec_file) spec_file=$value ;;
    --job) job=$value ;;
  esac
  shift "$words"
done

# --- validation -----------------------------------------------------------------------
[[ -n $region ]] || die_usage "--region is required (e.g. --region us-central1)"
[[ $region =~ ^[a-z][-a-z0-9]*[a-z0-9]$ ]] || die_usage "--region: not a region name: '$region'"
if [[ -n $project && ! $project =~ ^[a-z][-a-z0-9.:]*[a-z0-9]$ ]]; then
  die_usage "--project: not a project id: '$project'"
fi
if [[ $subcommand != submit ]]; then
  [[ $have_trainer_args == 0 ]] || die_usage "trainer flags (after --) are only for 'submit'"
  [[ $evaluator == 0 ]] || die_usage "--evaluator is only for 'submit'"
  [[ -n $job ]] || die_usage "--job is required for '$subcommand' (the ID or resource name submit printed)"
  [[ $job =~ $job_re ]] ||
    die_usage "--job must be a job ID or projects/P/locations/R/customJobs/ID, got '$job'"
else
  [[ -z $job ]] || die_usage "--job is only for 'status', 'logs' and 'cancel'"
  [[ -n $image ]] || die_usage "--image is required for 'submit' (the trainer image built from launch/Dockerfile, e.g. us-central1-docker.pkg.dev/PROJECT/REPO/bert-trainer:v1)"
  [[ $image =~ $plain_word_re ]] || die_usage "--image: not an image URI: '$image'"
  [[ -n $num_workers ]] || die_usage "--num_workers is required for 'submit'"
  [[ $num_workers =~ $positive_int_re ]] ||
    die_usage "--num_workers must be a positive integer, got '$num_workers'"
  [[ $machine_type =~ ^[a-z0-9][-a-z0-9]*$ ]] || die_usage "--machine_type: not a machine type: '$machine_type'"
  [[ $accelerator_count =~ $non_negative_int_re ]] ||
    die_usage "--accelerator_count must be a non-negative integer, got '$accelerator_count'"
  # Vertex AI names accelerators as enum values; take Compute Engine's spelling too.
  accelerator_type=$(printf '%s' "$accelerator_type" | tr 'a-z-' 'A-Z_')
  [[ $accelerator_type =~ ^[A-Z][A-Z0-9_]*$ ]] ||
    die_usage "--accelerator_type: not an accelerator type (e.g. NVIDIA_TESLA_T4): '$accelerator_type'"
  [[ $timeout =~ $positive_int_re ]] || die_usage "--timeout must be a positive number of seconds, got '$timeout'"
  if [[ -n $service_account && ! $service_account =~ $service_account_re ]]; then
    die_usage "--service_account must be a service account's e-mail address, got '$service_account'"
  fi
  case "$display_name" in
    ''|*[[:cntrl:]]*) die_usage "--display_name must be a non-empty line of text, got '$display_name'" ;;
  esac
  (( ${#display_name} <= 128 )) || die_usage "--display_name may have at most 128 characters"
fi

# --- the trainer flags (submit) -------------------------------------------------------------
given_strategy=0
flag_model_dir=""
mode="train_and_evaluate"  # trainer.main's default --mode; the last one given wins
data_path=""
have_connect_timeout=0
if [[ $subcommand == submit ]]; then
  expect=""
  for arg in ${trainer_args[@]+"${trainer_args[@]}"}; do
    case "$arg" in
      *[[:cntrl:]]*) die_usage "trainer flag with a control character (tab, newline...): '$arg'" ;;
    esac
    # A flag's value in the next word: seen as --flag=value.
    case "$expect" in
      strategy|model_dir) arg="--$expect=$arg" ;;
      mode) mode=$arg; expect=""; continue ;;
      data_path) data_path=$arg; expect=""; continue ;;
    esac
    expect=""
    case "$arg" in
      --worker_hosts|--worker_hosts=*|--task_index|--task_index=*)
        die_usage "Vertex AI sets the cluster (TF_CONFIG) itself; drop $arg" ;;
      --strategy) expect=strategy ;;
      --strategy=*)
        [[ ${arg#*=} == multi_worker_mirrored ]] ||
          die_usage "every replica runs --strategy=multi_worker_mirrored; drop $arg"
        given_strategy=1 ;;
      --model_dir) expect=model_dir ;;
      --model_dir=*) flag_model_dir=${arg#*=} ;;
      --mode) expect=mode ;;
      --mode=*) mode=${arg#*=} ;;
      --config.data.path) expect=data_path ;;
      --config.data.path=*) data_path=${arg#*=} ;;
      --config.distribute.connect_timeout_seconds|--config.distribute.connect_timeout_seconds=*)
        have_connect_timeout=1 ;;
    esac
  done
  case "$expect" in
    strategy|model_dir|mode|data_path) die_usage "trainer flag --${expect/data_path/config.data.path} needs a value" ;;
  esac
  if [[ -n $flag_model_dir && -n $model_dir && $flag_model_dir != "$model_dir" ]]; then
    die_usage "--model_dir is given twice, as '$model_dir' and after -- as '$flag_model_dir'"
  fi
  job_model_dir=${model_dir:-$flag_model_dir}
  [[ -n $job_model_dir ]] ||
    die_usage "--model_dir is required for 'submit' (a gs:// path every replica can write, e.g. gs://my-bucket/runs/imdb)"
  [[ $job_model_dir =~ $gs_path_re ]] ||
    die_usage "--model_dir must be a gs:// path (every replica runs on its own VM and all of them read and write the same checkpoints), got '$job_model_dir'"
  if [[ $evaluator == 1 && $mode != train ]]; then
    echo "vertex_job.sh: warning: with --evaluator the workers should run --mode=train, not --mode=$mode (the evaluator does the evaluation)" >&2
  fi
  if [[ -n $data_path && $data_path != gs://* ]]; then
    echo "vertex_job.sh: warning: --config.data.path=$data_path is not a gs:// path: every replica reads it inside its own container" >&2
  fi
fi

# --- helpers ----------------------------------------------------------------------------
# A JSON string. Control characters were refused above; the rest of UTF-8 goes in as it is.
json_string() {
  local s=$1 bs=\\ dq=\"
  s=${s//"$bs"/"$bs$bs"}
  s=${s//"$dq"/"$bs$dq"}
  printf '"%s"' "$s"
}

# One worker pool: json_pool INDENT REPLICAS ARG... (INDENT: the pool's own indentation)
json_pool() {
  local indent=$1 replicas=$2 arg sep=""
  shift 2
  printf '%s{\n' "$indent"
  printf '%s  "replicaCount": %s,\n' "$indent" "$replicas"
  printf '%s  "machineSpec": {\n' "$indent"
  if [[ $accelerator_count -gt 0 ]]; then
    printf '%s    "machineType": %s,\n' "$indent" "$(json_string "$machine_type")"
    printf '%s    "acceleratorType": %s,\n' "$indent" "$(json_string "$accelerator_type")"
    printf '%s    "acceleratorCount": %s\n' "$indent" "$accelerator_count"
  else
    printf '%s    "machineType": %s\n' "$indent" "$(json_string "$machine_type")"
  fi
  printf '%s  },\n' "$indent"
  printf '%s  "containerSpec": {\n' "$indent"
  printf '%s    "imageUri": %s,\n' "$indent" "$(json_string "$image")"
  printf '%s    "args": [' "$indent"
  for arg in "$@"; do
    printf '%s\n%s      %s' "$sep" "$indent" "$(json_string "$arg")"
    sep=","
  done
  printf '\n%s    ]\n' "$indent"
  printf '%s  }\n' "$indent"
  printf '%s}' "$indent"
}

# The CustomJobSpec (keys in camelCase: gcloud refuses snake_case in --config). INDENT shifts it
# right, for the REST body that nests it.
json_job_spec() {
  local in=$1
  printf '{\n'
  printf '%s  "workerPoolSpecs": [\n' "$in"
  json_pool "$in    " 1 "${worker_args[@]}"
  if [[ $num_workers -gt 1 ]]; then
    printf ',\n'
    json_pool "$in    " "$((num_workers - 1))" "${worker_args[@]}"
  elif [[ $evaluator == 1 ]]; then
    printf ',\n%s    {}' "$in"
  fi
  if [[ $evaluator == 1 ]]; then
    printf ',\n%s    {},\n' "$in"
    json_pool "$in    " 1 "${evaluator_args[@]}"
  fi
  printf '\n%s  ],\n' "$in"
  printf '%s  "scheduling": {\n' "$in"
  printf '%s    "restartJobOnWorkerRestart": true,\n' "$in"
  if [[ $spot == 1 ]]; then
    printf '%s    "strategy": "SPOT",\n' "$in"
  fi
  printf '%s    "timeout": "%ss"\n' "$in" "$timeout"
  if [[ -n $service_account ]]; then
    printf '%s  },\n' "$in"
    printf '%s  "serviceAccount": %s\n' "$in" "$(json_string "$service_account")"
  else
    printf '%s  }\n' "$in"
  fi
  printf '%s}' "$in"
}

scope=(--region="$region")
if [[ -n $project ]]; then
  scope+=(--project="$project")
fi

require_gcloud

print_next_steps() {  # print_next_steps JOB_NAME
  local id=${1##*/} where
  where=$(quote_words "${scope[@]}")
  echo "Submitted $1"
  echo "  logs:   $0 logs $where --job $id"
  echo "  status: $0 status $where --job $id"
  echo "  cancel: $0 cancel $where --job $id"
}

# --- subcommands ------------------------------------------------------------------------
cmd_submit() {
  local rest=0 temporary=0 name url response status
  worker_args=()
  if [[ $given_strategy == 0 ]]; then
    worker_args+=(--strategy=multi_worker_mirrored)
  fi
  if [[ -z $flag_model_dir ]]; then
    worker_args+=(--model_dir="$job_model_dir")
  fi
  worker_args+=(${trainer_args[@]+"${trainer_args[@]}"})
  if [[ $have_connect_timeout == 0 ]]; then
    worker_args+=(--config.distribute.connect_timeout_seconds=600)
  fi
  evaluator_args=("${worker_args[@]}" --mode=continuous_eval)
  # Pool 3 needs placeholders for pools 2 (and 1), which only the API itself takes.
  if [[ $evaluator == 1 ]]; then
    rest=1
  fi

  if [[ -z $spec_file ]]; then
    if [[ $dry_run == 1 ]]; then
      spec_file=vertex_job_spec.json
    else
      spec_file=$(mktemp "${TMPDIR:-/tmp}/vertex_job_spec.XXXXXX")
      temporary=1
      trap 'rm -f "$spec_file"' EXIT
    fi
  fi
  local spec
  if [[ $rest == 1 ]]; then
    spec=$(printf '{\n  "displayName": %s,\n  "jobSpec": ' "$(json_string "$display_name")"; json_job_spec "  "; printf '\n}')
  else
    spec=$(json_job_spec "")
  fi

  if [[ $dry_run == 1 ]]; then
    printf 'cat > %s <<'"'"'EOF'"'"'\n%s\nEOF\n' "$(quote "$spec_file")" "$spec"
  else
    printf '%s\n' "$spec" > "$spec_file"
    if [[ $temporary == 1 ]]; then
      echo "+ job spec written to $spec_file (removed at exit; --spec_file keeps it)" >&2
    else
      echo "+ job spec written to $spec_file" >&2
    fi
  fi

  if [[ $rest == 0 ]]; then
    local create=(gcloud ai custom-jobs create "${scope[@]}" --display-name="$display_name"
      --config="$spec_file" --format='value(name)')
    if [[ $dry_run == 1 ]]; then
      run "${create[@]}"
      return
    fi
    name=$(run "${create[@]}")
    [[ -n $name ]] || { echo "vertex_job.sh: gcloud printed no job name" >&2; exit 1; }
    print_next_steps "$name"
    return
  fi

  # REST: POST the CustomJob to the region's endpoint.
  if [[ $dry_run == 1 ]]; then
    url="https://$region-aiplatform.googleapis.com/v1/projects/${project:-\$(gcloud config get-value project)}/locations/$region/customJobs"
    # shellcheck disable=SC2016  # $(...) is for the shell that runs the printed line
    printf '%s\n' "printf 'Authorization: Bearer %s\\n' \"\$(gcloud auth print-access-token)\" | curl -sS -X POST -H @- -H 'Content-Type: application/json' --data-binary @$(quote "$spec_file") \"$url\""
    return
  fi
  command -v curl >/dev/null 2>&1 || { echo "vertex_job.sh: curl not found (needed to submit a job with --evaluator)" >&2; exit 1; }
  if [[ -z $project ]]; then
    echo "+ gcloud config get-value project" >&2
    project=$(gcloud config get-value project 2>/dev/null || true)
    [[ -n $project ]] || die_usage "--project is required: gcloud has no configured project (gcloud config set project ...)"
    scope+=(--project="$project")
  fi
  url="https://$region-aiplatform.googleapis.com/v1/projects/$project/locations/$region/customJobs"
  echo "+ gcloud auth print-access-token | curl -sS -X POST -H @- -H 'Content-Type: application/json' --data-binary @$(quote "$spec_file") $url" >&2
  local token
  token=$(gcloud auth print-access-token) || { echo "vertex_job.sh: gcloud auth print-access-token failed (gcloud auth login?)" >&2; exit 1; }
  # The token goes to curl on stdin (-H @-), so no command line shows it.
  response=$(printf 'Authorization: Bearer %s\n' "$token" |
    curl -sS -X POST -H @- -H 'Content-Type: application/json' --data-binary "@$spec_file" \
      -w '\n%{http_code}' "$url") || { echo "vertex_job.sh: curl failed" >&2; exit 1; }
  status=${response##*$'\n'}
  response=${response%$'\n'*}
  if [[ ! $status =~ ^2[0-9][0-9]$ ]]; then
    echo "vertex_job.sh: the API refused the job (HTTP $status):" >&2
    printf '%s\n' "$response" >&2
    exit 1
  fi
  name=$(printf '%s\n' "$response" | sed -n 's/^ *"name": *"\(projects\/[^"]*\/customJobs\/[^"]*\)".*/\1/p' | head -n 1)
  [[ -n $name ]] || { echo "vertex_job.sh: no job name in the API's answer:" >&2; printf '%s\n' "$response" >&2; exit 1; }
  print_next_steps "$name"
}

cmd_status() {
  run gcloud ai custom-jobs describe "$job" "${scope[@]}"
}

cmd_logs() {
  run gcloud ai custom-jobs stream-logs "$job" "${scope[@]}"
}

cmd_cancel() {
  run gcloud ai custom-jobs cancel "$job" "${scope[@]}"
}

"cmd_$subcommand"
