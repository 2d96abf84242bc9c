#!/usr/bin/env bash
# Runs an N-worker MultiWorkerMirroredStrategy cluster on this machine over 127.0.0.1:
# one trainer process per worker, each with its own TF_CONFIG, port and log file.
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
  -h, --help                this help

Stopping and exit status:
  Ctrl-C or SIGTERM to the launcher sends SIGTERM to every worker (they save a checkpoint
  and exit 143), waits up to --grace_seconds, then SIGKILLs the survivors. If a worker exits
  non-zero, the others are stopped the same way and the launcher exits with that worker's
  status (143: preempted, rerun the same command to resume; 2: bad flag, config or data).
  All workers exit 0: the launcher exits 0. Workers are signalled by their own PIDs only.
  A one-line summary per worker (exit status, log) is printed at the end.

The script runs from the repository root, so relative --model_dir and --config paths are
relative to it (as with launch/local_gpus.sh); a relative --log_dir is relative to where
you run the launcher.

Environment:
  PYTHON                    interpreter for the workers and the port lookup (default: python)
  LOCAL_CLUSTER_WORKER_CMD  for testing the launcher: a bash command run by
                            'bash -c' instead of trainer.main for each worker, with the trainer
                            flags as its arguments; start it with 'exec' so that the signalled
                            PID is the worker itself.

Example (2 workers, 1 core each, pinned):
  launch/local_cluster.sh 2 --threads_per_worker 1 --pin \\
      --config=configs/minilm_imdb.py --config.data.path=aclImdb_v1.tar.gz --model_dir=runs/mw
USAGE
}

die_usage() {
  echo "local_cluster.sh: $*" >&2
  echo "Run launch/local_cluster.sh --help for usage." >&2
  exit 2
}

is_positive_int() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }

# `wait -n -p` (which worker finished) needs bash 5.1.
if (( BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1) )); then
  echo "local_cluster.sh: needs bash >= 5.1, this is $BASH_VERSION" >&2
  exit 2
fi

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
expect_model_dir=0
for arg in "${trainer_args[@]}"; do
  if [[ $expect_model_dir == 1 ]]; then
    model_dir=$arg
    expect_model_dir=0
    continue
  fi
  case "$arg" in
    --strategy|--strategy=*|--worker_hosts|--worker_hosts=*|--task_index|--task_index=*)
      die_usage "the launcher sets the strategy and the cluster (TF_CONFIG) itself; drop $arg" ;;
    --model_dir=*) model_dir=${arg#*=} ;;
    --model_dir) expect_model_dir=1 ;;
  esac
done

PYTHON=${PYTHON:-python}
command -v "$PYTHON" >/dev/null 2>&1 || die_usage "no Python interpreter '$PYTHON' (set PYTHON)"

cpus=()
if [[ $pin == 1 ]]; then
  command -v taskset >/dev/null 2>&1 || die_usage "--pin needs taskset (util-linux)"
  read -r -a cpus < <("$PYTHON" -c 'import os; print(*sorted(os.sched_getaffinity(0)))')
  if (( num_workers > ${#cpus[@]} )); then
    die_usage "--pin: $num_workers workers but only ${#cpus[@]} CPU core(s) available"
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

# All sockets stay bound until every port is chosen, so the N ports are distinct.
ports=()
mapfile -t ports < <("$PYTHON" -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))
' "$num_workers")
if [[ ${#ports[@]} -ne $num_workers ]]; then
  echo "local_cluster.sh: could not get $num_workers free ports from the OS" >&2
  exit 1
fi

cluster_json='{"worker": ['
separator=""
for port in "${ports[@]}"; do
  cluster_json+="$separator\"127.0.0.1:$port\""
  separator=", "
done
cluster_json+="]}"

if [[ -n ${LOCAL_CLUSTER_WORKER_CMD:-} ]]; then
  worker_cmd=(bash -c "$LOCAL_CLUSTER_WORKER_CMD" local_cluster_worker "${trainer_args[@]}")
else
  worker_cmd=("$PYTHON" -m trainer.main --strategy=multi_worker_mirrored "${trainer_args[@]}")
fi

declare -A running=()    # pid -> worker index, for workers not yet reaped by `wait`
pids=()
statuses=()
logs=()
stopping=0
timer_pid=""
exit_status=0

# SIGTERM to every worker still running, then a grace timer (a `sleep` child that `wait -n` sees finish).
stop_workers() {
  local pid
  if [[ $stopping == 1 ]]; then
    return
  fi
  stopping=1
  echo "local_cluster: $1: sending SIGTERM to the running workers (grace ${grace}s)" >&2
  for pid in "${!running[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  sleep "$grace" &
  timer_pid=$!
}

kill_workers() {
  local pid
  for pid in "${!running[@]}"; do
    echo "local_cluster: worker ${running[$pid]} (pid $pid) still running: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# shellcheck disable=SC2329  # invoked by the INT/TERM traps
on_signal() {
  if [[ $stopping == 1 ]]; then
    echo "local_cluster: $1 again: not waiting any longer" >&2
    kill_workers
  else
    stop_workers "launcher got $1"
  fi
}

# Safety net: if this script dies early, its workers must not be left behind.
# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
  local pid
  for pid in "${!running[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  if [[ -n $timer_pid ]]; then
    kill "$timer_pid" 2>/dev/null || true
  fi
}

trap 'on_signal SIGINT' INT
trap 'on_signal SIGTERM' TERM
trap cleanup EXIT

echo "local_cluster: $num_workers worker(s) at 127.0.0.1 ports ${ports[*]}; logs in $log_dir"
for ((i = 0; i < num_workers; i++)); do
  tf_config="{\"cluster\": $cluster_json, \"task\": {\"type\": \"worker\", \"index\": $i}}"
  env_vars=("TF_CONFIG=$tf_config" PYTHONUNBUFFERED=1)
  if [[ -n $threads ]]; then
    env_vars+=("TF_NUM_INTRAOP_THREADS=$threads" "TF_NUM_INTEROP_THREADS=$threads")
  fi
  pin_cmd=()
  if [[ $pin == 1 ]]; then
    pin_cmd=(taskset -c "${cpus[$i]}")
  fi
  log="$log_dir/worker-$i.log"
  logs+=("$log")
  printf '=== %s local_cluster worker %d TF_CONFIG=%s\n' "$(date -Is)" "$i" "$tf_config" >>"$log"
  # env and taskset exec the worker, so $! is the worker's own PID.
  env "${env_vars[@]}" "${pin_cmd[@]}" "${worker_cmd[@]}" >>"$log" 2>&1 </dev/null &
  pids+=("$!")
  running[$!]=$i
  statuses+=("")
  echo "local_cluster: worker $i pid $! 127.0.0.1:${ports[$i]}${pin_cmd[*]:+ on CPU ${cpus[$i]}}"
done
echo "local_cluster: follow the chief with: tail -f $log_dir/worker-0.log"

record_exit() {
  local pid=$1 status=$2 index
  index=${running[$pid]}
  unset "running[$pid]"
  statuses[index]=$status
  if [[ $status -ne 0 ]]; then
    if [[ $exit_status -eq 0 ]]; then
      exit_status=$status
    fi
    stop_workers "worker $index exited with status $status"
  fi
}

grace_over() {
  timer_pid=""
  echo "local_cluster: grace period of ${grace}s is over" >&2
  kill_workers
}

# bash drops a job killed by a signal from its job table once it has reported it, and
# `wait -n` then fails with 127 for it; plain `wait PID` still returns its saved status.
collect_vanished() {
  local pid status
  for pid in "${!running[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      if wait "$pid" 2>/dev/null; then status=0; else status=$?; fi
      record_exit "$pid" "$status"
    fi
  done
  if [[ -n $timer_pid ]] && ! kill -0 "$timer_pid" 2>/dev/null; then
    wait "$timer_pid" 2>/dev/null || true
    grace_over
  fi
}

while [[ ${#running[@]} -gt 0 ]]; do
  finished=""
  if wait -n -p finished "${!running[@]}" ${timer_pid:+"$timer_pid"} 2>/dev/null; then
    status=0
  else
    status=$?
  fi
  if [[ -n ${finished:-} && $finished == "$timer_pid" ]]; then
    grace_over
  elif [[ -n ${finished:-} ]]; then
    record_exit "$finished" "$status"
  elif [[ $status -eq 127 ]]; then
    before=${#running[@]}
    collect_vanished
    if [[ ${#running[@]} -eq $before ]]; then
      sleep 0.1  # nothing collected: do not spin
    fi
  fi
  # Otherwise a trapped signal interrupted `wait`, and the trap has already acted.
done

if [[ -n $timer_pid ]]; then
  kill "$timer_pid" 2>/dev/null || true
  wait "$timer_pid" 2>/dev/null || true
  timer_pid=""
fi

describe() {
  case "$1" in
    0) echo "ok" ;;
    2) echo "user error: bad flag, config or data" ;;
    137) echo "killed by SIGKILL" ;;
    143) echo "stopped by SIGTERM (preempted): rerun the same command to resume" ;;
    *) echo "failed" ;;
  esac
}

for ((i = 0; i < num_workers; i++)); do
  printf 'local_cluster: worker %d pid %s 127.0.0.1:%s exit %s (%s) log %s\n' \
    "$i" "${pids[$i]}" "${ports[$i]}" "${statuses[$i]}" "$(describe "${statuses[$i]}")" "${logs[$i]}"
done
exit "$exit_status"
