# shellcheck shell=bash
# The part of scripts/kafka.sh and scripts/registry.sh that is the same for
# both: running one JVM daemon per data directory in the background, with a
# pid file, a log file and an instance lock, and the start/stop/status/logs/
# reset plumbing around it. Sourced by those scripts; sourcing it only
# defines functions (it sets no options or variables and runs nothing), so
# each script keeps its own `set -euo pipefail`, knobs and messages.
#
# Every message goes to stderr: stdout of `start` must stay only the address
# (BOOTSTRAP=$(scripts/kafka.sh start), REGISTRY_URL=$(scripts/registry.sh start)).
#
# The sourcing script sets these globals before it calls anything here:
#   SCRIPT_NAME          prefix of every message
#   HOST                 the loopback address the daemon listens on
#   DATA_DIR             the instance's directory (absolute, no trailing /)
#   PID_FILE, LOG_FILE   the daemon's pid file and log, in DATA_DIR
#   INSTANCE_FILE        written by the script; marks DATA_DIR as ours (reset)
#   DAEMON_NAME          the daemon at the start of a sentence: "Kafka"
#   DAEMON_KIND          the process in messages: "broker"
#   DAEMON_ADDR          its address, what `start` prints
#   DAEMON_REQUESTS      what daemon_responds checks, for messages, or ""
#   DAEMON_STOP_TIMEOUT  seconds after SIGTERM before SIGKILL
# and defines these functions:
#   usage, validate_env, cmd_install, cmd_start, cmd_reset  the commands
#   daemon_pid       the running daemon's PID (usually via pid_from_file)
#   daemon_responds  true when the daemon answers a real request

say() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

# require_number REGEX WHAT NAME...: die unless each variable NAME matches
# REGEX (WHAT describes it: "a number").
require_number() {
  local regex="$1" what="$2" name value
  shift 2
  for name in "$@"; do
    value="${!name}"
    [[ "$value" =~ $regex ]] || die "$name must be $what, got '$value'"
  done
}

# require_ports NAME1 NAME2: die unless the variables NAME1 and NAME2 hold
# two different TCP ports (already checked to be numbers).
require_ports() {
  local name
  for name in "$1" "$2"; do
    ((name > 0 && name < 65536)) || die "$name out of range: ${!name}"
  done
  (($1 != $2)) || die "$1 and $2 must differ (both are ${!1})"
}

# require_mvn WHAT PACKAGES: die unless mvn is there; it fetches WHAT.
require_mvn() {
  command -v mvn >/dev/null 2>&1 ||
    die "mvn not found; it fetches $1 from Maven Central: apt-get install $2"
}

# The version string of the java binary $1: "17.0.9", "1.8.0_392", "21-ea".
java_version() { "$1" -version 2>&1 | awk -F'"' '/version/ { print $2; exit }'; }

# The major version (e.g. 17, 21, 25) in the java version string $1, or an
# empty line.
java_major_of() {
  local major="${1%%.*}"
  [[ "$major" == 1 ]] && major="$(cut -d. -f2 <<<"$1")" # "1.8.0_392" style
  printf '%s\n' "${major%%[!0-9]*}"                    # "21-ea" style
}

# Take an exclusive lock on FILE until the fd is closed or the script exits.
# Serialises concurrent start/stop/reset of one instance and concurrent
# installs of one version. flock is util-linux; without it we skip locking.
# Sets the global named by $2 to the lock's fd.
take_lock() {
  local file="$1" var="$2" fd
  mkdir -p "$(dirname "$file")"
  exec {fd}>>"$file"
  printf -v "$var" '%s' "$fd"
  if command -v flock >/dev/null 2>&1; then
    flock -w 600 "$fd" || die "timed out waiting for lock $file"
  fi
}

# True while PID is a live process. A zombie counts as dead: where nothing
# reaps orphans (some containers' PID 1), `kill -0` would succeed forever.
pid_alive() {
  local state=""
  kill -0 "$1" 2>/dev/null || return 1
  if [[ -r "/proc/$1/stat" ]]; then
    state="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)"
  fi
  [[ "$state" != Z ]]
}

# pid_from_file PART...: the PID in PID_FILE if that process runs and its
# command line contains the PARTs in this order, else nothing (and status 1).
# Checks the command line so that a recycled PID from a stale pid file is not
# mistaken for our daemon.
pid_from_file() {
  local pid cmdline part
  [[ -f "$PID_FILE" ]] || return 1
  pid="$(<"$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
  else
    cmdline="$(ps -o args= -p "$pid" 2>/dev/null || true)"
  fi
  for part in "$@"; do
    [[ "$cmdline" == *"$part"* ]] || return 1
    cmdline="${cmdline#*"$part"}"
  done
  printf '%s\n' "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# require_free_ports KNOBS PORT...: die if another process listens on a PORT;
# KNOBS names the variables that choose other ports.
require_free_ports() {
  local knobs="$1" port
  shift
  for port in "$@"; do
    if port_open "$port"; then
      die "port $port on $HOST is already in use by another process; pick other ports with $knobs"
    fi
  done
}

print_log_tail() {
  if [[ -s "$LOG_FILE" ]]; then
    say "last lines of $LOG_FILE:"
    tail -n "${1:-40}" "$LOG_FILE" >&2
  fi
}

# SIGTERM first, so the daemon shuts down cleanly; SIGKILL only as last
# resort, after DAEMON_STOP_TIMEOUT seconds.
stop_pid() {
  local pid="$1" waited=0
  kill -TERM "$pid" 2>/dev/null || true
  while pid_alive "$pid"; do
    if ((waited >= DAEMON_STOP_TIMEOUT * 10)); then
      say "$DAEMON_KIND (pid $pid) still running after ${DAEMON_STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      waited=0
      while pid_alive "$pid"; do
        ((waited++ < 100)) || die "$DAEMON_KIND (pid $pid) survived SIGKILL for 10s"
        sleep 0.1
      done
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "$PID_FILE"
}

# The first step of cmd_start: when the daemon already runs, say so, print
# its address (as a fresh start would) and succeed; otherwise remove a stale
# pid file and fail.
already_running() {
  local pid
  if pid="$(daemon_pid)"; then
    say "$DAEMON_NAME is already running (pid $pid) on $DAEMON_ADDR; log: $LOG_FILE"
    printf '%s\n' "$DAEMON_ADDR"
    return 0
  fi
  rm -f "$PID_FILE" # stale, if any
  return 1
}

# start_daemon VAR TIMEOUT READY DIR COMMAND...: start COMMAND (the JVM) in
# the background with its working directory DIR ("": ours), then wait until
# the function READY succeeds and set the global named by VAR to its PID.
# Dies with the end of the log if the daemon exits during startup, or is not
# ready within TIMEOUT seconds (then it is stopped).
start_daemon() {
  local var="$1" timeout="$2" ready="$3" dir="$4" launcher=() launcher_pid found deadline
  shift 4
  say "data: $DATA_DIR"
  say "log:  $LOG_FILE"
  # setsid puts the daemon in its own session, so it survives the shell (or
  # CI step) that started it and is not hit by that terminal's Ctrl-C.
  command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  # The inner bash writes its own PID and then execs the command, so the pid
  # file holds the JVM's PID whether or not setsid forked. All of the daemon's
  # standard streams are redirected (and our lock fd closed) so that callers
  # like $(kafka.sh start) do not wait for the daemon to exit.
  # shellcheck disable=SC2016 # $0, $1 and $@ are expanded by the inner bash
  "${launcher[@]}" bash -c '[[ -z "$1" ]] || cd "$1" || exit; echo "$$" >"$0" && shift && exec "$@"' \
    "$PID_FILE" "$dir" "$@" </dev/null >"$LOG_FILE" 2>&1 {INSTANCE_LOCK_FD}>&- &
  launcher_pid=$!

  deadline=$((SECONDS + timeout))
  while :; do
    if ! found="$(daemon_pid)" && { [[ -f "$PID_FILE" ]] || ! pid_alive "$launcher_pid"; }; then
      sleep 0.5 # let a forking setsid's child write the pid file
      if ! found="$(daemon_pid)"; then
        print_log_tail 60
        die "$DAEMON_NAME exited during startup (see $LOG_FILE)"
      fi
    fi
    if "$ready"; then
      break
    fi
    if ((SECONDS >= deadline)); then
      print_log_tail 60
      if found="$(daemon_pid)"; then
        say "stopping the half-started $DAEMON_KIND (pid $found)"
        stop_pid "$found"
      fi
      die "$DAEMON_NAME did not become ready on $DAEMON_ADDR within ${timeout}s (see $LOG_FILE)"
    fi
    sleep 0.25
  done
  printf -v "$var" '%s' "$found"
}

cmd_stop() {
  local pid
  if ! pid="$(daemon_pid)"; then
    rm -f "$PID_FILE"
    say "$DAEMON_NAME on $DAEMON_ADDR is not running"
    return 0
  fi
  say "stopping $DAEMON_NAME (pid $pid) on $DAEMON_ADDR ..."
  stop_pid "$pid"
  say "stopped"
}

cmd_status() {
  local pid
  if pid="$(daemon_pid)"; then
    if daemon_responds; then
      say "$DAEMON_NAME is running (pid $pid) on $DAEMON_ADDR and answering requests"
    else
      say "$DAEMON_NAME process is running (pid $pid) but $DAEMON_ADDR does not answer${DAEMON_REQUESTS:+ $DAEMON_REQUESTS} (yet)"
    fi
    say "data: $DATA_DIR"
    say "log:  $LOG_FILE"
    return 0
  fi
  say "$DAEMON_NAME on $DAEMON_ADDR is not running (data: $DATA_DIR)"
  return 3
}

cmd_logs() {
  [[ -f "$LOG_FILE" ]] || die "no log yet at $LOG_FILE"
  say "log: $LOG_FILE"
  if [[ "${1:-}" == "-f" ]]; then
    exec tail -n 100 -F "$LOG_FILE"
  fi
  cat "$LOG_FILE"
}

# reset_instance LABEL NAME...: stop the daemon and delete DATA_DIR. Refuses
# to rm -rf a directory we did not create (e.g. a mistyped *_DATA_DIR
# pointing at something precious): without INSTANCE_FILE, DATA_DIR may only
# hold entries called NAME (what a start that failed early leaves behind);
# LABEL says whose data dir it should have been.
reset_instance() {
  local label="$1" entry name known
  shift
  cmd_stop
  [[ -e "$DATA_DIR" ]] || { say "nothing to reset: $DATA_DIR does not exist"; return 0; }
  if [[ ! -f "$INSTANCE_FILE" && -n "$(ls -A "$DATA_DIR")" ]]; then
    for entry in "$DATA_DIR"/* "$DATA_DIR"/.[!.]*; do
      [[ -e "$entry" ]] || continue
      known=""
      for name in "$@"; do
        if [[ "${entry##*/}" == "$name" ]]; then
          known=1
        fi
      done
      [[ -n "$known" ]] || die "refusing to delete $DATA_DIR: it does not look like a $label data dir"
    done
  fi
  rm -rf "$DATA_DIR"
  say "deleted $DATA_DIR"
}

# The command dispatch shared by both scripts (a script handles its own extra
# commands before calling this). The commands that change the instance take
# its lock here, once: a second flock on the same file from this process
# would deadlock, so the cmd_* functions do not lock themselves. The lock
# file lies beside (not inside) the data dir, so `reset` cannot delete a held
# lock.
daemon_main() {
  local cmd="${1:-help}"
  (($# > 0)) && shift
  case "$cmd" in
    help | -h | --help) usage; return 0 ;;
  esac
  validate_env
  INSTANCE_LOCK_FD="" # global: start_daemon closes it in the daemon
  case "$cmd" in
    start | stop | restart | reset) take_lock "$DATA_DIR.lock" INSTANCE_LOCK_FD ;;
  esac
  case "$cmd" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    reset) cmd_reset ;;
    *)
      usage >&2
      die "unknown command '$cmd'"
      ;;
  esac
}
