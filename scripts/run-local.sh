#!/usr/bin/env bash
# The whole system on this machine: a local Kafka broker, the order saga's four services and the
# orders view, the travel saga's five services, their logs interleaved in this terminal, each
# line prefixed with the service's name.
#
#   scripts/run-local.sh            build (release), start broker + services; Ctrl-C stops all
#   RESET=1 scripts/run-local.sh    start from nothing: delete the broker's and services' data
#   KEEP_BROKER=1 ...               leave the broker running after Ctrl-C
#   LOG_FORMAT=json ...             JSON logs
#   SECURED=1 ...                   Kafka as companies run it: SASL_SSL on 127.0.0.1:9094 with a
#                                   throwaway CA, the StandardAuthorizer (deny by default), each
#                                   service as its own SCRAM user, ACLs granted by `saga acl`; the
#                                   storefront user places orders (README, "Only the right service…")
#
# Services keep their state in ./data/<service>; the broker in ./.kafka. Port: KAFKA_PORT (9092).
# Each serves /metrics, /healthz and /readyz on 127.0.0.1:9601 (order) to 9604 (shipping), 9605
# (the view), and 9606 (trip) to 9610 (billing). The orders view answers on
# http://127.0.0.1:8080 (SAGA_HTTP_ADDR).
# Secured, they keep it in ./data/secured/<service>, the broker in ./.kafka/secured (a broker of
# its own: users and ACLs do not mix with the plain one's data; PLAINTEXT on 9192).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
port=${KAFKA_PORT:-9092}
binaries=(order-service payment-service inventory-service shipping-service orders-view
  trip-service flight-service hotel-service car-service billing-service)
metrics_port=9601 # order; then payment, inventory, shipping (README, "Metrics and probes")
secured=${SECURED:-0}
data=data
if [ "$secured" = 1 ]; then
  # Ports of its own, so a plain broker left running cannot answer in its place.
  port=${KAFKA_PORT:-9192}
  export KAFKA_PORT=$port KAFKA_HOME=$repo/.kafka/secured KAFKA_SASL_SSL_PORT=${KAFKA_SASL_SSL_PORT:-9094} KAFKA_AUTHORIZER=1
  data=data/secured
fi

if [ "${RESET:-0}" = 1 ]; then
  scripts/kafka.sh reset
  for b in "${binaries[@]}"; do rm -rf "${data:?}/${b%-service}"; done # not data/secured: the other run's
fi

echo "run-local: building the services (release)…" >&2
cargo build --release --quiet $(printf -- '-p %s ' "${binaries[@]}") -p saga-cli
scripts/kafka.sh start

export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$port
if [ "$secured" = 1 ]; then
  # Every binary reads these; each service gets its own user below.
  export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_SASL_SSL_PORT KAFKA_SECURITY_PROTOCOL=SASL_SSL \
    KAFKA_SSL_CA_LOCATION=$KAFKA_HOME/broker-$port/tls/ca.pem KAFKA_SASL_MECHANISM=SCRAM-SHA-512
  echo "run-local: granting the saga's ACLs (saga acl, as the super user admin)…" >&2
  KAFKA_SASL_USERNAME=admin KAFKA_SASL_PASSWORD=admin-secret ./target/release/saga acl | tail -1 >&2
fi
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

for i in "${!binaries[@]}"; do
  b=${binaries[$i]}
  s=${b%-service}
  label=$(printf '%-11s|' "$s")
  flags=(--data-dir "$data/$s" --metrics-addr "127.0.0.1:$((metrics_port + i))")
  if [ "$b" = orders-view ]; then flags+=(--http-addr "${SAGA_HTTP_ADDR:-127.0.0.1:8080}" --fetch-min-bytes 262144); fi
  if [ "$secured" = 1 ]; then
    KAFKA_SASL_USERNAME=$b KAFKA_SASL_PASSWORD=$b-secret \
      ./target/release/$b "${flags[@]}" > >(sed -u "s/^/$label /") 2>&1 &
  else
    ./target/release/$b "${flags[@]}" > >(sed -u "s/^/$label /") 2>&1 &
  fi
  pids+=($!)
done
if [ "$secured" = 1 ]; then
  echo "run-local: SASL_SSL broker on $KAFKA_BOOTSTRAP_SERVERS (CA: $KAFKA_SSL_CA_LOCATION), services running as their own users; publish as storefront (see README), Ctrl-C to stop" >&2
else
  echo "run-local: broker on 127.0.0.1:$port, services running, the orders view on http://${SAGA_HTTP_ADDR:-127.0.0.1:8080}; publish an order (see README), Ctrl-C to stop" >&2
fi

# If a service dies on its own, say so and stop the rest.
while true; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      wait "${pids[$i]}" && code=0 || code=$?
      echo "run-local: ${binaries[$i]} exited (code $code); stopping" >&2
      unset 'pids[i]'
      stop
    fi
  done
  sleep 1 & wait $! # wait is interruptible, so Ctrl-C is handled at once
done
