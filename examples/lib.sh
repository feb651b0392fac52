# shellcheck shell=bash
# Shared helpers of the dockreg demos, examples/demo.sh (the watcher) and examples/docker-demo.sh
# (the sidekick); not meant to run by itself. Each demo sources it near its top, before it sets
# its own configuration:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# What it holds:
#   - paths (ROOT, HAPROXY_CFG, WATCHER) and the state of the daemons a demo starts (RUN, PIDS,
#     NAMES, LAST_PID);
#   - logging and errors: log, die, interactive;
#   - processes and ports: alive, split_addr, listening, all_alive, wait_until, ports_free;
#   - daemons by PID: start_daemon, stop_daemon, and cleanup (the EXIT trap, installed with the
#     others by install_traps): it shows the daemons' logs on failure, stops them in reverse
#     order and removes the run directory;
#   - setup: missing_packages, ensure_cargo, install_packages, make_run_dir;
#   - etcd, HAProxy and the watcher: start_etcd, master_cli, master_reloads, start_haproxy,
#     start_watcher, key, set_url, routes_to_all, show_backends_file, file_lacks;
#   - the end of a demo: hint, wait_for_ctrl_c, finish.
#
# It reads the demo's ETCD_URL, ETCD_PEER_URL, DOCKREG_HTTP_BIND and DOCKREG_STATS_BIND. A demo
# defines try_it_yourself (called by finish when interactive) and may define the cleanup hooks
# described at cleanup.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

export ETCDCTL_API=3
HAPROXY_CFG="$ROOT/haproxy/haproxy.cfg"
WATCHER="$ROOT/target/release/dockreg-haproxy"

RUN=""        # temporary run directory, set by make_run_dir
PIDS=()       # daemons started by this script, in start order
NAMES=()      # their names (and log file names)
LAST_PID=""   # PID of the daemon started last
URL=""        # HAProxy's HTTP front end, set by set_url

# ---------------------------------------------------------------------------------------------
# Logging, processes, ports

log() { printf '==> %s\n' "$*"; }
die() {
    printf '==> ERROR: %s\n' "$*" >&2
    exit 1
}

interactive() { [[ ${DEMO_NONINTERACTIVE:-0} != 1 && -t 0 ]]; }

# True while process $1 runs (a zombie, exited but not yet reaped, does not count).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# host:port -> "host port", with a wildcard host read as 127.0.0.1 and IPv6 brackets removed.
split_addr() {
    local host=${1%:*} port=${1##*:}
    host=${host#[}
    host=${host%]}
    [[ -z $host || $host == '*' || $host == 0.0.0.0 || $host == :: ]] && host=127.0.0.1
    printf '%s %s\n' "$host" "$port"
}

# True when something accepts TCP connections on host $1, port $2.
listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# ports_free VARIABLES ADDR...: dies when something already listens on one of the host:port
# ADDRs; VARIABLES names the settings that choose them, for the message.
ports_free() {
    local vars=$1 addr host port
    shift
    for addr in "$@"; do
        read -r host port < <(split_addr "$addr")
        if listening "$host" "$port"; then
            die "$host:$port is already in use; stop what listens there or pick other ports" \
                "($vars)"
        fi
    done
}

# Dies when a daemon this script started has exited.
all_alive() {
    local i
    for i in "${!PIDS[@]}"; do
        alive "${PIDS[i]}" || die "${NAMES[i]} (pid ${PIDS[i]}) exited unexpectedly${1:-} (see its log below)"
    done
}

# wait_until WHAT SECONDS COMMAND...: polls COMMAND until it succeeds; fails when the time
# runs out or when one of the daemons exits meanwhile.
wait_until() {
    local what=$1 secs=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@"; do
        all_alive " while waiting for $what"
        ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $what"
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------------------------
# Daemons and cleanup

# start_daemon NAME COMMAND...: runs COMMAND in the background, in its own session (so Ctrl-C
# reaches only this script, which then stops everything in order), logging to $RUN/NAME.log.
start_daemon() {
    local name=$1
    shift
    setsid "$@" </dev/null >"$RUN/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    NAMES+=("$name")
    log "started $name (pid $LAST_PID, log $RUN/$name.log)"
}

# Sends SIGTERM to PID $2, escalating to SIGKILL after 10 s.
stop_daemon() {
    local name=$1 pid=$2 i
    alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        printf '==> %s (pid %s) ignored SIGTERM; killing it\n' "$name" "$pid" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# Runs hook $1 when the demo defines it.
run_hook() { if declare -F "$1" >/dev/null; then "$1"; fi; }

# The EXIT trap: on failure shows the last lines of each daemon's log, then stops the daemons
# (last started first), removes the run directory and exits with the script's status. Hooks a
# demo may define, run with errexit off:
#   cleanup_first         before anything else
#   cleanup_failure_logs  on failure, after the daemons' logs: more logs to show
#   cleanup_before_stop   before the daemons are stopped
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    run_hook cleanup_first
    if ((rc != 0)) && [[ -n $RUN ]]; then
        for name in "${NAMES[@]}"; do
            printf '\n==> last lines of %s.log:\n' "$name" >&2
            tail -n 15 "$RUN/$name.log" >&2
        done
        run_hook cleanup_failure_logs
        echo >&2
    fi
    run_hook cleanup_before_stop
    if ((${#PIDS[@]})); then
        local i
        for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
            log "stopping ${NAMES[i]} (pid ${PIDS[i]})"
            stop_daemon "${NAMES[i]}" "${PIDS[i]}"
        done
    fi
    if [[ -n $RUN ]]; then
        rm -rf "$RUN"
        log "removed $RUN"
    fi
    exit "$rc"
}

# cleanup on exit; INT, TERM and HUP exit with 128 + the signal's number (and so run cleanup).
install_traps() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

# ---------------------------------------------------------------------------------------------
# Setup

# missing_packages COMMAND=PACKAGE...: prints, one a line, the PACKAGE of each COMMAND not found
# (a /path instead of a COMMAND: the PACKAGE when that file is missing).
missing_packages() {
    local pair what
    for pair in "$@"; do
        what=${pair%%=*}
        if [[ $what == /* ]]; then
            # A file rather than a command (protoc's well-known types, which etcd-client's build
            # imports, come in their own package).
            [[ -e $what ]] || printf '%s\n' "${pair#*=}"
        else
            command -v "$what" >/dev/null || printf '%s\n' "${pair#*=}"
        fi
    done
}

# Dies unless cargo is found.
ensure_cargo() {
    # rustup installs cargo in ~/.cargo/bin, which a fresh shell may not have on its PATH yet.
    if ! command -v cargo >/dev/null && [[ -f $HOME/.cargo/env ]]; then
        # shellcheck source=/dev/null
        source "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
}

# install_packages PACKAGE...: installs the packages with apt-get (through sudo unless root);
# nothing when none is given.
install_packages() {
    (($#)) || return 0
    command -v apt-get >/dev/null || die "missing $* and no apt-get to install them"
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "missing $*: run as root or install sudo"
        sudo=(sudo)
    fi
    log "installing $*"
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

# make_run_dir PREFIX: creates the run directory, ${TMPDIR:-/tmp}/PREFIX.XXXXXX.
make_run_dir() {
    RUN=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    export DOCKREG_RUN_DIR=$RUN
    log "run directory: $RUN"
}

# ---------------------------------------------------------------------------------------------
# etcd, HAProxy and the watcher

etcd_healthy() { etcdctl --endpoints "$ETCD_URL" --command-timeout=1s endpoint health >/dev/null 2>&1; }

# start_etcd NAME CLIENT_URLS WHERE: a one-member etcd cluster NAME serving CLIENT_URLS (comma
# separated) and peers on ETCD_PEER_URL; WHERE says where it is up, for the log.
start_etcd() {
    local name=$1 urls=$2 where=$3
    start_daemon etcd etcd --name "$name" --data-dir "$RUN/etcd" \
        --listen-client-urls "$urls" --advertise-client-urls "$urls" \
        --listen-peer-urls "$ETCD_PEER_URL" --initial-advertise-peer-urls "$ETCD_PEER_URL" \
        --initial-cluster "$name=$ETCD_PEER_URL" --initial-cluster-state new \
        --logger zap --log-outputs stderr --log-level warn
    wait_until "etcd on $ETCD_URL" 20 etcd_healthy
    log "etcd is up on $where"
}

# Sends one command to HAProxy's master CLI.
master_cli() { echo "$1" | socat -t 2 stdio "UNIX-CONNECT:$RUN/master.sock" 2>/dev/null; }

# The master's reload counter from `show proc` (empty while the master re-executes).
master_reloads() { master_cli "show proc" | awk '$2 == "master" { print $3; exit }'; }

haproxy_ready() {
    local host port
    [[ -n $(master_reloads) ]] || return 1
    read -r host port < <(split_addr "$DOCKREG_HTTP_BIND")
    listening "$host" "$port"
}

start_haproxy() {
    # An empty backend lets HAProxy start (answering 503) before the watcher renders anything.
    printf 'backend service\n' >"$RUN/backends.cfg"
    local out
    out=$(haproxy -c -f "$HAPROXY_CFG" -f "$RUN/backends.cfg" 2>&1) ||
        die "haproxy -c rejected $HAPROXY_CFG:"$'\n'"$out"
    start_daemon haproxy haproxy -W -S "$RUN/master.sock" -f "$HAPROXY_CFG" -f "$RUN/backends.cfg"
    wait_until "HAProxy (master socket $RUN/master.sock)" 15 haproxy_ready
    log "HAProxy is up: http://$DOCKREG_HTTP_BIND/ (stats: http://$DOCKREG_STATS_BIND/)"
}

watcher_started() { grep -q "dockreg-haproxy started" "$RUN/watcher.log"; }

start_watcher() {
    # Server-only changes go through HAProxy's runtime API (admin socket), with no reload.
    start_daemon watcher "$WATCHER" --etcd "$ETCD_URL" --output "$RUN/backends.cfg" \
        --haproxy-config "$HAPROXY_CFG" --master-socket "$RUN/master.sock" \
        --runtime-socket "$RUN/admin.sock" --server-state-file "$RUN/server-state"
    wait_until "dockreg-haproxy to start" 15 watcher_started
    log "dockreg-haproxy is watching $ETCD_URL/service/"
}

key() { printf '/service/127.0.0.1:%s' "$1"; }

# Sets URL from DOCKREG_HTTP_BIND.
set_url() {
    local host port
    read -r host port < <(split_addr "$DOCKREG_HTTP_BIND")
    [[ $host == *:* ]] && host="[$host]"
    # shellcheck disable=SC2034 # read by the demos
    URL="http://$host:$port/"
}

# routes_to_all URL ANSWER...: true once a few requests to URL got every ANSWER.
routes_to_all() {
    local url=$1 seen="" i answer want
    shift
    for ((i = 0; i < 8; i++)); do
        answer=$(curl -s --fail --max-time 2 "$url") || return 1
        seen+="$answer;"
    done
    for want in "$@"; do
        [[ $seen == *"$want;"* ]] || return 1
    done
}

show_backends_file() {
    log "rendered $RUN/backends.cfg:"
    sed -e '/./,$!d' -e 's/^/    /' "$RUN/backends.cfg"
}

file_lacks() { ! grep -qF "$1" "$RUN/backends.cfg"; }

# ---------------------------------------------------------------------------------------------
# The end of a demo

# Prints COMMAND under its comment.
hint() { printf '    # %s\n    %s\n' "$2" "$1"; }

# After try_it_yourself's hints: the stats page, then waits for Ctrl-C, dying when a daemon exits.
wait_for_ctrl_c() {
    printf '    HAProxy stats page: http://%s/\n\n' "$DOCKREG_STATS_BIND"
    log "Press Ctrl-C to stop everything and clean up."
    # Ctrl-C is the expected way out here: exit 0 (cleanup still runs on EXIT).
    trap 'echo; exit 0' INT
    while :; do
        sleep 1
        all_alive
    done
}

# Dies when a daemon has exited; then try_it_yourself when interactive, else says it is done.
finish() {
    all_alive
    if interactive; then
        try_it_yourself
    else
        log "non-interactive mode: demonstration done, cleaning up"
    fi
}
