#!/usr/bin/env bash
# Every test: unit and property tests, then the system tests, which start a real Kafka broker
# (scripts/kafka.sh, on free ports) and the real service binaries. Extra arguments go to
# `cargo test`, e.g. `scripts/test.sh -p payment-service`.
# Set KAFKA_BOOTSTRAP_SERVERS to run the system tests against a broker you started yourself.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if ! command -v kcat >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "test.sh: installing kcat (Debian package)" >&2
    apt-get update -qq && apt-get install -y -qq kcat >/dev/null
  else
    echo "test.sh: the system tests publish with kcat; install it first: sudo apt-get install kcat" >&2
    exit 1
  fi
fi
scripts/kafka.sh install
exec cargo test --workspace "$@"
