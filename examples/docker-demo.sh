#!/usr/bin/env bash
# dockreg with real containers, on one machine: etcd, two app containers that carry the dockreg
# sidekick, the dockreg-haproxy watcher and HAProxy balancing across the containers; then
# `docker stop` one of them under load and count the failed requests (there should be none).
#
#   bash examples/docker-demo.sh
#
# What it does (HAProxy, etcd and the watcher on the host; the apps in containers):
#   1. installs etcd, etcdctl, haproxy, protoc, socat, curl, iproute2 and busybox-static with
#      apt-get if any is missing (Docker itself must already run: `docker version` must work);
#   2. builds dockreg-haproxy (cargo build --release) and a statically linked dockreg
#      (target/static, the same build the tests use);
#   3. builds the image from examples/sidekick/ (Dockerfile, web root) with the static dockreg
#      and /bin/busybox copied into a temporary build context; nothing is pulled;
#   4. starts etcd on 127.0.0.1 and on the Docker bridge's address (so containers reach it),
#      HAProxy in master-worker mode (HTTP on 127.0.0.1:8090, stats on 127.0.0.1:8494) and the
#      watcher;
#   5. runs two app containers as the original dockreg was run:
#        docker run -d -p 8000 -v /var/run/docker.sock:/var/run/docker.sock \
#            -e IP=127.0.0.1 -e DOCKREG_ETCD=http://<bridge address>:<etcd port> <image>
#      each sidekick registers /service/127.0.0.1:<its published host port>; the demo waits
#      until HAProxy balances across both and shows which container answered (the page
#      /cgi-bin/whoami answers with the container's host name, its short id);
#   6. `docker stop`s the second container while a request loop (a new connection per request,
#      at least 5 s and 200 requests) runs through HAProxy, then prints the failed requests
#      (expected: 0), the answers per container and the rendered backends file;
#   7. waits for Ctrl-C so you can try it yourself, then removes the containers and the image
#      it created, stops every process it started and removes its run directory.
#
# Environment:
#   DEMO_NONINTERACTIVE=1   skip step 7's wait and exit after the demonstration (also the case
#                           when stdin is not a terminal)
#   DOCKREG_HTTP_BIND       HAProxy's HTTP address   (default 127.0.0.1:8090)
#   DOCKREG_STATS_BIND      HAProxy's stats address  (default 127.0.0.1:8494)
#   DEMO_ETCD_PORT          etcd client port         (default 12479)
#   DEMO_ETCD_PEER_PORT     etcd peer port           (default 12480)
#   DEMO_LOOP_SECONDS       least duration of the request loop in step 6 (default 5)
#   DEMO_LOOP_REQUESTS      least number of requests in that loop      (default 200)
#
# Exit status: 0 when every request succeeded; non-zero when a step fails or a request failed.
# Only the processes, containers and image this script created are stopped or removed.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export DOCKREG_HTTP_BIND=${DOCKREG_HTTP_BIND:-127.0.0.1:8090}
export DOCKREG_STATS_BIND=${DOCKREG_STATS_BIND:-127.0.0.1:8494}
ETCD_PORT=${DEMO_ETCD_PORT:-12479}
ETCD_PEER_PORT=${DEMO_ETCD_PEER_PORT:-12480}
LOOP_SECONDS=${DEMO_LOOP_SECONDS:-5}
LOOP_REQUESTS=${DEMO_LOOP_REQUESTS:-200}

export ETCDCTL_API=3
ETCD_URL="http://127.0.0.1:$ETCD_PORT"
ETCD_PEER_URL="http://127.0.0.1:$ETCD_PEER_PORT"
ETCD_CONTAINER_URL=""   # http://<bridge address>:$ETCD_PORT, set by find_bridge
HAPROXY_CFG="$ROOT/haproxy/haproxy.cfg"
WATCHER="$ROOT/target/release/dockreg-haproxy"
STATIC_DIR="$ROOT/target/static"
TRIPLE=""               # host target triple, set by build
DEMO_ID="$$"            # labels this run's containers: dockreg-demo=$DEMO_ID
IMAGE="dockreg-sidekick-demo:run$DEMO_ID"
IMAGE_BUILT=0

RUN=""        # temporary run directory, set by make_run_dir
PIDS=()       # daemons started by this script, in start order
NAMES=()      # their names (and log file names)
LAST_PID=""   # PID of the daemon started last
LOOP_PID=""   # the background request loop of step 6
CONTAINERS=() # app containers: ids
HOSTS=()      # their host names (short ids), what /cgi-bin/whoami answers
PORTS=()      # their published host ports

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

# A container's log without the colour codes of the sidekick's text log.
container_log() { docker logs "$1" 2>&1 | sed 's/\x1b\[[0-9;]*m//g'; }

# This run's containers: the ones it started and any started from the hints with its label.
demo_containers() {
    {
        printf '%s\n' "${CONTAINERS[@]}"
        docker ps -aq --no-trunc --filter "label=dockreg-demo=$DEMO_ID" 2>/dev/null
    } | awk 'NF && !seen[$0]++'
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    if [[ -n $LOOP_PID ]] && alive "$LOOP_PID"; then
        kill "$LOOP_PID" 2>/dev/null
        wait "$LOOP_PID" 2>/dev/null
    fi
    if ((rc != 0)) && [[ -n $RUN ]]; then
        for name in "${NAMES[@]}"; do
            printf '\n==> last lines of %s.log:\n' "$name" >&2
            tail -n 15 "$RUN/$name.log" >&2
        done
        local id
        for id in "${CONTAINERS[@]}"; do
            printf '\n==> last lines of container %.12s:\n' "$id" >&2
            container_log "$id" | tail -n 15 >&2
        done
        echo >&2
    fi
    local ids
    ids=$(demo_containers)
    if [[ -n $ids ]]; then
        log "removing containers $(awk '{ printf "%s ", substr($0, 1, 12) }' <<<"$ids")"
        # shellcheck disable=SC2086
        docker rm -f $ids >/dev/null
    fi
    if ((IMAGE_BUILT)); then
        log "removing image $IMAGE"
        docker rmi "$IMAGE" >/dev/null
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

# True when /bin/busybox exists and is statically linked (it must run in a FROM-scratch image).
static_busybox() { [[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1; }

ensure_packages() {
    local -A package_of=(
        [etcd]=etcd-server [etcdctl]=etcd-client [haproxy]=haproxy [protoc]=protobuf-compiler
        [socat]=socat [curl]=curl [setsid]=util-linux [ip]=iproute2
    )
    local cmd missing=()
    for cmd in etcd etcdctl haproxy protoc socat curl setsid ip; do
        command -v "$cmd" >/dev/null || missing+=("${package_of[$cmd]}")
    done
    static_busybox || missing+=(busybox-static)
    # rustup installs cargo in ~/.cargo/bin, which a fresh shell may not have on its PATH yet.
    if ! command -v cargo >/dev/null && [[ -f $HOME/.cargo/env ]]; then
        # shellcheck source=/dev/null
        source "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
    command -v docker >/dev/null || die "docker not found: install Docker (apt-get install docker.io) first"
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
        die "no Docker engine reachable (docker version failed): start it, or run as a user in the docker group"
    if ((${#missing[@]})); then
        command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
        local sudo=()
        if ((EUID != 0)); then
            command -v sudo >/dev/null || die "missing ${missing[*]}: run as root or install sudo"
            sudo=(sudo)
        fi
        log "installing ${missing[*]}"
        "${sudo[@]}" apt-get update
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi
    static_busybox || die "/bin/busybox is not a static binary (apt-get install busybox-static)"
}

# The Docker bridge's address on this host: what containers on the default network reach the
# host on. Older engines leave the gateway out of `network inspect`; then it is the address of
# the bridge interface itself.
find_bridge() {
    local ip iface
    ip=$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
    if [[ -z $ip ]]; then
        iface=$(docker network inspect bridge --format '{{index .Options "com.docker.network.bridge.name"}}')
        [[ -n $iface ]] || die "cannot find the Docker bridge interface (docker network inspect bridge)"
        ip=$(ip -4 -o addr show dev "$iface" | awk '{ split($4, a, "/"); print a[1]; exit }')
    fi
    [[ -n $ip ]] || die "cannot find the Docker bridge's IPv4 address"
    ETCD_CONTAINER_URL="http://$ip:$ETCD_PORT"
    log "Docker bridge address: $ip (containers reach etcd on $ETCD_CONTAINER_URL)"
}

check_ports() {
    local addr host port
    for addr in "127.0.0.1:$ETCD_PORT" "127.0.0.1:$ETCD_PEER_PORT" "${ETCD_CONTAINER_URL#http://}" \
        "$DOCKREG_HTTP_BIND" "$DOCKREG_STATS_BIND"; do
        read -r host port < <(split_addr "$addr")
        if listening "$host" "$port"; then
            die "$host:$port is already in use; stop what listens there or pick other ports" \
                "(DEMO_ETCD_PORT, DEMO_ETCD_PEER_PORT, DOCKREG_HTTP_BIND, DOCKREG_STATS_BIND)"
        fi
    done
}

build() {
    TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
    [[ -n $TRIPLE ]] || die "cannot read the host target triple from rustc -vV"
    log "building dockreg-haproxy (cargo build --release)"
    cargo build --profile sidekick --bin dockreg-haproxy || die "cargo build failed"
    log "building a static dockreg for the image (crt-static, --target $TRIPLE, target/static)"
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile sidekick --bin dockreg \
        --target "$TRIPLE" --target-dir "$STATIC_DIR" || die "static build of dockreg failed"
}

make_run_dir() {
    RUN=$(mktemp -d "${TMPDIR:-/tmp}/dockreg-docker-demo.XXXXXX")
    export DOCKREG_RUN_DIR=$RUN
    log "run directory: $RUN"
}

build_image() {
    local ctx=$RUN/image out
    mkdir -p "$ctx"
    cp -r "$ROOT/examples/sidekick/." "$ctx/"
    cp "$STATIC_DIR/$TRIPLE/sidekick/dockreg" "$ctx/dockreg"
    cp /bin/busybox "$ctx/busybox"
    log "building image $IMAGE from examples/sidekick/Dockerfile (FROM scratch; nothing is pulled)"
    out=$(docker build -q -t "$IMAGE" "$ctx" 2>&1) || die "docker build failed:"$'\n'"$out"
    IMAGE_BUILT=1
    rm -rf "$ctx"
    log "image $IMAGE: $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.1f MB", $1 / 1e6 }')"
}

etcd_healthy() { etcdctl --endpoints "$ETCD_URL" --command-timeout=1s endpoint health >/dev/null 2>&1; }

start_etcd() {
    local urls="$ETCD_URL,$ETCD_CONTAINER_URL"
    start_daemon etcd etcd --name dockreg-docker-demo --data-dir "$RUN/etcd" \
        --listen-client-urls "$urls" --advertise-client-urls "$urls" \
        --listen-peer-urls "$ETCD_PEER_URL" --initial-advertise-peer-urls "$ETCD_PEER_URL" \
        --initial-cluster "dockreg-docker-demo=$ETCD_PEER_URL" --initial-cluster-state new \
        --logger zap --log-outputs stderr --log-level warn
    wait_until "etcd on $ETCD_URL" 20 etcd_healthy
    log "etcd is up on $ETCD_URL and $ETCD_CONTAINER_URL"
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

# The host port Docker published container $1's port 8000 on (its IPv4 binding).
published_port() { docker port "$1" 8000/tcp | awk -F: '/^0\.0\.0\.0:/ { print $NF; exit }'; }

key() { printf '/service/127.0.0.1:%s' "$1"; }
registered() { [[ -n $(etcdctl --endpoints "$ETCD_URL" get --keys-only "$(key "$1")" 2>/dev/null) ]]; }

# The container (index) that answers with host name $1.
container_of() {
    local i
    for i in "${!HOSTS[@]}"; do
        [[ ${HOSTS[i]} == "$1" ]] && { printf 'app-%s (host port %s)' "$((i + 1))" "${PORTS[i]}"; return; }
    done
    printf '%s' "$1"
}

run_apps() {
    local i id port
    for i in 1 2; do
        log "docker run -d -p 8000 -v /var/run/docker.sock:/var/run/docker.sock -e IP=127.0.0.1 -e DOCKREG_ETCD=$ETCD_CONTAINER_URL $IMAGE"
        id=$(docker run -d --name "dockreg-demo-$DEMO_ID-app$i" --label "dockreg-demo=$DEMO_ID" \
            -p 8000 -v /var/run/docker.sock:/var/run/docker.sock \
            -e IP=127.0.0.1 -e "DOCKREG_ETCD=$ETCD_CONTAINER_URL" "$IMAGE") ||
            die "docker run failed"
        CONTAINERS+=("$id")
        HOSTS+=("$(docker inspect --format '{{.Config.Hostname}}' "$id")")
        port=$(published_port "$id")
        [[ -n $port ]] || die "container ${id:0:12} has no IPv4 binding for 8000/tcp"
        PORTS+=("$port")
        log "app-$i: container ${id:0:12} (dockreg-demo-$DEMO_ID-app$i), port 8000 published on $port"
    done
    for i in "${!CONTAINERS[@]}"; do
        wait_until "app-$((i + 1))'s sidekick to register $(key "${PORTS[i]}")" 20 registered "${PORTS[i]}"
    done
    log "both sidekicks registered; etcdctl get --prefix /service/:"
    etcdctl --endpoints "$ETCD_URL" get --prefix /service/ | paste - - | sed 's/^/    /'
    log "app-1's sidekick log:"
    container_log "${CONTAINERS[0]}" | sed 's/^/    /'
}

URL=""
WHOAMI=""
set_url() {
    local host port
    read -r host port < <(split_addr "$DOCKREG_HTTP_BIND")
    [[ $host == *:* ]] && host="[$host]"
    URL="http://$host:$port/"
    WHOAMI="${URL}cgi-bin/whoami"
}

# True once a few requests reached every container.
routes_to_all() {
    local seen="" i answer host
    for ((i = 0; i < 8; i++)); do
        answer=$(curl -s --fail --max-time 2 "$WHOAMI") || return 1
        seen+="$answer;"
    done
    for host in "${HOSTS[@]}"; do
        [[ $seen == *"$host;"* ]] || return 1
    done
}

show_backends_file() {
    log "rendered $RUN/backends.cfg:"
    sed -e '/./,$!d' -e 's/^/    /' "$RUN/backends.cfg"
}

show_balance() {
    log "waiting until HAProxy routes to both containers"
    wait_until "HAProxy to route to both containers" 30 routes_to_all
    show_backends_file
    log "10 requests through $WHOAMI (each container answers with its host name):"
    local i answer answers=()
    for ((i = 1; i <= 10; i++)); do
        answer=$(curl -sS --fail --max-time 3 "$WHOAMI") || die "request $i through $WHOAMI failed"
        printf '    request %2d -> %s = %s\n' "$i" "$answer" "$(container_of "$answer")"
        answers+=("$answer")
    done
    log "answers per container:"
    printf '%s\n' "${answers[@]}" | sort | uniq -c | while read -r n host; do
        printf '    %3d  %s\n' "$n" "$(container_of "$host")"
    done
}

# Background: one request per new connection (a curl process each) until $RUN/loop-end exists
# and at least LOOP_REQUESTS were sent; one line per request: "<time µs> <status> <answer>".
request_loop() {
    local n=0 out code body
    while [[ ! -e $RUN/loop-end ]] || ((n < LOOP_REQUESTS)); do
        out=$(curl -s --max-time 3 -w '\n%{http_code}' "$WHOAMI" 2>/dev/null) || true
        code=${out##*$'\n'}
        body=${out%%$'\n'*}
        [[ $code == "$out" ]] && body=""
        printf '%s %s %s\n' "${EPOCHREALTIME/./}" "${code:-000}" "${body:--}" >>"$RUN/requests.log"
        n=$((n + 1))
    done
}

file_lacks() { ! grep -qF "$1" "$RUN/backends.cfg"; }
reloaded_since() { local now; now=$(master_reloads) && [[ -n $now ]] && ((now > $1)); }
usec() { printf '%s' "${EPOCHREALTIME/./}"; }

show_stop() {
    local victim=${CONTAINERS[1]} vhost=${HOSTS[1]} vport=${PORTS[1]} before t0 t_stop t_gone t_end
    before=$(master_reloads) || true
    [[ -n $before ]] || die "cannot read HAProxy's reload counter from $RUN/master.sock"
    : >"$RUN/requests.log"
    rm -f "$RUN/loop-end"
    log "request loop through $WHOAMI: a new connection per request, >= ${LOOP_SECONDS}s and >= $LOOP_REQUESTS requests"
    t0=$(usec)
    request_loop &
    LOOP_PID=$!
    sleep 1
    log "docker stop app-2 (${victim:0:12}, host port $vport) while the loop runs"
    t_stop=$(usec)
    docker stop "$victim" >/dev/null || die "docker stop failed"
    t_gone=$(usec)
    log "docker stop returned after $(((t_gone - t_stop) / 1000)) ms (the sidekick revoked its lease at once, drained 2 s, then stopped httpd)"
    registered "$vport" && die "$(key "$vport") is still registered after docker stop"
    wait_until "dockreg-haproxy to drop 127.0.0.1:$vport" 15 file_lacks "127.0.0.1:$vport"
    wait_until "HAProxy to reload" 15 reloaded_since "$before"
    # Keep the loop going a while after the container is gone, and for LOOP_SECONDS at least.
    sleep 2
    while (($(usec) - t0 < LOOP_SECONDS * 1000000)); do sleep 0.2; done
    touch "$RUN/loop-end"
    wait "$LOOP_PID" || die "the request loop failed"
    LOOP_PID=""
    t_end=$(usec)

    local total failed
    total=$(wc -l <"$RUN/requests.log")
    failed=$(awk '$2 != 200' "$RUN/requests.log" | wc -l)
    log "$total requests in $(((t_end - t0) / 1000)) ms, $failed failed; answers per container:"
    awk '$2 == 200 { print $3 }' "$RUN/requests.log" | sort | uniq -c | while read -r n host; do
        printf '    %4d  %s\n' "$n" "$(container_of "$host")"
    done
    awk -v t="$t_stop" -v h="$vhost" -v g="$t_gone" '
        $3 == h { last = $1 }
        $1 > g && $3 != h { after++ }
        END {
            if (last) printf "    app-2 answered its last request %d ms after docker stop was issued\n", (last - t) / 1000
            printf "    %d requests after app-2 exited, all answered by app-1\n", after
        }' "$RUN/requests.log"
    if ((failed > 0)); then
        log "failed requests (time since docker stop, status, answer):"
        awk -v t="$t_stop" '$2 != 200 { printf "    %+8d ms  %s  %s\n", ($1 - t) / 1000, $2, $3 }' \
            "$RUN/requests.log" | head -n 20
    fi
    log "HAProxy reloaded ($before -> $(master_reloads) reloads); etcdctl get --prefix /service/:"
    etcdctl --endpoints "$ETCD_URL" get --prefix /service/ | paste - - | sed 's/^/    /'
    show_backends_file
    log "app-2's sidekick log:"
    container_log "$victim" | sed 's/^/    /'
    ((total >= LOOP_REQUESTS)) || die "only $total requests were sent"
    ((failed == 0)) || die "$failed of $total requests failed while app-2 was stopped"
    log "docker stop under load: $total requests, 0 failed"
}

# Prints COMMAND under its comment.
hint() { printf '    # %s\n    %s\n' "$2" "$1"; }

try_it_yourself() {
    local one=${CONTAINERS[0]:0:12}
    echo
    log "Try it yourself, from another terminal:"
    hint "for i in \$(seq 10); do curl -s $WHOAMI; done" "which container answers"
    hint "docker run -d --label dockreg-demo=$DEMO_ID -p 8000 -v /var/run/docker.sock:/var/run/docker.sock -e IP=127.0.0.1 -e DOCKREG_ETCD=$ETCD_CONTAINER_URL $IMAGE" \
        "one more app container (removed with the others at the end)"
    hint "docker exec $one /bin/busybox rm /www/health" "make app-1 unhealthy: its key goes after 2 failed checks"
    hint "docker exec $one /bin/busybox touch /www/health" "and healthy again"
    hint "ETCDCTL_API=3 etcdctl --endpoints $ETCD_URL get --prefix /service/" "what is registered"
    hint "cat $RUN/backends.cfg" "the rendered backends"
    hint "docker logs -f $one" "what app-1's sidekick does"
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

    ensure_packages
    find_bridge
    check_ports
    build
    make_run_dir
    set_url
    build_image
    start_etcd
    start_haproxy
    start_watcher
    run_apps
    show_balance
    show_stop
    all_alive

    if interactive; then
        try_it_yourself
    else
        log "non-interactive mode: demonstration done, cleaning up"
    fi
}

main "$@"
