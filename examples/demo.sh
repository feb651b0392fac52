#!/usr/bin/env bash
# dockreg end-to-end demo: etcd -> dockreg-haproxy -> HAProxy -> three HTTP backends.
#
#   bash examples/demo.sh
#
# What it does, all on 127.0.0.1 and inside a temporary run directory:
#   1. installs etcd, etcdctl, haproxy, protoc, socat and curl with apt-get if any is missing;
#   2. builds dockreg-haproxy and the demo_backend example (cargo build --release);
#   3. starts etcd (client port 12379, peer port 12380), three demo backends (9001..9003),
#      HAProxy in master-worker mode (HTTP on 127.0.0.1:8080, stats on 127.0.0.1:8404) and
#      the dockreg-haproxy watcher;
#   4. registers the backends in etcd (`/service/127.0.0.1:900N`, the second one with JSON
#      metadata `{"weight":50,...}`), waits until HAProxy routes to all of them and sends
#      requests through HAProxy to show the (weighted) balance;
#   5. deletes one key and shows that its backend stops receiving traffic;
#   6. waits for Ctrl-C so you can try it yourself, then stops everything it started and
#      removes the run directory.
#
# Environment:
#   DEMO_NONINTERACTIVE=1   skip step 6 and exit 0 after the demonstration (also the case
#                           when stdin is not a terminal)
#   DOCKREG_HTTP_BIND       HAProxy's HTTP address   (default 127.0.0.1:8080)
#   DOCKREG_STATS_BIND      HAProxy's stats address  (default 127.0.0.1:8404)
#   DEMO_ETCD_PORT          etcd client port         (default 12379)
#   DEMO_ETCD_PEER_PORT     etcd peer port           (default 12380)
#   DEMO_BACKEND_PORTS      three backend ports      (default "9001 9002 9003")
#
# Any failing step stops the demo with a message, the tail of each daemon's log and a non-zero
# exit status; only processes this script started are stopped, by PID.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export DOCKREG_HTTP_BIND=${DOCKREG_HTTP_BIND:-127.0.0.1:8080}
export DOCKREG_STATS_BIND=${DOCKREG_STATS_BIND:-127.0.0.1:8404}
ETCD_PORT=${DEMO_ETCD_PORT:-12379}
ETCD_PEER_PORT=${DEMO_ETCD_PEER_PORT:-12380}
read -r -a BACKEND_PORTS <<<"${DEMO_BACKEND_PORTS:-9001 9002 9003}"

export ETCDCTL_API=3
ETCD_URL="http://127.0.0.1:$ETCD_PORT"
ETCD_PEER_URL="http://127.0.0.1:$ETCD_PEER_PORT"
HAPROXY_CFG="$ROOT/haproxy/haproxy.cfg"
WATCHER="$ROOT/target/release/dockreg-haproxy"
BACKEND="$ROOT/target/release/examples/demo_backend"

RUN=""        # temporary run directory, set by make_run_dir
PIDS=()       # daemons started by this script, in start order
NAMES=()      # their names (and log file names)
LAST_PID=""   # PID of the daemon started last

# ---------------------------------------------------------------------------------------------
# Helpers

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

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    if ((rc != 0)) && [[ -n $RUN ]]; then
        for name in "${NAMES[@]}"; do
            printf '\n==> last lines of %s.log:\n' "$name" >&2
            tail -n 15 "$RUN/$name.log" >&2
        done
        echo >&2
    fi
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

# ---------------------------------------------------------------------------------------------
# Steps

ensure_packages() {
    local -A package_of=(
        [etcd]=etcd-server [etcdctl]=etcd-client [haproxy]=haproxy
        [protoc]=protobuf-compiler [socat]=socat [curl]=curl [setsid]=util-linux
    )
    local cmd missing=()
    for cmd in etcd etcdctl haproxy protoc socat curl setsid; do
        command -v "$cmd" >/dev/null || missing+=("${package_of[$cmd]}")
    done
    # rustup installs cargo in ~/.cargo/bin, which a fresh shell may not have on its PATH yet.
    if ! command -v cargo >/dev/null && [[ -f $HOME/.cargo/env ]]; then
        # shellcheck source=/dev/null
        source "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
    ((${#missing[@]})) || return 0

    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "missing ${missing[*]}: run as root or install sudo"
        sudo=(sudo)
    fi
    log "installing ${missing[*]}"
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

check_ports() {
    local addr host port
    for addr in "127.0.0.1:$ETCD_PORT" "127.0.0.1:$ETCD_PEER_PORT" "$DOCKREG_HTTP_BIND" \
        "$DOCKREG_STATS_BIND" "${BACKEND_PORTS[@]/#/127.0.0.1:}"; do
        read -r host port < <(split_addr "$addr")
        if listening "$host" "$port"; then
            die "$host:$port is already in use; stop what listens there or pick other ports" \
                "(DEMO_ETCD_PORT, DEMO_ETCD_PEER_PORT, DEMO_BACKEND_PORTS, DOCKREG_HTTP_BIND, DOCKREG_STATS_BIND)"
        fi
    done
}

build() {
    log "building dockreg-haproxy and demo_backend (cargo build --release)"
    cargo build --release --bin dockreg-haproxy --example demo_backend || die "cargo build failed"
}

make_run_dir() {
    RUN=$(mktemp -d "${TMPDIR:-/tmp}/dockreg-demo.XXXXXX")
    export DOCKREG_RUN_DIR=$RUN
    log "run directory: $RUN"
}

etcd_healthy() { etcdctl --endpoints "$ETCD_URL" --command-timeout=1s endpoint health >/dev/null 2>&1; }

start_etcd() {
    start_daemon etcd etcd --name dockreg-demo --data-dir "$RUN/etcd" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "$ETCD_PEER_URL" --initial-advertise-peer-urls "$ETCD_PEER_URL" \
        --initial-cluster "dockreg-demo=$ETCD_PEER_URL" --initial-cluster-state new \
        --logger zap --log-outputs stderr --log-level warn
    wait_until "etcd on $ETCD_URL" 20 etcd_healthy
    log "etcd is up on $ETCD_URL"
}

backends_listening() {
    local port
    for port in "${BACKEND_PORTS[@]}"; do
        listening 127.0.0.1 "$port" || return 1
    done
}

start_backends() {
    local args=() port
    for port in "${BACKEND_PORTS[@]}"; do
        args+=(--listen "127.0.0.1:$port")
    done
    start_daemon backends "$BACKEND" "${args[@]}" --id-prefix demo
    wait_until "the demo backends" 10 backends_listening
    log "demo backends answer on ${BACKEND_PORTS[*]/#/127.0.0.1:}"
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
    start_daemon watcher "$WATCHER" --etcd "$ETCD_URL" --output "$RUN/backends.cfg" \
        --haproxy-config "$HAPROXY_CFG" --master-socket "$RUN/master.sock"
    wait_until "dockreg-haproxy to start" 15 watcher_started
    log "dockreg-haproxy is watching $ETCD_URL/service/"
}

key() { printf '/service/127.0.0.1:%s' "$1"; }

register_backends() {
    local i value
    for i in "${!BACKEND_PORTS[@]}"; do
        value=running
        # The second backend carries JSON metadata: half the weight, so half the traffic.
        ((i == 1)) && value='{"weight":50,"tags":["demo"]}'
        log "etcdctl put $(key "${BACKEND_PORTS[i]}") '$value'"
        etcdctl --endpoints "$ETCD_URL" put "$(key "${BACKEND_PORTS[i]}")" "$value" >/dev/null
    done
}

URL=""
set_url() {
    local host port
    read -r host port < <(split_addr "$DOCKREG_HTTP_BIND")
    [[ $host == *:* ]] && host="[$host]"
    URL="http://$host:$port/"
}

# One request through HAProxy on a new connection; prints the answering backend's identity.
request() { curl -sS --fail --max-time 3 "$URL"; }

# True once a few requests reached every backend in "$@" (ports).
routes_to_all() {
    local seen="" i answer port
    for ((i = 0; i < 8; i++)); do
        answer=$(curl -s --fail --max-time 2 "$URL") || return 1
        seen+="$answer;"
    done
    for port in "$@"; do
        [[ $seen == *"127.0.0.1:$port;"* ]] || return 1
    done
}

# send_requests N: N requests, each answer printed, then a count per backend.
send_requests() {
    local n=$1 i answer answers=()
    for ((i = 1; i <= n; i++)); do
        answer=$(request) || die "request $i through $URL failed"
        printf '    request %2d -> %s\n' "$i" "$answer"
        answers+=("$answer")
    done
    log "answers per backend:"
    printf '%s\n' "${answers[@]}" | sort | uniq -c | sed 's/^ */    /'
    LAST_ANSWERS=$(printf '%s\n' "${answers[@]}")
}

show_backends_file() {
    log "rendered $RUN/backends.cfg:"
    sed -e '/./,$!d' -e 's/^/    /' "$RUN/backends.cfg"
}

show_balance() {
    log "waiting until HAProxy routes to all ${#BACKEND_PORTS[@]} backends"
    wait_until "HAProxy to route to every backend" 30 routes_to_all "${BACKEND_PORTS[@]}"
    show_backends_file
    # Weighted round robin over weights 100/50/100 cycles 2:1:2, so 15 requests give 6/3/6.
    log "15 requests through $URL (weights 100/50/100, so expect 6/3/6):"
    send_requests 15
}

file_lacks() { ! grep -qF "$1" "$RUN/backends.cfg"; }
reloaded_since() { local now; now=$(master_reloads) && [[ -n $now ]] && ((now > $1)); }

show_removal() {
    local port=${BACKEND_PORTS[-1]} before
    before=$(master_reloads) || true
    [[ -n $before ]] || die "cannot read HAProxy's reload counter from $RUN/master.sock"
    log "etcdctl del $(key "$port")"
    etcdctl --endpoints "$ETCD_URL" del "$(key "$port")" >/dev/null
    wait_until "dockreg-haproxy to drop 127.0.0.1:$port" 15 file_lacks "127.0.0.1:$port"
    wait_until "HAProxy to reload" 15 reloaded_since "$before"
    sleep 1
    log "HAProxy reloaded ($before -> $(master_reloads) reloads); 6 more requests:"
    send_requests 6
    if grep -qF "127.0.0.1:$port" <<<"$LAST_ANSWERS"; then
        die "127.0.0.1:$port still answered after its key was deleted"
    fi
    log "127.0.0.1:$port no longer receives traffic"
}

# Prints COMMAND under its comment.
hint() { printf '    # %s\n    %s\n' "$2" "$1"; }

try_it_yourself() {
    local removed=${BACKEND_PORTS[-1]} first=${BACKEND_PORTS[0]}
    echo
    log "Try it yourself, from another terminal:"
    hint "export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=$ETCD_URL" "where etcdctl should talk"
    hint "etcdctl put $(key "$removed") running" "bring the removed backend back"
    hint "etcdctl put $(key "$first") '{\"weight\":10}'" "give a backend less traffic"
    hint "etcdctl get --prefix /service/" "what is registered"
    hint "for i in \$(seq 10); do curl -s $URL; done" "see the balance"
    hint "cat $RUN/backends.cfg" "the rendered backends"
    hint "tail -f $RUN/watcher.log" "what the watcher does"
    hint "echo 'show proc' | socat stdio UNIX-CONNECT:$RUN/master.sock" "HAProxy's master CLI"
    printf '    HAProxy stats page: http://%s/\n\n' "$DOCKREG_STATS_BIND"
    log "Press Ctrl-C to stop everything and clean up."
    # Ctrl-C is the expected way out here: exit 0 (cleanup still runs on EXIT).
    trap 'echo; exit 0' INT
    while :; do
        sleep 1
        all_alive
    done
}

main() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP

    ((${#BACKEND_PORTS[@]} == 3)) || die "DEMO_BACKEND_PORTS must list three ports"
    ensure_packages
    check_ports
    build
    make_run_dir
    set_url
    start_etcd
    start_backends
    start_haproxy
    start_watcher
    register_backends
    show_balance
    show_removal
    all_alive

    if interactive; then
        try_it_yourself
    else
        log "non-interactive mode: demonstration done, cleaning up"
    fi
}

main "$@"
