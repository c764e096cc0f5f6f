#!/usr/bin/env bash
# The benchmark: builds release binaries, starts a broker of its own (port BENCH_KAFKA_PORT,
# default 19192, fresh data), runs saga-bench, stops the broker. Arguments go to saga-bench:
#
#   scripts/bench.sh                                  the default report (50000 orders after 10000 warm-up, 3 partitions)
#   scripts/bench.sh --orders 50000 --partitions 6    another size
#   scripts/bench.sh --items 20 --json bench.json     bigger payloads, JSON results
#   scripts/bench.sh --phases saga --rate 500         one fixed-rate run
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
cargo build --release --quiet --workspace
export KAFKA_PORT=${BENCH_KAFKA_PORT:-19192}
export KAFKA_HOME=$repo/target/bench-kafka
# Two runs on one port would share (and reset) one broker and corrupt each other's figures.
if (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; then
  echo "bench.sh: port $KAFKA_PORT is in use (another bench running?); set BENCH_KAFKA_PORT" >&2
  exit 1
fi
scripts/kafka.sh reset >/dev/null 2>&1 || true
scripts/kafka.sh start
trap 'scripts/kafka.sh stop; [ -n "${KEEP_BENCH_LOGS:-}" ] || rm -rf "$repo/target/bench"' EXIT
target/release/saga-bench --bootstrap-servers "127.0.0.1:$KAFKA_PORT" --bin-dir target/release \
  --broker-pid "$(cat "$KAFKA_HOME/broker-$KAFKA_PORT/broker.pid")" "$@"
