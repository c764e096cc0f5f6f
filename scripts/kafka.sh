#!/usr/bin/env bash
# A local, single-node Apache Kafka broker (KRaft) on loopback, built from Maven Central jars.
#
#   scripts/kafka.sh install   copy Kafka and its dependencies into .kafka/libs (needs mvn, java)
#   scripts/kafka.sh start     install if needed, format on first start, start, wait until it answers
#   scripts/kafka.sh stop      stop it cleanly (SIGTERM, then wait)
#   scripts/kafka.sh status    exit 0 when it answers
#   scripts/kafka.sh reset     stop and delete its data
#
# Settings (environment): KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (KAFKA_PORT+1),
# KAFKA_HOME (<repo>/.kafka): where data, config and logs live (jars stay in <repo>/.kafka/libs),
# KAFKA_STOP_WITH_PID: stop the broker and delete its data once that process is gone (tests).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${KAFKA_PORT:-9092}
controller_port=${KAFKA_CONTROLLER_PORT:-$((port + 1))}
home=${KAFKA_HOME:-$repo/.kafka}
libs=$repo/.kafka/libs
run=$home/broker-$port
pidfile=$run/broker.pid

say() { printf 'kafka.sh: %s\n' "$*" >&2; }

install() {
  if [ -f "$libs/.complete" ]; then return; fi
  command -v mvn >/dev/null || { say "mvn is required to fetch Kafka from Maven Central"; exit 1; }
  command -v java >/dev/null || { say "java (17+) is required to run Kafka"; exit 1; }
  say "fetching Apache Kafka jars from Maven Central into $libs"
  rm -rf "$libs" && mkdir -p "$libs"
  mvn -q -B -f "$repo/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime
  touch "$libs/.complete"
}

java_args() {
  java_opts=(-Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$repo/scripts/kafka/log4j2.properties"
    -Dkafka.logs.dir="$run/logs" -cp "$libs/*")
}
java_cmd() { java_args; java "${java_opts[@]}" "$@"; }

alive() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

# A TCP connect is not enough: the broker must answer a metadata request.
answers() {
  if command -v kcat >/dev/null; then
    kcat -b "127.0.0.1:$port" -L -m 2 >/dev/null 2>&1
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
  fi
}

configure() {
  mkdir -p "$run/data" "$run/logs"
  cat >"$run/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$run/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
  if [ ! -f "$run/data/meta.properties" ]; then
    say "formatting KRaft storage in $run/data"
    java_cmd kafka.tools.StorageTool format -t "$(java_cmd kafka.tools.StorageTool random-uuid)" \
      -c "$run/server.properties" >"$run/logs/format.log" 2>&1
  fi
}

start() {
  install
  if alive; then say "already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; return; fi
  configure
  say "starting broker on 127.0.0.1:$port (logs: $run/logs/broker.log)"
  java_args
  # Its own session: a Ctrl-C meant for scripts that started it does not reach the broker.
  setsid nohup java "${java_opts[@]}" kafka.Kafka "$run/server.properties" >"$run/logs/broker.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  if [ -n "${KAFKA_STOP_WITH_PID:-}" ]; then
    # A test run owns this broker: stop it and remove its data when the test process exits.
    nohup bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done
      kill -TERM "$2" 2>/dev/null; for _ in $(seq 1 30); do kill -0 "$2" 2>/dev/null || break; sleep 0.5; done
      kill -KILL "$2" 2>/dev/null; rm -rf "$3"; rmdir "$4" 2>/dev/null' _ "$KAFKA_STOP_WITH_PID" "$(cat "$pidfile")" "$run" "$home" >/dev/null 2>&1 </dev/null &
  fi
  for _ in $(seq 1 120); do
    if answers; then say "broker answers on 127.0.0.1:$port"; return; fi
    if ! alive; then say "broker exited during start-up; last lines of its log:"; tail -20 "$run/logs/broker.log" >&2; exit 1; fi
    sleep 0.5
  done
  say "broker did not answer within 60 s; see $run/logs/broker.log"; exit 1
}

stop() {
  if ! alive; then rm -f "$pidfile"; say "not running"; return; fi
  local pid; pid=$(cat "$pidfile")
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    if ! kill -0 "$pid" 2>/dev/null; then rm -f "$pidfile"; say "stopped"; return; fi
    sleep 0.5
  done
  say "broker ignored SIGTERM for 30 s; killing it"; kill -KILL "$pid" 2>/dev/null || true; rm -f "$pidfile"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) if alive && answers; then say "running on 127.0.0.1:$port"; else say "not running"; exit 1; fi ;;
  reset) stop; rm -rf "$run"; say "data deleted" ;;
  *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
