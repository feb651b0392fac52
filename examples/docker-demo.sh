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

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

export DOCKREG_HTTP_BIND=${DOCKREG_HTTP_BIND:-127.0.0.1:8090}
export DOCKREG_STATS_BIND=${DOCKREG_STATS_BIND:-127.0.0.1:8494}
ETCD_PORT=${DEMO_ETCD_PORT:-12479}
ETCD_PEER_PORT=${DEMO_ETCD_PEER_PORT:-12480}
LOOP_SECONDS=${DEMO_LOOP_SECONDS:-5}
LOOP_REQUESTS=${DEMO_LOOP_REQUESTS:-200}

ETCD_URL="http://127.0.0.1:$ETCD_PORT"
ETCD_PEER_URL="http://127.0.0.1:$ETCD_PEER_PORT"
ETCD_CONTAINER_URL=""   # http://<bridge address>:$ETCD_PORT, set by find_bridge
STATIC_DIR="$ROOT/target/static"
TRIPLE=""               # host target triple, set by build
DEMO_ID="$$"            # labels this run's containers: dockreg-demo=$DEMO_ID
IMAGE="dockreg-sidekick-demo:run$DEMO_ID"
IMAGE_BUILT=0

LOOP_PID=""   # the background request loop of step 6
CONTAINERS=() # app containers: ids
HOSTS=()      # their host names (short ids), what /cgi-bin/whoami answers
PORTS=()      # their published host ports
WHOAMI=""     # ${URL}cgi-bin/whoami, set by set_urls

# ---------------------------------------------------------------------------------------------
# Helpers (the shared ones are in examples/lib.sh)

# A container's log without the colour codes of the sidekick's text log.
container_log() { docker logs "$1" 2>&1 | sed 's/\x1b\[[0-9;]*m//g'; }

# This run's containers: the ones it started and any started from the hints with its label.
demo_containers() {
    {
        printf '%s\n' "${CONTAINERS[@]}"
        docker ps -aq --no-trunc --filter "label=dockreg-demo=$DEMO_ID" 2>/dev/null
    } | awk 'NF && !seen[$0]++'
}

# cleanup hooks (see cleanup in lib.sh): stop the request loop, show the containers' logs on
# failure, remove the containers and the image before the daemons stop.
cleanup_first() {
    if [[ -n $LOOP_PID ]] && alive "$LOOP_PID"; then
        kill "$LOOP_PID" 2>/dev/null
        wait "$LOOP_PID" 2>/dev/null
    fi
}

cleanup_failure_logs() {
    local id
    for id in "${CONTAINERS[@]}"; do
        printf '\n==> last lines of container %.12s:\n' "$id" >&2
        container_log "$id" | tail -n 15 >&2
    done
}

cleanup_before_stop() {
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
}

# ---------------------------------------------------------------------------------------------
# Steps

# True when /bin/busybox exists and is statically linked (it must run in a FROM-scratch image).
static_busybox() { [[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1; }

ensure_packages() {
    local missing
    mapfile -t missing < <(missing_packages etcd=etcd-server etcdctl=etcd-client haproxy=haproxy \
        protoc=protobuf-compiler \
        /usr/include/google/protobuf/descriptor.proto=libprotobuf-dev socat=socat curl=curl setsid=util-linux ip=iproute2)
    static_busybox || missing+=(busybox-static)
    ensure_cargo
    command -v docker >/dev/null || die "docker not found: install Docker (apt-get install docker.io) first"
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
        die "no Docker engine reachable (docker version failed): start it, or run as a user in the docker group"
    install_packages "${missing[@]}"
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
    ports_free "DEMO_ETCD_PORT, DEMO_ETCD_PEER_PORT, DOCKREG_HTTP_BIND, DOCKREG_STATS_BIND" \
        "127.0.0.1:$ETCD_PORT" "127.0.0.1:$ETCD_PEER_PORT" "${ETCD_CONTAINER_URL#http://}" \
        "$DOCKREG_HTTP_BIND" "$DOCKREG_STATS_BIND"
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

# The host port Docker published container $1's port 8000 on (its IPv4 binding).
published_port() { docker port "$1" 8000/tcp | awk -F: '/^0\.0\.0\.0:/ { print $NF; exit }'; }

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

# Sets URL (lib.sh's set_url) and WHOAMI.
set_urls() {
    set_url
    WHOAMI="${URL}cgi-bin/whoami"
}

show_balance() {
    log "waiting until HAProxy routes to both containers"
    wait_until "HAProxy to route to both containers" 30 routes_to_all "$WHOAMI" "${HOSTS[@]}"
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
    # Through HAProxy's runtime API: the server leaves at once, with no reload.
    log "applied without a reload ($before -> $(master_reloads) reloads)"
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
    wait_for_ctrl_c
}

main() {
    install_traps

    ensure_packages
    find_bridge
    check_ports
    build
    make_run_dir dockreg-docker-demo
    set_urls
    build_image
    start_etcd dockreg-docker-demo "$ETCD_URL,$ETCD_CONTAINER_URL" \
        "$ETCD_URL and $ETCD_CONTAINER_URL"
    start_haproxy
    start_watcher
    run_apps
    show_balance
    show_stop
    finish
}

main "$@"
