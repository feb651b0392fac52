#!/usr/bin/env bash
# Runs every test of the workspace: unit, property and integration tests against a real etcd,
# a real HAProxy and real HTTP traffic. Installs what the tests need from Debian packages when
# it is missing (etcd, HAProxy, protoc for etcd-client's build, openssl for test certificates),
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
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  echo "==> installing ${need[*]} (Debian packages)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian packages may start system services; the tests start their own on free ports.
echo "==> etcd $(etcd --version | head -1 | awk '{print $3}'), $(haproxy -v | head -1 | awk '{print $1, $3}')"
cargo test --all-targets "$@"
