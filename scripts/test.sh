#!/usr/bin/env bash
# Every test: unit and property tests, then the system tests, which start a real Kafka broker
# (scripts/kafka.sh, on free ports) and the real service binaries. Extra arguments go to
# `cargo test`, e.g. `scripts/test.sh -p payment-rules`.
# Set KAFKA_BOOTSTRAP_SERVERS to run the system tests against a broker you started yourself.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# kcat publishes like a person would; docker-compose (a real Compose implementation, which
# needs no Docker engine for `config`) validates compose.yaml; openssl makes the secured
# broker's throwaway CA and certificates; prometheus (with promtool) scrapes the services and
# checks their exposition; chromium (headless) renders the orders view's page.
missing=()
command -v kcat >/dev/null || missing+=(kcat)
command -v openssl >/dev/null || missing+=(openssl)
{ command -v prometheus && command -v promtool; } >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then
  missing+=(docker-compose)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "test.sh: installing ${missing[*]} (Debian packages)" >&2
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "test.sh: the tests need ${missing[*]}; install first: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
scripts/kafka.sh install
exec cargo test --workspace "$@"
