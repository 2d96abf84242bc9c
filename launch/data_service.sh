#!/usr/bin/env bash
# Runs a tf.data service on this machine over 127.0.0.1: one dispatcher and N workers
# (python -m trainer.data.service), each on its own port with its own log file, until
# Ctrl-C or SIGTERM. Trainers on this machine then tokenize through it with
# --config.data.service_address.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: launch/data_service.sh N [options]

Starts on 127.0.0.1, on free ports chosen by the OS:
  \${PYTHON:-python} -m trainer.data.service --role=dispatcher --port=P0 [--work_dir=DIR]
  \${PYTHON:-python} -m trainer.data.service --role=worker --dispatcher=127.0.0.1:P0 \\
      --port=Pi --worker_address=127.0.0.1:Pi                (i = 1..N)
waits until the dispatcher serves and every worker has registered with it, then prints
the flag for the trainer:
  data_service: ready: --config.data.service_address=grpc://127.0.0.1:P0
and keeps them running until Ctrl-C or SIGTERM.

Options:
  --log_dir DIR          one log per server, DIR/dispatcher.log and DIR/worker-<i>.log
                         (appended to). Default: a new temporary directory. Printed at start.
  --work_dir DIR         the dispatcher's journal directory: turns on its fault-tolerant
                         mode, so a restarted dispatcher recovers its datasets and jobs
  --grace_seconds S      after SIGTERM, how long the servers get to exit before they are
                         SIGKILLed (default 10)
  --start_timeout S      how long to wait for the dispatcher and every worker to be ready
                         (default 300; importing TensorFlow takes a while on a busy machine)
  -h, --help             this help

One worker (N=1) is the usual choice and the one that keeps every batch identical to
local input and in its order: a worker runs the input pipeline on all the cores of its
machine by itself. With more than one worker each batch still arrives exactly once,
but in the order the workers finish them, and a resumed run skips the batches it had
consumed on each worker: use N > 1 for throughput, not for reproducible runs.

Stopping and exit status:
  Ctrl-C or SIGTERM to the launcher sends SIGTERM to the dispatcher and every worker
  (they stop serving and exit 0), waits up to --grace_seconds, then SIGKILLs the
  survivors. If a server exits on its own (a crash, a port in use), the others are
  stopped the same way. Exit status: 0 after a requested stop with every server gone
  cleanly; 1 when the servers were not ready within --start_timeout, no free ports were
  found, or a server exited 0 on its own; otherwise the first failing server's status
  (2: bad flag or port in use, 137: SIGKILLed). 2 also for a bad launcher option. Servers
  are signalled by their own PIDs only. A one-line summary per server (exit status, log)
  is printed at the end.

The script runs from the repository root (python -m trainer.data.service must import the
trainer package); a relative --log_dir or --work_dir is relative to where you run it.

Other machines (the trainers reach them by name or IP; each needs this repository and
the same TensorFlow and tensorflow-text versions installed, and the ports open):
  dispatcher machine:
    python -m trainer.data.service --role=dispatcher --port=5050 [--work_dir=DIR]
  each worker machine (one worker per machine: it uses all of that machine's cores):
    python -m trainer.data.service --role=worker --dispatcher=DISPATCHER_HOST:5050 \\
        --port=5051 --worker_address=THIS_HOST:5051
  every trainer:
    python -m trainer.main ... --config.data.service_address=grpc://DISPATCHER_HOST:5050
  --worker_address is the name the dispatcher hands to the trainers; the default is the
  worker machine's host name. Stop each server with SIGTERM or Ctrl-C (exit 0).

Environment:
  PYTHON   interpreter for the servers and the port lookup (default: python)

Example (a dispatcher and one worker here, a trainer beside them):
  launch/data_service.sh 1 --log_dir runs/data_service_logs &
  python -m trainer.main --config=configs/minilm_imdb.py \\
      --config.data.service_address=grpc://127.0.0.1:<port printed above>
USAGE
}

tag=data_service
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
work_dir=""
grace=10
start_timeout=300
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --log_dir) [[ $# -ge 2 ]] || die_usage "--log_dir needs a value"; log_dir=$2; shift 2 ;;
    --log_dir=*) log_dir=${1#*=}; shift ;;
    --work_dir) [[ $# -ge 2 ]] || die_usage "--work_dir needs a value"; work_dir=$2; shift 2 ;;
    --work_dir=*) work_dir=${1#*=}; shift ;;
    --grace_seconds) [[ $# -ge 2 ]] || die_usage "--grace_seconds needs a value"; grace=$2; shift 2 ;;
    --grace_seconds=*) grace=${1#*=}; shift ;;
    --start_timeout) [[ $# -ge 2 ]] || die_usage "--start_timeout needs a value"; start_timeout=$2; shift 2 ;;
    --start_timeout=*) start_timeout=${1#*=}; shift ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
done

is_positive_int "$grace" || die_usage "--grace_seconds must be a positive integer, got '$grace'"
is_positive_int "$start_timeout" || die_usage "--start_timeout must be a positive integer, got '$start_timeout'"
if [[ -n $work_dir && $work_dir == *://* ]]; then
  : # A remote file system path (gs://...): TensorFlow's file system takes it as is.
elif [[ -n $work_dir && $work_dir != /* ]]; then
  work_dir="$PWD/$work_dir"
fi

PYTHON=${PYTHON:-python}
command -v "$PYTHON" >/dev/null 2>&1 || die_usage "no Python interpreter '$PYTHON' (set PYTHON)"

# A user-given log dir is relative to the caller; resolve it before moving to the repo root.
if [[ -n $log_dir && $log_dir != /* ]]; then
  log_dir="$PWD/$log_dir"
fi
cd "$(dirname "$0")/.."
if [[ -z $log_dir ]]; then
  log_dir=$(mktemp -d "${TMPDIR:-/tmp}/data_service.XXXXXX")
fi
mkdir -p "$log_dir"

free_ports $((num_workers + 1))
dispatcher_address="127.0.0.1:${ports[0]}"
ready=0
exit_status=0
meaning_of_2="user error: bad flag or port in use"
meaning_of_143="stopped by SIGTERM"

who_is_running() { echo "servers"; }

# Every server logs "tf.data service <role> ready at" once it serves (a worker: once registered).
check_ready() {
  local i
  grep -q "tf.data service dispatcher ready at" "${logs[0]}" 2>/dev/null || return 1
  for ((i = 1; i <= num_workers; i++)); do
    grep -q "tf.data service worker ready at" "${logs[$i]}" 2>/dev/null || return 1
  done
}

ticking() { [[ $ready == 0 && $stopping == 0 ]]; }

on_tick() {
  if [[ $stopping == 1 ]]; then
    return
  elif check_ready; then
    ready=1
    echo "data_service: ready after $((SECONDS - started_at))s: dispatcher and $num_workers worker(s) serving;" \
      "stop with Ctrl-C or SIGTERM (pid $$)"
    echo "data_service: ready: --config.data.service_address=grpc://$dispatcher_address"
  elif (( SECONDS - started_at >= start_timeout )); then
    echo "data_service: not ready within --start_timeout=${start_timeout}s; see the logs in $log_dir" >&2
    exit_status=1
    stop_all "start timeout"
  fi
}

on_process_exit() {
  local index=$1 status=$2
  if [[ $stopping == 0 ]]; then
    echo "data_service: ${names[$index]} exited on its own with status $status (log ${logs[$index]})" >&2
    exit_status=$(( status == 0 ? 1 : status ))
    stop_all "${names[$index]} exited"
  elif [[ $status -ne 0 && $status -ne 143 && $exit_status -eq 0 ]]; then
    # 143: our SIGTERM arrived before the server had installed its handler; that is a stop as asked.
    exit_status=$status
  fi
}

# start_server NAME LOG PORT FLAGS...: one `python -m trainer.data.service FLAGS...`.
start_server() {
  local name=$1 log=$2 port=$3
  shift 3
  printf '=== %s data_service %s: trainer.data.service %s\n' "$(date -Is)" "$name" "$*" >>"$log"
  start_process "$name" "$log" "127.0.0.1:$port" env PYTHONUNBUFFERED=1 "$PYTHON" -m trainer.data.service "$@"
}

if (( num_workers > 1 )); then
  echo "data_service: warning: with $num_workers workers batches reach the trainer in the order the workers" \
    "finish them, and a resume is not exact (see --help)" >&2
fi
echo "data_service: dispatcher at $dispatcher_address and $num_workers worker(s) at 127.0.0.1 ports" \
  "${ports[*]:1}; logs in $log_dir"
handle_signals
start_server dispatcher "$log_dir/dispatcher.log" "${ports[0]}" --role=dispatcher --port="${ports[0]}" \
  ${work_dir:+"--work_dir=$work_dir"}
for ((i = 1; i <= num_workers; i++)); do
  start_server "worker $i" "$log_dir/worker-$i.log" "${ports[$i]}" --role=worker \
    --dispatcher="$dispatcher_address" --port="${ports[$i]}" --worker_address="127.0.0.1:${ports[$i]}"
done
for ((i = 0; i <= num_workers; i++)); do
  echo "data_service: ${names[$i]} pid ${pids[$i]} 127.0.0.1:${ports[$i]} log ${logs[$i]}"
done
started_at=$SECONDS

supervise
print_summary
exit "$exit_status"
