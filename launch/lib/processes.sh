# shellcheck shell=bash disable=SC2154  # tag, grace, meaning_of_*: the sourcing script's
# Process supervision shared by the launchers that run several local processes
# (local_cluster.sh, data_service.sh), after lib/common.sh: free ports, starting processes with
# their own logs, waiting for any of them to end, SIGTERM to all on a stop with a grace
# period and SIGKILL after it, and one summary line per process.
#
# The sourcing script sets, before sourcing:
#   tag                 the prefix of its messages (its name without .sh)
# and before calling supervise:
#   grace               seconds between SIGTERM and SIGKILL
#   meaning_of_2, meaning_of_143
#                       what exit statuses 2 and 143 mean for its processes (the summary)
# It defines the hook
#   on_process_exit INDEX STATUS   what the end of process INDEX means (once per process)
# and may define
#   who_is_running      the running processes, for the stop message (default: "processes")
#   ticking / on_tick   while `ticking` succeeds, on_tick runs every half second
# and calls handle_signals, start_process for each process, supervise, print_summary.

# `wait -n -p` (which process ended) needs bash 5.1.
if (( BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1) )); then
  echo "$tag.sh: needs bash >= 5.1, this is $BASH_VERSION" >&2
  exit 2
fi

# free_ports N: N distinct free TCP ports on 127.0.0.1 into the array `ports`. All sockets
# stay bound until every port is chosen, so the ports are distinct.
free_ports() {
  ports=()
  mapfile -t ports < <("$PYTHON" -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))
' "$1")
  if [[ ${#ports[@]} -ne $1 ]]; then
    echo "$tag: could not get $1 free ports from the OS" >&2
    exit 1
  fi
}

declare -A running=()   # pid -> process index, until reaped
names=()                # per process: its name in messages ("worker 1"),
pids=()                 # its pid,
addresses=()            # the address it serves ("" if none),
logs=()                 # its log file
statuses=()             # and its exit status, once it has ended
stopping=0
timer_pid=""            # the grace period's `sleep`
ticker_pid=""           # a short `sleep` that wakes the wait loop for on_tick

who_is_running() { echo "processes"; }
ticking() { return 1; }
on_tick() { :; }

# start_process NAME LOG ADDRESS COMMAND...: runs COMMAND in the background, its output
# appended to LOG. COMMAND must exec the process (env, taskset and python do), so that the
# PID signalled is the process's own.
start_process() {
  names+=("$1")
  logs+=("$2")
  addresses+=("$3")
  statuses+=("")
  shift 3
  "$@" >>"${logs[-1]}" 2>&1 </dev/null &
  pids+=("$!")
  running[$!]=$(( ${#names[@]} - 1 ))
}

# SIGTERM to every process still running, then the grace timer (a `sleep` child that the
# wait loop sees finish).
stop_all() {
  local pid
  if [[ $stopping == 1 ]]; then
    return
  fi
  stopping=1
  echo "$tag: $1: sending SIGTERM to the running $(who_is_running) (grace ${grace}s)" >&2
  for pid in "${!running[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  sleep "$grace" &
  timer_pid=$!
}

kill_all() {
  local pid
  for pid in "${!running[@]}"; do
    echo "$tag: ${names[${running[$pid]}]} (pid $pid) still running: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# shellcheck disable=SC2329  # invoked by the INT/TERM traps
on_signal() {
  if [[ $stopping == 1 ]]; then
    echo "$tag: $1 again: not waiting any longer" >&2
    kill_all
  else
    stop_all "launcher got $1"
  fi
}

# Safety net: if the launcher dies early, its processes must not be left behind.
# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
  local pid
  for pid in "${!running[@]}" ${timer_pid:+"$timer_pid"} ${ticker_pid:+"$ticker_pid"}; do
    kill -TERM "$pid" 2>/dev/null || true
  done
}

# Called once, before the first start_process.
handle_signals() {
  trap 'on_signal SIGINT' INT
  trap 'on_signal SIGTERM' TERM
  trap cleanup EXIT
}

process_ended() {
  local index=${running[$1]}
  unset "running[$1]"
  statuses[index]=$2
  on_process_exit "$index" "$2"
}

grace_over() {
  timer_pid=""
  echo "$tag: grace period of ${grace}s is over" >&2
  kill_all
}

# bash drops a job killed by a signal from its job table once it has reported it, and
# `wait -n` then fails with 127 for it; plain `wait PID` still returns its saved status.
collect_vanished() {
  local pid status
  for pid in "${!running[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      if wait "$pid" 2>/dev/null; then status=0; else status=$?; fi
      process_ended "$pid" "$status"
    fi
  done
  if [[ -n $timer_pid ]] && ! kill -0 "$timer_pid" 2>/dev/null; then
    wait "$timer_pid" 2>/dev/null || true
    grace_over
  fi
  if [[ -n $ticker_pid ]] && ! kill -0 "$ticker_pid" 2>/dev/null; then
    wait "$ticker_pid" 2>/dev/null || true
    ticker_pid=""  # The next one ticks.
  fi
}

# Waits until every process has ended, acting on each end, on the grace period's end and on
# the ticks; then stops the timers.
supervise() {
  local finished status before pid
  while [[ ${#running[@]} -gt 0 ]]; do
    if [[ -z $ticker_pid ]] && ticking; then
      sleep 0.5 &
      ticker_pid=$!
    fi
    if wait -n -p finished "${!running[@]}" ${timer_pid:+"$timer_pid"} ${ticker_pid:+"$ticker_pid"} \
      2>/dev/null; then
      status=0
    else
      status=$?
    fi
    # `wait -p` unsets its variable first, and leaves it unset when a signal interrupts it.
    finished=${finished:-}
    if [[ -n $finished && $finished == "$ticker_pid" ]]; then
      ticker_pid=""
      on_tick
    elif [[ -n $finished && $finished == "$timer_pid" ]]; then
      grace_over
    elif [[ -n $finished ]]; then
      process_ended "$finished" "$status"
    elif [[ $status -eq 127 ]]; then
      before=${#running[@]}
      collect_vanished
      if [[ ${#running[@]} -eq $before ]]; then
        sleep 0.1  # nothing collected: do not spin
      fi
    fi
    # Otherwise a trapped signal interrupted `wait`, and the trap has already acted.
  done
  for pid in ${timer_pid:+"$timer_pid"} ${ticker_pid:+"$ticker_pid"}; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  timer_pid=""
  ticker_pid=""
}

describe() {
  case "$1" in
    0) echo "ok" ;;
    2) echo "$meaning_of_2" ;;
    137) echo "killed by SIGKILL" ;;
    143) echo "$meaning_of_143" ;;
    *) echo "failed" ;;
  esac
}

# One line per process: name, pid, address, exit status and its meaning, log.
print_summary() {
  local i
  for i in "${!names[@]}"; do
    printf '%s: %s pid %s%s exit %s (%s) log %s\n' "$tag" "${names[$i]}" "${pids[$i]}" \
      "${addresses[$i]:+ ${addresses[$i]}}" "${statuses[$i]}" "$(describe "${statuses[$i]}")" "${logs[$i]}"
  done
}
