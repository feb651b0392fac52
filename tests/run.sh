#!/usr/bin/env bash
# Runs every test of the workspace: unit, property and integration tests against a real etcd,
# a real HAProxy and real HTTP traffic. Installs what the tests need from Debian packages when
# it is missing (etcd, HAProxy, protoc for etcd-client's build, openssl for test certificates,
# a static busybox for the sidekick's test image, systemd-analyze for the units, cargo-deb
# for the package),
# then runs `cargo test`.
#
#   bash tests/run.sh            # everything
#   bash tests/run.sh burst      # only tests whose name contains "burst"
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v haproxy >/dev/null || need+=(haproxy)
command -v protoc >/dev/null || need+=(protobuf-compiler)
# etcd-client's build imports google/protobuf/*.proto: a protoc without them fails the build.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v openssl >/dev/null || need+=(openssl)
# The systemd units are checked with systemd-analyze verify.
command -v systemd-analyze >/dev/null || need+=(systemd)
docker_ok=false
if command -v docker >/dev/null && docker version >/dev/null 2>&1; then
  docker_ok=true
  # The sidekick tests build a FROM-scratch image: a static busybox is the app.
  [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)
  # The agent's socket-proxy test forwards a TCP port to the Docker socket with socat.
  command -v socat >/dev/null || need+=(socat)
fi
if ((${#need[@]})); then
  echo "==> installing ${need[*]} (Debian packages)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian packages may start system services; the tests start their own on free ports.
echo "==> etcd $(etcd --version | head -1 | awk '{print $3}'), $(haproxy -v | head -1 | awk '{print $1, $3}')"
if $docker_ok; then
  # The sidekick image needs a statically linked dockreg; build it up front (its own target
  # folder) so the first Docker test does not sit silent through a release build, and hand
  # it to the tests, which then build nothing (tests/kit/src/docker.rs).
  echo "==> building a static dockreg for the test image"
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile sidekick --bin dockreg \
    --target x86_64-unknown-linux-gnu --target-dir target/static
  export DOCKREG_TEST_STATIC_BIN="$PWD/target/static/x86_64-unknown-linux-gnu/sidekick/dockreg"
  # The test image is this checkout's own (a run in another checkout has another tag), and is
  # removed when the run ends, with any container of it a killed test left behind.
  DOCKREG_TEST_IMAGE="dockreg-test:$(pwd -P | sha256sum | cut -c1-16)"
  export DOCKREG_TEST_IMAGE
  remove_test_image() {
    local left
    left=$(docker ps -aq --filter "ancestor=$DOCKREG_TEST_IMAGE" 2>/dev/null || true)
    # shellcheck disable=SC2086 # one id a word
    [ -z "$left" ] || docker rm -f $left >/dev/null 2>&1 || true
    if docker image inspect "$DOCKREG_TEST_IMAGE" >/dev/null 2>&1; then
      docker rmi "$DOCKREG_TEST_IMAGE" >/dev/null || echo "==> could not remove $DOCKREG_TEST_IMAGE" >&2
    fi
  }
  trap remove_test_image EXIT
else
  echo "==> no Docker engine reachable: the sidekick container tests will skip (they fail under CI=true)"
fi
# The Debian package, for tests/it/package.rs (installed into a scratch root, never the machine).
if ! command -v cargo-deb >/dev/null; then
  echo "==> installing cargo-deb (builds the Debian package)"
  cargo install cargo-deb --locked --version 3.8.0
fi
echo "==> building the Debian package"
cargo build --release --bins
cargo run -q --example gen_docs -- target/docs >/dev/null
cargo deb --no-build -o target/debian/dockreg.deb >/dev/null
export DOCKREG_TEST_DEB="$PWD/target/debian/dockreg.deb"
cargo test --all-targets "$@"
