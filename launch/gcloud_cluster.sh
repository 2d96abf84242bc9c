#!/usr/bin/env bash
# Runs the multi-worker trainer (MultiWorkerMirroredStrategy) on N Compute Engine GPU VMs,
# one worker per VM: create them, install the project, start, follow logs, stop, delete;
# optionally a continuous evaluator beside worker 0 (start --evaluator).
# Kept to bash 3.2 features: it usually runs on a laptop, and macOS ships bash 3.2.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: launch/gcloud_cluster.sh SUBCOMMAND [options] [-- trainer.main flags (start only)]

Subcommands:
  up           create the VMs <name_prefix>-0 .. <name_prefix>-(N-1) (gcloud compute instances
               create): GPUs attached, --maintenance-policy=TERMINATE (required with GPUs),
               cloud-platform scope for the gs:// model_dir. On a plain image the NVIDIA
               driver is installed by a startup script: Google's installer reboots the VM
               more than once, so the script runs it again at every boot until nvidia-smi
               answers; on a Deep Learning VM image
               (--image_project=deeplearning-platform-release) by the image itself.
  install      with GPUs (--accelerator_count > 0), first wait until the NVIDIA driver
               answers on every VM (nvidia-smi, polled every --driver_poll seconds for at
               most --driver_timeout seconds in all; exit 1 naming the VM if it never does),
               so that the driver installer's reboots cannot cut the install off. Then copy
               this repository (git archive of HEAD: commit first) to every VM and install
               it there as BUILD.md says: Python 3.11 venv (installing Debian's
               python3.11-venv package with apt-get when python3.11 cannot import ensurepip),
               the versions pinned in constraints.txt, offline weights (--no-deps), and the CUDA TensorFlow
               build. Safe to rerun.
  start        start one worker per VM under nohup, each with its TF_CONFIG
               {"cluster": {"worker": ["<prefix>-0:PORT", ...]}, "task": {"type": "worker",
               "index": i}} (VM names resolve on the VPC; worker 0 is the chief), running
               python -m trainer.main --strategy=multi_worker_mirrored --model_dir=<gs://...>
               [trainer flags], logging to <remote_dir>/worker.log; and TensorBoard on the
               chief (localhost only; see the tensorboard subcommand). With --evaluator, also
               a continuous evaluator on the chief (see below). A worker (or the evaluator, or
               TensorBoard) whose pid file names a live process is left alone, so start
               --evaluator on a running cluster only adds the evaluator.
  logs         stream every worker's log, each line prefixed with [worker i]; Ctrl-C stops.
               With --evaluator, also the chief's <remote_dir>/evaluator.log, as [evaluator].
               The streams run in the background with no stdin (</dev/null, ssh -n), so
               they never read the terminal; run install or start first if gcloud still
               has to create your SSH key (creating it can prompt).
  stop         send SIGTERM to every worker: they save a checkpoint and exit (143); a later
               start resumes from the checkpoint in --model_dir. The chief's evaluator, if
               one is running, gets SIGTERM too, with or without --evaluator.
  tensorboard  forward the chief's TensorBoard to this machine
               (gcloud compute ssh <chief> -- -N -L LOCAL_PORT:localhost:TENSORBOARD_PORT).
  down         delete the VMs (gcloud asks for confirmation unless --yes).

Options (--opt VALUE or --opt=VALUE):
  --num_workers N          number of VMs/workers, a positive integer (required, except for
                           tensorboard)
  --zone ZONE              Compute Engine zone, e.g. us-central1-a (required)
  --project PROJECT        Google Cloud project (default: gcloud's configured project)
  --name_prefix PREFIX     VM names are PREFIX-0 .. PREFIX-(N-1) (default: bert-worker)
  --remote_dir DIR         where the repository goes on the VMs, relative to the home
                           directory (default: bert-trainer)
  --dry-run                print every command it would run, one per line, fully expanded
                           (including each worker's TF_CONFIG), and run nothing
  -h, --help               this help
 up:
  --machine_type TYPE      (default: n1-standard-8)
  --accelerator_type TYPE  (default: nvidia-tesla-t4)
  --accelerator_count K    GPUs per VM (default: 1; 0 = CPU-only VMs, no driver)
  --image_family FAMILY    (default: debian-12, whose Python is 3.11, as the project needs)
  --image_project PROJECT  (default: debian-cloud; deeplearning-platform-release for a
                           Deep Learning VM family, which must provide python3.11)
  --boot_disk_size SIZE    (default: 100GB; the CUDA wheels need ~10 GB)
 install:
  --accelerator_count K    0 keeps the CPU TensorFlow build and skips the driver wait
                           (default: 1)
  --driver_timeout SECONDS how long to wait in all for nvidia-smi to answer on every VM
                           (default: 1800; 0 skips the wait)
  --driver_poll SECONDS    pause between two nvidia-smi attempts (default: 20)
 start:
  --model_dir gs://B/P     shared checkpoints/summaries/exports (required, a gs:// path)
  --port PORT              the workers' gRPC port (default: 2222; the default VPC
                           network's default-allow-internal firewall rule lets it through)
  --tensorboard_port PORT  TensorBoard's port on the chief (default: 6006)
  --evaluator              also start a continuous evaluator on the chief: the same trainer
                           command and flags with --mode=continuous_eval appended (the
                           trainer takes a flag's last value, so it overrides a --mode in
                           FLAGS), the TF_CONFIG {"cluster": {"worker": [...]}, "task":
                           {"type": "evaluator", "index": 0}}, under nohup, logging to
                           <remote_dir>/evaluator.log (pid in evaluator.pid). It evaluates
                           each new checkpoint in --model_dir (eval/ summaries; best/ with
                           --config.train.best_metric, exported to export/ at the end) and
                           exits 0 after the final step's.
                           The workers should then run --mode=train (a warning says so
                           otherwise). It runs on the chief's CPU (CUDA_VISIBLE_DEVICES=-1)
                           at a lower priority (nice 10): worker 0's TensorFlow reserves
                           nearly all of its GPU's memory, and GPU time taken from worker 0
                           would slow every worker, training being synchronous. The
                           workers' TF_CONFIG does not list it, so it can be added to (or
                           restarted beside) a running cluster. A failed evaluator stops
                           nothing else: see its log.
  -- FLAGS...              passed to trainer.main, e.g. --config=configs/minilm_imdb.py
                           --config.train.batch_size=64 (not --strategy/--model_dir/
                           --worker_hosts/--task_index: the launcher sets those)
 logs:
  --no_follow              print the logs so far and return
  --evaluator              also stream the chief's evaluator.log
 tensorboard:
  --tensorboard_port PORT  as for start (default: 6006)
  --local_port PORT        port on this machine (default: 6006)
 down:
  --yes                    do not ask for confirmation

Example:
  launch/gcloud_cluster.sh up      --num_workers 2 --zone us-central1-a
  launch/gcloud_cluster.sh install --num_workers 2 --zone us-central1-a
  launch/gcloud_cluster.sh start   --num_workers 2 --zone us-central1-a \
      --model_dir gs://my-bucket/runs/minilm_imdb -- --config=configs/minilm_imdb.py
  launch/gcloud_cluster.sh logs    --num_workers 2 --zone us-central1-a
  launch/gcloud_cluster.sh down    --num_workers 2 --zone us-central1-a
With a continuous evaluator beside the workers:
  launch/gcloud_cluster.sh start   --num_workers 2 --zone us-central1-a --evaluator \
      --model_dir gs://my-bucket/runs/minilm_imdb -- --config=configs/minilm_imdb.py --mode=train
  launch/gcloud_cluster.sh logs    --num_workers 2 --zone us-central1-a --evaluator
Add --dry-run to any of them to see the gcloud commands first.
USAGE
}

tag=gcloud_cluster
# No `dirname`: a --dry-run must work on a PATH without coreutils.
launch_dir=${BASH_SOURCE[0]%/*}
[[ $launch_dir == "${BASH_SOURCE[0]}" ]] && launch_dir=.
# shellcheck source=launch/lib/common.sh
source "$launch_dir/lib/common.sh"

# Compute Engine names: lower-case letters, digits and dashes, starting with a letter.
name_re='^[a-z]([-a-z0-9]*[a-z0-9])?$'
remote_dir_re='^[A-Za-z0-9_][A-Za-z0-9_./-]*$'

if [[ $# -eq 0 ]]; then
  die_usage "missing SUBCOMMAND (up, install, start, logs, stop, tensorboard, down)"
fi
subcommand=$1
shift
case "$subcommand" in
  -h|--help) usage; exit 0 ;;
  up|install|start|logs|stop|tensorboard|down) ;;
  *) die_usage "unknown subcommand '$subcommand' (up, install, start, logs, stop, tensorboard, down)" ;;
esac

num_workers=""
zone=""
project=""
name_prefix="bert-worker"
remote_dir="bert-trainer"
dry_run=0
machine_type="n1-standard-8"
accelerator_type="nvidia-tesla-t4"
accelerator_count=1
image_family="debian-12"
image_project="debian-cloud"
boot_disk_size="100GB"
model_dir=""
port=2222
tensorboard_port=6006
local_port=6006
driver_timeout=1800
driver_poll=20
follow=1
yes=0
evaluator=0
trainer_args=()
have_trainer_args=0

# Each option takes "--opt VALUE" or "--opt=VALUE".
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
    --no_follow) follow=0; shift; continue ;;
    --yes) yes=1; shift; continue ;;
    --evaluator) evaluator=1; shift; continue ;;
    --) shift; trainer_args=("$@"); have_trainer_args=1; break ;;
    --num_workers|--zone|--project|--name_prefix|--remote_dir|--machine_type|--accelerator_type|\
    --accelerator_count|--image_family|--image_project|--boot_disk_size|--model_dir|--port|\
    --tensorboard_port|--local_port|--driver_timeout|--driver_poll)
      if [[ $1 != *=* ]]; then
        [[ $# -ge 2 ]] || die_usage "$opt needs a value"
        value=$2
        words=2
      fi
      ;;
    *) die_usage "unknown option '$1' (trainer flags go after --, for start)" ;;
  esac
  case "$opt" in
    --num_workers) num_workers=$value ;;
    --zone) zone=$value ;;
    --project) project=$value ;;
    --name_prefix) name_prefix=$value ;;
    --remote_dir) remote_dir=$value ;;
    --machine_type) machine_type=$value ;;
    --accelerator_type) accelerator_type=$value ;;
    --accelerator_count) accelerator_count=$value ;;
    --image_family) image_family=$value ;;
    --image_project) image_project=$value ;;
    --boot_disk_size) boot_disk_size=$value ;;
    --model_dir) model_dir=$value ;;
    --port) port=$value ;;
    --tensorboard_port) tensorboard_port=$value ;;
    --local_port) local_port=$value ;;
    --driver_timeout) driver_timeout=$value ;;
    --driver_poll) driver_poll=$value ;;
  esac
  shift "$words"
done

# --- validation -----------------------------------------------------------------------
if [[ $subcommand != tensorboard ]]; then
  [[ -n $num_workers ]] || die_usage "--num_workers is required for '$subcommand'"
  [[ $num_workers =~ $positive_int_re ]] ||
    die_usage "--num_workers must be a positive integer, got '$num_workers'"
fi
[[ -n $zone ]] || die_usage "--zone is required (e.g. --zone us-central1-a)"
[[ $zone =~ $plain_word_re ]] || die_usage "--zone: not a zone name: '$zone'"
if [[ -n $project && ! $project =~ $plain_word_re ]]; then
  die_usage "--project: not a project id: '$project'"
fi
# Leave room for "-<index>" within the 63-character limit.
if [[ ! $name_prefix =~ $name_re || ${#name_prefix} -gt 57 ]]; then
  die_usage "--name_prefix must be lower-case letters, digits and dashes, start with a letter and not end with a dash (at most 57 characters), got '$name_prefix'"
fi
[[ $remote_dir =~ $remote_dir_re ]] ||
  die_usage "--remote_dir must be a plain relative path (letters, digits, _ . / -), got '$remote_dir'"
[[ $accelerator_count =~ $non_negative_int_re ]] ||
  die_usage "--accelerator_count must be a non-negative integer, got '$accelerator_count'"
[[ $driver_timeout =~ $non_negative_int_re ]] ||
  die_usage "--driver_timeout must be a non-negative number of seconds, got '$driver_timeout'"
[[ $driver_poll =~ $non_negative_int_re ]] ||
  die_usage "--driver_poll must be a non-negative number of seconds, got '$driver_poll'"
for pair in "--port:$port" "--tensorboard_port:$tensorboard_port" "--local_port:$local_port"; do
  name=${pair%%:*}
  value=${pair#*:}
  if [[ ! $value =~ $positive_int_re ]] || (( value > 65535 )); then
    die_usage "$name must be a port number (1-65535), got '$value'"
  fi
done
for pair in "--machine_type:$machine_type" "--accelerator_type:$accelerator_type" \
  "--image_family:$image_family" "--image_project:$image_project" "--boot_disk_size:$boot_disk_size"; do
  name=${pair%%:*}
  value=${pair#*:}
  [[ $value =~ $plain_word_re ]] || die_usage "$name: unexpected value '$value'"
done
if [[ $have_trainer_args == 1 && $subcommand != start ]]; then
  die_usage "trainer flags (after --) are only for 'start'"
fi
case "$subcommand" in
  start|logs|stop) ;;
  *) [[ $evaluator == 0 ]] || die_usage "--evaluator is only for 'start', 'logs' and 'stop'" ;;
esac
if [[ $subcommand == start ]]; then
  [[ -n $model_dir ]] || die_usage "--model_dir is required for 'start' (a gs:// path every VM can write, e.g. gs://my-bucket/runs/imdb)"
  [[ $model_dir == gs://?* ]] || die_usage "--model_dir must be a gs:// path (shared by all workers), got '$model_dir'"
  [[ $model_dir =~ $plain_word_re ]] || die_usage "--model_dir: unexpected characters in '$model_dir'"
  mode="train_and_evaluate"  # trainer.main's default --mode; the last one given wins
  expect_mode=0
  for arg in ${trainer_args[@]+"${trainer_args[@]}"}; do
    if [[ $expect_mode == 1 ]]; then
      mode=$arg
      expect_mode=0
      continue
    fi
    case "$arg" in
      --strategy|--strategy=*|--worker_hosts|--worker_hosts=*|--task_index|--task_index=*|--model_dir|--model_dir=*)
        die_usage "the launcher sets --strategy, --model_dir and the cluster (TF_CONFIG) itself; drop $arg" ;;
      --mode=*) mode=${arg#*=} ;;
      --mode) expect_mode=1 ;;
    esac
  done
  if [[ $evaluator == 1 && $mode != train ]]; then
    echo "gcloud_cluster.sh: warning: with --evaluator the workers should run --mode=train, not --mode=$mode (the evaluator does the evaluation)" >&2
  fi
fi

cd "$(dirname "$0")/.."

require_gcloud

# --- helpers ----------------------------------------------------------------------------
scope=(--zone="$zone")
if [[ -n $project ]]; then
  scope+=(--project="$project")
fi

names=()
for ((i = 0; i < ${num_workers:-1}; i++)); do
  names+=("$name_prefix-$i")
done
chief=$name_prefix-0

ssh_cmd() {  # ssh_cmd VM REMOTE_COMMAND -> the gcloud argv, in the array ssh_argv
  ssh_argv=(gcloud compute ssh "$1" "${scope[@]}" --command="$2")
}

# Runs a command on the VM only while no process from its pid file is alive.
unless_running() {  # pid_file what command
  # shellcheck disable=SC2016  # $(...) is for the remote shell
  printf 'if [ -f %s ] && kill -0 "$(cat %s)" 2>/dev/null; then echo "%s already running (pid $(cat %s))"; else %s; fi' \
    "$1" "$1" "$2" "$1" "$3"
}

# --- subcommands ------------------------------------------------------------------------
cmd_up() {
  local create=(gcloud compute instances create "${names[@]}" "${scope[@]}"
    --machine-type="$machine_type"
    --image-family="$image_family" --image-project="$image_project"
    --boot-disk-size="$boot_disk_size"
    --maintenance-policy=TERMINATE
    --scopes=cloud-platform)
  if [[ $accelerator_count -gt 0 ]]; then
    create+=(--accelerator="type=$accelerator_type,count=$accelerator_count")
    if [[ $image_project == deeplearning-platform-release ]]; then
      create+=(--metadata=install-nvidia-driver=True)
    else
      # Google's installer reboots the VM more than once and has to be started again after each
      # reboot. The startup script runs at every boot, so it re-runs the installer until the
      # driver answers; checking only that an nvidia-smi binary exists would stop it half-way.
      create+=("--metadata=startup-script=if ! nvidia-smi >/dev/null 2>&1; then curl -fsSL https://storage.googleapis.com/compute-gpu-installation-us/installer/latest/cuda_installer.pyz -o /opt/cuda_installer.pyz && python3 /opt/cuda_installer.pyz install_driver; fi")
    fi
  fi
  run "${create[@]}"
}

# Polls nvidia-smi on every VM until it answers, for at most --driver_timeout seconds in all.
# Google's driver installer reboots a VM more than once before the driver works, and a reboot
# in the middle of the install below would cut it off.
wait_for_driver() {
  local vm waited start=$SECONDS
  for vm in "${names[@]}"; do
    # ConnectTimeout: a VM that is rebooting must not hold up one attempt for minutes.
    ssh_argv=(gcloud compute ssh "$vm" "${scope[@]}" --ssh-flag=-oConnectTimeout=10 --command="nvidia-smi -L")
    if [[ $dry_run == 1 ]]; then
      run "${ssh_argv[@]}"
      continue
    fi
    echo "gcloud_cluster.sh: waiting for the NVIDIA driver on $vm (nvidia-smi; at most ${driver_timeout} s in all, --driver_timeout)" >&2
    until run "${ssh_argv[@]}"; do
      waited=$((SECONDS - start))
      if ((waited >= driver_timeout)); then
        echo "gcloud_cluster.sh: the NVIDIA driver on $vm did not answer (nvidia-smi) within $driver_timeout s; the trainer was not installed." >&2
        echo "  The driver installer may still be running, or have failed: see its output with" >&2
        echo "  gcloud compute ssh $vm $(quote_words "${scope[@]}") --command='sudo journalctl -u google-startup-scripts.service --no-pager | tail -n 50'" >&2
        echo "  then run install again (a longer --driver_timeout waits longer; --accelerator_count 0 is for VMs without GPUs)." >&2
        exit 1
      fi
      echo "gcloud_cluster.sh: no answer from nvidia-smi on $vm yet ($waited s); trying again in $driver_poll s" >&2
      sleep "$driver_poll"
    done
  done
}

cmd_install() {
  local tf_pin cuda_step="" setup vm
  tf_pin=$(grep -E '^tensorflow==' constraints.txt || true)
  [[ -n $tf_pin ]] || { echo "gcloud_cluster.sh: no tensorflow== pin in constraints.txt" >&2; exit 1; }
  if [[ $accelerator_count -gt 0 ]]; then
    cuda_step=" && pip install -q -c constraints.txt 'tensorflow[and-cuda]==${tf_pin#tensorflow==}'"
  fi
  if [[ $dry_run == 0 && -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    echo "gcloud_cluster.sh: warning: uncommitted changes are not copied (git archive HEAD)" >&2
  fi
  if [[ $accelerator_count -gt 0 && $driver_timeout -gt 0 ]]; then
    wait_for_driver
  fi
  # `python3.11 -m venv --help` works without Debian's python3.11-venv package; creating the venv
  # does not, for lack of ensurepip. So test for ensurepip, install the package if it is missing,
  # and stop with a clear message if that did not help.
  setup="cd $remote_dir && { command -v python3.11 >/dev/null 2>&1 || { echo \"gcloud_cluster.sh: python3.11 not found on \$(hostname); use an image whose Python is 3.11 (--image_family debian-12)\" >&2; exit 1; }"
  setup+="; if ! python3.11 -c 'import ensurepip' >/dev/null 2>&1; then echo \"python3.11 on \$(hostname) has no ensurepip: installing python3.11-venv\"; sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3.11-venv; fi"
  setup+="; python3.11 -c 'import ensurepip' >/dev/null 2>&1 || { echo \"gcloud_cluster.sh: python3.11 on \$(hostname) cannot import ensurepip, which python3.11 -m venv needs, and apt-get did not install python3.11-venv; install it by hand (sudo apt-get install python3.11-venv) and run install again\" >&2; exit 1; }; }"
  setup+=" && python3.11 -m venv .venv && . .venv/bin/activate && pip install -q --upgrade pip"
  setup+=" && pip install -q -c constraints.txt -e . && pip install -q --no-deps -r requirements-offline.txt$cuda_step"
  setup+=" && python -c 'import tensorflow as tf; print(tf.__version__, tf.config.list_physical_devices(\"GPU\"))'"
  for vm in "${names[@]}"; do
    ssh_cmd "$vm" "mkdir -p $remote_dir && tar -x -C $remote_dir"
    if [[ $dry_run == 1 ]]; then
      printf 'git archive --format=tar HEAD | %s\n' "$(quote_words "${ssh_argv[@]}")"
    else
      printf '+ git archive --format=tar HEAD | %s\n' "$(quote_words "${ssh_argv[@]}")" >&2
      git archive --format=tar HEAD | "${ssh_argv[@]}"
    fi
    ssh_cmd "$vm" "$setup"
    run "${ssh_argv[@]}"
  done
}

cmd_start() {
  local cluster="" flags="" i tf_config launch tensorboard logs_opts
  for ((i = 0; i < num_workers; i++)); do
    cluster+="${cluster:+, }\"${names[$i]}:$port\""
  done
  flags=$(quote_words --strategy=multi_worker_mirrored --model_dir="$model_dir" ${trainer_args[@]+"${trainer_args[@]}"})
  for ((i = 0; i < num_workers; i++)); do
    tf_config="{\"cluster\": {\"worker\": [$cluster]}, \"task\": {\"type\": \"worker\", \"index\": $i}}"
    # One simple command before '&', so $! (saved for stop) is the trainer's own PID.
    launch="TF_CONFIG='$tf_config' nohup .venv/bin/python -m trainer.main $flags >> worker.log 2>&1 < /dev/null & echo \$! > worker.pid; echo \"worker $i started on \$(hostname), pid \$!, log $remote_dir/worker.log\""
    ssh_cmd "${names[$i]}" "cd $remote_dir && $(unless_running worker.pid "worker $i" "$launch")"
    run "${ssh_argv[@]}"
  done
  if [[ $evaluator == 1 ]]; then
    # Not in the workers' cluster, and on the chief's CPU at a lower priority: see --help.
    # nohup and nice exec the trainer, so $! is still its own PID.
    tf_config="{\"cluster\": {\"worker\": [$cluster]}, \"task\": {\"type\": \"evaluator\", \"index\": 0}}"
    launch="TF_CONFIG='$tf_config' CUDA_VISIBLE_DEVICES=-1 nohup nice -n 10 .venv/bin/python -m trainer.main $flags --mode=continuous_eval >> evaluator.log 2>&1 < /dev/null & echo \$! > evaluator.pid; echo \"evaluator started on \$(hostname), pid \$!, log $remote_dir/evaluator.log\""
    ssh_cmd "$chief" "cd $remote_dir && $(unless_running evaluator.pid evaluator "$launch")"
    run "${ssh_argv[@]}"
  fi
  tensorboard="nohup .venv/bin/tensorboard --logdir=$model_dir --host=localhost --port=$tensorboard_port >> tensorboard.log 2>&1 < /dev/null & echo \$! > tensorboard.pid"
  ssh_cmd "$chief" "cd $remote_dir && $(unless_running tensorboard.pid TensorBoard "$tensorboard")"
  run "${ssh_argv[@]}"
  if [[ $dry_run == 0 ]]; then
    logs_opts=""
    if [[ $evaluator == 1 ]]; then
      logs_opts=" --evaluator"
    fi
    echo "Started. Logs: launch/gcloud_cluster.sh logs --num_workers $num_workers $(quote_words "${scope[@]}")$logs_opts"
    echo "TensorBoard: launch/gcloud_cluster.sh tensorboard $(quote_words "${scope[@]}")"
  fi
}

cmd_logs() {
  local i tail_opts="-n +1" pids=() pid stream_vms=() stream_logs=() stream_prefixes=()
  if [[ $follow == 1 ]]; then
    tail_opts="-n +1 -F"
  fi
  # One stream per worker, and one for the evaluator on the chief with --evaluator.
  for ((i = 0; i < num_workers; i++)); do
    stream_vms+=("${names[$i]}")
    stream_logs+=(worker.log)
    stream_prefixes+=("worker $i")
  done
  if [[ $evaluator == 1 ]]; then
    stream_vms+=("$chief")
    stream_logs+=(evaluator.log)
    stream_prefixes+=(evaluator)
  fi
  if [[ $dry_run == 1 ]]; then
    for ((i = 0; i < ${#stream_vms[@]}; i++)); do
      ssh_cmd "${stream_vms[$i]}" "tail $tail_opts $remote_dir/${stream_logs[$i]}"
      ssh_argv+=(--ssh-flag=-n)
      printf '%s </dev/null\n' "$(quote_words "${ssh_argv[@]}")"
    done
    return
  fi
  # Each stream is its own job (and process group), so Ctrl-C can end gcloud, ssh and the reader together.
  # Under job control a background job keeps the terminal as stdin, and one that reads it is
  # stopped (SIGTTIN), which would end the stream: so no stream has a stdin (</dev/null, and
  # ssh -n for the ssh under gcloud).
  set -m
  for ((i = 0; i < ${#stream_vms[@]}; i++)); do
    ssh_cmd "${stream_vms[$i]}" "tail $tail_opts $remote_dir/${stream_logs[$i]}"
    ssh_argv+=(--ssh-flag=-n)
    printf '+ %s </dev/null\n' "$(quote_words "${ssh_argv[@]}")" >&2
    (
      prefix=${stream_prefixes[$i]}
      "${ssh_argv[@]}" </dev/null 2>&1 | while IFS= read -r line; do
        printf '[%s] %s\n' "$prefix" "$line"
      done
    ) </dev/null &
    pids+=("$!")
  done
  # shellcheck disable=SC2064  # the PIDs are fixed now
  trap "for pid in ${pids[*]}; do kill -TERM -- -\$pid 2>/dev/null || true; done; exit 130" INT TERM
  for pid in "${pids[@]}"; do
    wait "$pid" || true
  done
}

cmd_stop() {
  local i stop failed=0 evaluator_stop
  # On the chief, first the evaluator that start --evaluator may have left there (silent when
  # there is none); the worker's part comes last, so that its status is the command's.
  evaluator_stop="if [ -f evaluator.pid ] && kill -0 \"\$(cat evaluator.pid)\" 2>/dev/null; then kill -TERM \"\$(cat evaluator.pid)\" && echo \"evaluator: sent SIGTERM to pid \$(cat evaluator.pid)\"; fi; "
  for ((i = 0; i < num_workers; i++)); do
    stop="cd $remote_dir && "
    if [[ $i == 0 ]]; then
      stop+=$evaluator_stop
    fi
    stop+="if [ -f worker.pid ] && kill -0 \"\$(cat worker.pid)\" 2>/dev/null; then kill -TERM \"\$(cat worker.pid)\" && echo \"worker $i: sent SIGTERM to pid \$(cat worker.pid)\"; else echo \"worker $i: not running\"; fi"
    ssh_cmd "${names[$i]}" "$stop"
    run "${ssh_argv[@]}" || failed=1
  done
  return "$failed"
}

cmd_tensorboard() {
  local forward=(gcloud compute ssh "$chief" "${scope[@]}" -- -N -L "$local_port:localhost:$tensorboard_port")
  if [[ $dry_run == 1 ]]; then
    run "${forward[@]}"
    return
  fi
  echo "TensorBoard (started on $chief by 'start') -> http://localhost:$local_port/  (Ctrl-C ends the tunnel)"
  run "${forward[@]}"
}

cmd_down() {
  local delete=(gcloud compute instances delete "${names[@]}" "${scope[@]}")
  if [[ $yes == 1 ]]; then
    delete+=(--quiet)
  fi
  run "${delete[@]}"
}

"cmd_$subcommand"
