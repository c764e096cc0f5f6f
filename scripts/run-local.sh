#!/usr/bin/env bash
# The whole saga on this machine: a local Kafka broker and the four services, their logs
# interleaved in this terminal, each line prefixed with the service's name.
#
#   scripts/run-local.sh            build (release), start broker + services; Ctrl-C stops all
#   RESET=1 scripts/run-local.sh    start from nothing: delete the broker's and services' data
#   KEEP_BROKER=1 ...               leave the broker running after Ctrl-C
#   LOG_FORMAT=json ...             JSON logs
#
# Services keep their state in ./data/<service>; the broker in ./.kafka. Port: KAFKA_PORT (9092).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
port=${KAFKA_PORT:-9092}
services=(order payment inventory shipping)

if [ "${RESET:-0}" = 1 ]; then
  scripts/kafka.sh reset
  rm -rf data
fi

echo "run-local: building the services (release)…" >&2
cargo build --release --quiet $(printf -- '-p %s-service ' "${services[@]}") -p saga-cli
scripts/kafka.sh start

export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$port
if [ -t 1 ]; then export CLICOLOR_FORCE=1; fi

pids=()
stop() {
  trap - INT TERM
  echo "run-local: stopping services…" >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP_BROKER:-0}" != 1 ]; then scripts/kafka.sh stop; fi
  exit 0
}
trap stop INT TERM

for s in "${services[@]}"; do
  label=$(printf '%-9s|' "$s")
  ./target/release/$s-service > >(sed -u "s/^/$label /") 2>&1 &
  pids+=($!)
done
echo "run-local: broker on 127.0.0.1:$port, services running; publish an order (see README), Ctrl-C to stop" >&2

# If a service dies on its own, say so and stop the rest.
while true; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      wait "${pids[$i]}" && code=0 || code=$?
      echo "run-local: ${services[$i]}-service exited (code $code); stopping" >&2
      unset 'pids[i]'
      stop
    fi
  done
  sleep 1 & wait $! # wait is interruptible, so Ctrl-C is handled at once
done
