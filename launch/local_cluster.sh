#!/usr/bin/env bash
# Runs an N-worker MultiWorkerMirroredStrategy cluster on this machine over 127.0.0.1:
# one trainer process per worker, each with its own TF_CONFIG, port and log file; with
# --evaluator, also a continuous evaluator (--mode=continuous_eval) beside them.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: launch/local_cluster.sh N [options] [--] [trainer.main flags...]

Starts N workers on 127.0.0.1, each running
  \${PYTHON:-python} -m trainer.main --strategy=multi_worker_mirrored [trainer.main flags...]
with its own TF_CONFIG ({"cluster": {"worker": [all N addresses]}, "task": {"type": "worker",
"index": i}}) on free ports chosen by the OS. Worker 0 is the chief.

Options (before the trainer flags; the first argument that is not one of them, or
everything after "--", goes to trainer.main):
  --log_dir DIR             one log per worker, DIR/worker-<i>.log (appended to). Default:
                            <--model_dir>/worker_logs when --model_dir is a local path,
                            otherwise a new temporary directory. Printed at start.
  --threads_per_worker K    set TF_NUM_INTRAOP_THREADS and TF_NUM_INTEROP_THREADS to K for
                            each worker (default: TensorFlow's choice, every core per worker)
  --pin                     pin worker i to CPU core i with taskset, for benchmarks (the
                            i-th core this launcher may run on); needs N <= that many cores
  --grace_seconds S         after SIGTERM, how long workers get to checkpoint and exit
                            before they are SIGKILLed (default 60)
  --evaluator               also start one continuous evaluator on 127.0.0.1 (see below)
  -h, --help                this help

The evaluator (--evaluator):
  One more process, running the same command and trainer flags with --mode=continuous_eval
  appended (the trainer takes a flag's last value, so this overrides any --mode given), and
  the TF_CONFIG {"cluster": <the workers' cluster>, "task": {"type": "evaluator", "index": 0}}.
  It joins no collective: it evaluates each new checkpoint in --model_dir on this machine's
  devices and writes the eval/ summaries; with --config.train.best_metric it keeps best/ and
  exports the best model to export/ at the end. It exits 0 after evaluating the final step's
  checkpoint (or after --eval_timeout_seconds without a new one). A checkpoint written while
  it is busy with an older one can be skipped: it always takes the newest. The workers should then run --mode=train (training without evaluation); the
  launcher warns when their last --mode is another one. Every TF_CONFIG cluster, the
  workers' included, also lists "evaluator": ["127.0.0.1:<port>"], as Kubeflow's operator
  does for a TFJob with an Evaluator replica; nothing listens on that port, and the workers'
  collectives use only the "worker" job. Its log is <log_dir>/evaluator.log.
  --threads_per_worker K applies to the evaluator too. With --pin, the evaluator is pinned
  to every core the workers were not (so N + 1 cores are needed).

Stopping and exit status:
  Ctrl-C or SIGTERM to the launcher sends SIGTERM to every worker (they save a checkpoint
  and exit 143), waits up to --grace_seconds, then SIGKILLs the survivors. If a worker exits
  non-zero, the others are stopped the same way and the launcher exits with that worker's
  status (143: preempted, rerun the same command to resume; 2: bad flag, config or data).
  All workers exit 0: the launcher exits 0. Workers are signalled by their own PIDs only.
  A one-line summary per worker (exit status, log) is printed at the end.
  With --evaluator: the evaluator's exit never stops the workers. Ctrl-C, SIGTERM or a
  failed worker stops the evaluator together with the workers (same SIGTERM, grace period
  and SIGKILL). When every worker has exited 0, the launcher waits for the evaluator to
  evaluate the final checkpoint. The evaluator gets a summary line of its own; a failed
  evaluator is reported as soon as it exits (the workers go on), and if the workers all
  exited 0 the launcher then exits with the evaluator's status, so that a run whose
  evaluation failed does not look successful. Otherwise the status is the workers'.

The script runs from the repository root, so relative --model_dir and --config paths are
relative to it (as with launch/local_gpus.sh); a relative --log_dir is relative to where
you run the launcher.

Environment:
  PYTHON                    interpreter for the workers and the port lookup (default: python)
  LOCAL_CLUSTER_WORKER_CMD  for testing the launcher: a bash command run by
                            'bash -c' instead of trainer.main for each worker (and the
                            evaluator, with --mode=continuous_eval appended), with the trainer
                            flags as its arguments; start it with 'exec' so that the signalled
                            PID is the worker itself.

Example (2 workers, 1 core each, pinned):
  launch/local_cluster.sh 2 --threads_per_worker 1 --pin \\
      --config=configs/minilm_imdb.py --config.data.path=aclImdb_v1.tar.gz --model_dir=runs/mw
Example (1 worker training, an evaluator beside it):
  launch/local_cluster.sh 1 --evaluator -- --mode=train \\
      --config=configs/minilm_imdb.py --config.data.path=aclImdb_v1.tar.gz --model_dir=runs/ce
USAGE
}

tag=local_cluster
# No `dirname`: a --dry-run must work on a PATH without coreutils.
launch_dir=${BASH_SOURCE[0]%/*}
[[ $launch_dir == "${BASH_SOURCE[0]}" ]] && launch_dir=.
# shellcheck source=launch/lib/common.sh
source "$launch_dir/lib/common.sh"
# shellcheck source=launch/lib/processes.sh
source "$launch_dir/lib/processes.sh"

if [[ $# -eq 0 ]]; then
  die_usage "missing N, the number of workers"
fi
case "$1" in
  -h|--help) usage; exit 0 ;;
esac
num_workers=$1
shift
is_positive_int "$num_workers" || die_usage "N must be a positive integer, got '$num_workers'"

log_dir=""
threads=""
pin=0
grace=60
evaluator=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --log_dir) [[ $# -ge 2 ]] || die_usage "--log_dir needs a value"; log_dir=$2; shift 2 ;;
    --log_dir=*) log_dir=${1#*=}; shift ;;
    --threads_per_worker) [[ $# -ge 2 ]] || die_usage "--threads_per_worker needs a value"; threads=$2; shift 2 ;;
    --threads_per_worker=*) threads=${1#*=}; shift ;;
    --grace_seconds) [[ $# -ge 2 ]] || die_usage "--grace_seconds needs a value"; grace=$2; shift 2 ;;
    --grace_seconds=*) grace=${1#*=}; shift ;;
    --pin) pin=1; shift ;;
    --evaluator) evaluator=1; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
trainer_args=("$@")

if [[ -n $threads ]] && ! is_positive_int "$threads"; then
  die_usage "--threads_per_worker must be a positive integer, got '$threads'"
fi
is_positive_int "$grace" || die_usage "--grace_seconds must be a positive integer, got '$grace'"

model_dir=""
mode="train_and_evaluate"  # trainer.main's default --mode; the last one given wins
expect_value=""
for arg in "${trainer_args[@]}"; do
  case "$expect_value" in
    model_dir) model_dir=$arg; expect_value=""; continue ;;
    mode) mode=$arg; expect_value=""; continue ;;
  esac
  case "$arg" in
    --strategy|--strategy=*|--worker_hosts|--worker_hosts=*|--task_index|--task_index=*)
      die_usage "the launcher sets the strategy and the cluster (TF_CONFIG) itself; drop $arg" ;;
    --model_dir=*) model_dir=${arg#*=} ;;
    --model_dir) expect_value=model_dir ;;
    --mode=*) mode=${arg#*=} ;;
    --mode) expect_value=mode ;;
  esac
done
if [[ $evaluator == 1 && $mode != train ]]; then
  echo "local_cluster.sh: warning: with --evaluator the workers should run --mode=train, not --mode=$mode" \
    "(the evaluator does the evaluation)" >&2
fi

PYTHON=${PYTHON:-python}
command -v "$PYTHON" >/dev/null 2>&1 || die_usage "no Python interpreter '$PYTHON' (set PYTHON)"

cpus=()
if [[ $pin == 1 ]]; then
  command -v taskset >/dev/null 2>&1 || die_usage "--pin needs taskset (util-linux)"
  read -r -a cpus < <("$PYTHON" -c 'import os; print(*sorted(os.sched_getaffinity(0)))')
  if (( num_workers > ${#cpus[@]} )); then
    die_usage "--pin: $num_workers workers but only ${#cpus[@]} CPU core(s) available"
  fi
  if (( evaluator == 1 && num_workers >= ${#cpus[@]} )); then
    die_usage "--pin --evaluator: $num_workers workers and the evaluator need $((num_workers + 1)) CPU cores, only ${#cpus[@]} available"
  fi
fi

# A user-given log dir is relative to the caller; resolve it before moving to the repo root.
if [[ -n $log_dir && $log_dir != /* ]]; then
  log_dir="$PWD/$log_dir"
fi
cd "$(dirname "$0")/.."
if [[ -z $log_dir ]]; then
  if [[ -n $model_dir && $model_dir != *://* ]]; then
    log_dir="$model_dir/worker_logs"
  else
    log_dir=$(mktemp -d "${TMPDIR:-/tmp}/local_cluster.XXXXXX")
  fi
fi
mkdir -p "$log_dir"

# With --evaluator the last port is the evaluator's address in the cluster (nothing listens on it).
free_ports $((num_workers + evaluator))

cluster_json='{"worker": ['
separator=""
for ((i = 0; i < num_workers; i++)); do
  cluster_json+="$separator\"127.0.0.1:${ports[$i]}\""
  separator=", "
done
cluster_json+="]"
# Every task gets the same cluster, the evaluator listed in it, as Kubeflow's operator does
# for a TFJob with an Evaluator replica. Checked by a real run: MultiWorkerMirroredStrategy
# workers still form their cluster and train with this entry (their collectives and the join
# watchdog use only the "worker" job), and the evaluator joins nothing.
if [[ $evaluator == 1 ]]; then
  cluster_json+=", \"evaluator\": [\"127.0.0.1:${ports[$num_workers]}\"]"
fi
cluster_json+="}"

if [[ -n ${LOCAL_CLUSTER_WORKER_CMD:-} ]]; then
  worker_cmd=(bash -c "$LOCAL_CLUSTER_WORKER_CMD" local_cluster_worker "${trainer_args[@]}")
else
  worker_cmd=("$PYTHON" -m trainer.main --strategy=multi_worker_mirrored "${trainer_args[@]}")
fi

eval_index=""       # the evaluator's process index, with --evaluator
exit_status=0
meaning_of_2="user error: bad flag, config or data"
meaning_of_143="stopped by SIGTERM (preempted): rerun the same command to resume"

who_is_running() {
  if [[ -n $eval_index && -z ${statuses[eval_index]} ]]; then
    echo "workers and the evaluator"
  else
    echo "workers"
  fi
}

workers_running() {
  local pid
  for pid in "${!running[@]}"; do
    [[ ${running[$pid]} == "$eval_index" ]] || return 0
  done
  return 1
}

on_process_exit() {
  local index=$1 status=$2
  if [[ $index == "$eval_index" ]]; then
    # The evaluator's end, failed or not, never stops the workers.
    if [[ $status -ne 0 && $stopping == 0 ]]; then
      echo "local_cluster: the evaluator exited with status $status; the workers go on (log ${logs[index]})" >&2
    fi
    return
  fi
  if [[ $status -ne 0 ]]; then
    if [[ $exit_status -eq 0 ]]; then
      exit_status=$status
    fi
    stop_all "worker $index exited with status $status"
  elif [[ -n $eval_index && -z ${statuses[eval_index]} && $stopping == 0 ]] && ! workers_running; then
    echo "local_cluster: every worker is done; waiting for the evaluator to evaluate the final checkpoint" \
      "(tail -f ${logs[eval_index]})"
  fi
}

handle_signals
echo "local_cluster: $num_workers worker(s) at 127.0.0.1 ports ${ports[*]:0:$num_workers}; logs in $log_dir"
# env_for TF_CONFIG: the environment of a worker or the evaluator, into `env_vars`.
env_for() {
  env_vars=("TF_CONFIG=$1" PYTHONUNBUFFERED=1)
  if [[ -n $threads ]]; then
    env_vars+=("TF_NUM_INTRAOP_THREADS=$threads" "TF_NUM_INTEROP_THREADS=$threads")
  fi
}
for ((i = 0; i < num_workers; i++)); do
  tf_config="{\"cluster\": $cluster_json, \"task\": {\"type\": \"worker\", \"index\": $i}}"
  env_for "$tf_config"
  pin_cmd=()
  if [[ $pin == 1 ]]; then
    pin_cmd=(taskset -c "${cpus[$i]}")
  fi
  log="$log_dir/worker-$i.log"
  printf '=== %s local_cluster worker %d TF_CONFIG=%s\n' "$(date -Is)" "$i" "$tf_config" >>"$log"
  start_process "worker $i" "$log" "127.0.0.1:${ports[$i]}" env "${env_vars[@]}" "${pin_cmd[@]}" "${worker_cmd[@]}"
  echo "local_cluster: worker $i pid ${pids[i]} 127.0.0.1:${ports[$i]}${pin_cmd[*]:+ on CPU ${cpus[$i]}}"
done
if [[ $evaluator == 1 ]]; then
  tf_config="{\"cluster\": $cluster_json, \"task\": {\"type\": \"evaluator\", \"index\": 0}}"
  env_for "$tf_config"
  pin_cmd=()
  if [[ $pin == 1 ]]; then
    eval_cpus=$(IFS=,; echo "${cpus[*]:$num_workers}")
    pin_cmd=(taskset -c "$eval_cpus")
  fi
  log="$log_dir/evaluator.log"
  printf '=== %s local_cluster evaluator TF_CONFIG=%s\n' "$(date -Is)" "$tf_config" >>"$log"
  eval_index=$num_workers
  # Appended last: trainer.main takes the last --mode, whatever the trainer flags say.
  start_process evaluator "$log" "" env "${env_vars[@]}" "${pin_cmd[@]}" "${worker_cmd[@]}" --mode=continuous_eval
  echo "local_cluster: evaluator pid ${pids[eval_index]} (--mode=continuous_eval)${pin_cmd[*]:+ on CPU $eval_cpus}" \
    "log $log"
fi
echo "local_cluster: follow the chief with: tail -f $log_dir/worker-0.log"

supervise
print_summary
if [[ -n $eval_index ]]; then
  eval_status=${statuses[eval_index]}
  if [[ $exit_status -eq 0 && $eval_status -ne 0 ]]; then
    echo "local_cluster: the workers succeeded but the evaluator failed: exiting with its status, $eval_status" >&2
    exit_status=$eval_status
  fi
fi
exit "$exit_status"
