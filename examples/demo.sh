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
#   5. deletes one key and shows that its backend stops receiving traffic at once, applied
#      through HAProxy's runtime API without a reload;
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

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

export DOCKREG_HTTP_BIND=${DOCKREG_HTTP_BIND:-127.0.0.1:8080}
export DOCKREG_STATS_BIND=${DOCKREG_STATS_BIND:-127.0.0.1:8404}
ETCD_PORT=${DEMO_ETCD_PORT:-12379}
ETCD_PEER_PORT=${DEMO_ETCD_PEER_PORT:-12380}
read -r -a BACKEND_PORTS <<<"${DEMO_BACKEND_PORTS:-9001 9002 9003}"

ETCD_URL="http://127.0.0.1:$ETCD_PORT"
ETCD_PEER_URL="http://127.0.0.1:$ETCD_PEER_PORT"
BACKEND="$ROOT/target/release/examples/demo_backend"

# ---------------------------------------------------------------------------------------------
# Steps (the shared helpers are in examples/lib.sh)

ensure_packages() {
    local missing
    mapfile -t missing < <(missing_packages etcd=etcd-server etcdctl=etcd-client haproxy=haproxy \
        protoc=protobuf-compiler \
        /usr/include/google/protobuf/descriptor.proto=libprotobuf-dev socat=socat curl=curl setsid=util-linux)
    ensure_cargo
    install_packages "${missing[@]}"
}

check_ports() {
    ports_free "DEMO_ETCD_PORT, DEMO_ETCD_PEER_PORT, DEMO_BACKEND_PORTS, DOCKREG_HTTP_BIND, DOCKREG_STATS_BIND" \
        "127.0.0.1:$ETCD_PORT" "127.0.0.1:$ETCD_PEER_PORT" "$DOCKREG_HTTP_BIND" \
        "$DOCKREG_STATS_BIND" "${BACKEND_PORTS[@]/#/127.0.0.1:}"
}

build() {
    log "building dockreg-haproxy and demo_backend (cargo build --release)"
    cargo build --release --bin dockreg-haproxy --example demo_backend || die "cargo build failed"
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

# One request through HAProxy on a new connection; prints the answering backend's identity.
request() { curl -sS --fail --max-time 3 "$URL"; }

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

show_balance() {
    log "waiting until HAProxy routes to all ${#BACKEND_PORTS[@]} backends"
    wait_until "HAProxy to route to every backend" 30 \
        routes_to_all "$URL" "${BACKEND_PORTS[@]/#/127.0.0.1:}"
    show_backends_file
    # Weighted round robin over weights 100/50/100 cycles 2:1:2, so 15 requests give 6/3/6.
    log "15 requests through $URL (weights 100/50/100, so expect 6/3/6):"
    send_requests 15
}

show_removal() {
    local port=${BACKEND_PORTS[-1]} before
    before=$(master_reloads) || true
    [[ -n $before ]] || die "cannot read HAProxy's reload counter from $RUN/master.sock"
    log "etcdctl del $(key "$port")"
    etcdctl --endpoints "$ETCD_URL" del "$(key "$port")" >/dev/null
    wait_until "dockreg-haproxy to drop 127.0.0.1:$port" 15 file_lacks "127.0.0.1:$port"
    # A removed server goes through HAProxy's runtime API: no reload.
    log "applied without a reload ($before -> $(master_reloads) reloads):"
    grep "path=runtime" "$RUN/watcher.log" | tail -1 | sed 's/^/    /'
    log "6 more requests:"
    send_requests 6
    if grep -qF "127.0.0.1:$port" <<<"$LAST_ANSWERS"; then
        die "127.0.0.1:$port still answered after its key was deleted"
    fi
    log "127.0.0.1:$port no longer receives traffic"
}

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
    wait_for_ctrl_c
}

main() {
    install_traps

    ((${#BACKEND_PORTS[@]} == 3)) || die "DEMO_BACKEND_PORTS must list three ports"
    ensure_packages
    check_ports
    build
    make_run_dir dockreg-demo
    set_url
    start_etcd dockreg-demo "$ETCD_URL" "$ETCD_URL"
    start_backends
    start_haproxy
    start_watcher
    register_backends
    show_balance
    show_removal
    finish
}

main "$@"
