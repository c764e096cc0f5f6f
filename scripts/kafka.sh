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
# KAFKA_STOP_WITH_PID: stop the broker and delete its data once that process is gone (tests),
# KAFKA_HEAP_OPTS (-Xms256m -Xmx512m) and KAFKA_JVM_PERFORMANCE_OPTS (-XX:+UseG1GC): the
# broker's JVM, as with Kafka's own scripts. Its GC log is
# <KAFKA_HOME>/broker-<KAFKA_PORT>/logs/kafkaServer-gc.log.
#
# Secured listeners, off unless asked (PLAINTEXT on KAFKA_PORT stays, for inter-broker and admin):
#   KAFKA_SASL_SSL_PORT  also SASL_SSL on 127.0.0.1:that port: PLAIN, SCRAM-SHA-256 and
#                        SCRAM-SHA-512, user `saga`, password `saga-secret`
#   KAFKA_SSL_PORT       also SSL on 127.0.0.1:that port, ssl.client.auth=required (mutual TLS)
# With either, the first start makes a throwaway CA and certificates in
# <KAFKA_HOME>/broker-<KAFKA_PORT>/tls/: ca.pem (the CA); client.pem + client.key (a client
# certificate from it, CN=saga; PKCS#8 key, no passphrase) and client.keystore.p12 (the same for
# Java); broker.keystore.p12 (for DNS:localhost, IP:127.0.0.1) and truststore.p12 (the CA);
# other-ca.pem, other-client.pem + other-client.key from an unrelated CA (untrusted-certificate
# tests). The .p12 files are PKCS12 with password `saga-tls`. SCRAM users are written when the
# storage is formatted (a broker formatted without KAFKA_SASL_SSL_PORT gets them once it answers).
#
#   KAFKA_AUTHORIZER=1   (with KAFKA_SASL_SSL_PORT) Kafka's StandardAuthorizer, deny by default:
#                        only what ACLs allow (`saga acl` grants the saga's). SCRAM and PLAIN
#                        users, each with password `<user>-secret`: admin (the super user, and
#                        the broker's own principal to its controller and other brokers), the
#                        saga's principals order-service, payment-service, inventory-service,
#                        shipping-service, orders-view, the travel saga's trip-service,
#                        flight-service, hotel-service, car-service and billing-service,
#                        storefront and monitor, and saga. The PLAINTEXT
#                        listener stays, unauthenticated: it answers metadata, nothing else.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${KAFKA_PORT:-9092}
controller_port=${KAFKA_CONTROLLER_PORT:-$((port + 1))}
home=${KAFKA_HOME:-$repo/.kafka}
libs=$repo/.kafka/libs
run=$home/broker-$port
pidfile=$run/broker.pid
sasl_ssl_port=${KAFKA_SASL_SSL_PORT:-}
ssl_port=${KAFKA_SSL_PORT:-}
tls=$run/tls
tls_password=saga-tls
# The SASL user: PLAIN's from the listener's JAAS configuration, SCRAM's from the metadata log.
sasl_user=saga
sasl_password=saga-secret
authorizer=${KAFKA_AUTHORIZER:-0}
if [ "$authorizer" = 1 ]; then
  sasl_users=(saga admin order-service payment-service inventory-service shipping-service orders-view
    trip-service flight-service hotel-service car-service billing-service storefront monitor)
else
  sasl_users=(saga)
fi
password_of() { printf '%s-secret' "$1"; }

say() { printf 'kafka.sh: %s\n' "$*" >&2; }

install() {
  # The marker holds the pom it was made from: a changed pom fetches again.
  if [ -f "$libs/.complete" ] && cmp -s "$libs/.complete" "$repo/scripts/kafka/pom.xml"; then return; fi
  command -v mvn >/dev/null || { say "mvn is required to fetch Kafka from Maven Central"; exit 1; }
  command -v java >/dev/null || { say "java (17+) is required to run Kafka"; exit 1; }
  say "fetching Apache Kafka jars from Maven Central into $libs"
  rm -rf "$libs" && mkdir -p "$libs"
  mvn -q -B -f "$repo/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime
  cp "$repo/scripts/kafka/pom.xml" "$libs/.complete"
}

java_args() {
  java_opts=(-Djava.awt.headless=true
    -Dlog4j2.configurationFile="$repo/scripts/kafka/log4j2.properties"
    -Dkafka.logs.dir="$run/logs" -cp "$libs/*")
}
java_cmd() { java_args; java -Xms256m -Xmx512m -XX:+UseG1GC "${java_opts[@]}" "$@"; }

# The broker's JVM, overridden as with Kafka's own kafka-server-start.sh (KAFKA_HEAP_OPTS,
# KAFKA_JVM_PERFORMANCE_OPTS), and its GC log where Kafka writes it (-loggc). A stop-the-world
# pause holds a core from every service on a small host; the log says when and how long
# (BENCHMARKS.md, session 12: Kafka's own 1 GiB and 20 ms pause target did not shorten them).
broker_jvm_opts() {
  local heap perf
  # Lists of options split on spaces, as in Kafka's scripts, and never globbed.
  read -ra heap <<<"${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
  read -ra perf <<<"${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC}"
  # The file name quoted: -Xlog splits on colons.
  broker_opts=("${heap[@]}" "${perf[@]}"
    "-Xlog:gc*:file=\"$run/logs/kafkaServer-gc.log\":time,tags:filecount=5,filesize=20M")
}

alive() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

# A TCP connect is not enough: the broker must answer a metadata request.
answers() {
  if command -v kcat >/dev/null; then
    kcat -b "127.0.0.1:$port" -L -m 2 >/dev/null 2>&1
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
  fi
}

# A throwaway CA, the broker's certificate and client certificates, in $tls (once).
make_tls() {
  if [ -f "$tls/.complete" ]; then return; fi
  command -v openssl >/dev/null || { say "openssl is required for KAFKA_SASL_SSL_PORT / KAFKA_SSL_PORT"; exit 1; }
  command -v keytool >/dev/null || { say "keytool (JDK) is required for KAFKA_SASL_SSL_PORT / KAFKA_SSL_PORT"; exit 1; }
  say "making a throwaway CA and certificates in $tls"
  rm -rf "$tls" && mkdir -p "$tls"
  # errexit does not reach into a function run as `... || true`: see what it made instead.
  (cd "$tls" && tls_files) >"$run/logs/tls.log" 2>&1 || true
  local file
  for file in ca.pem client.pem client.key client.keystore.p12 broker.keystore.p12 truststore.p12 \
    other-ca.pem other-client.pem other-client.key; do
    if [ ! -s "$tls/$file" ]; then say "could not make $tls/$file; see $run/logs/tls.log"; exit 1; fi
  done
  touch "$tls/.complete"
}

tls_files() {
  # RSA 2048 and SHA-256: what every client here accepts (Java, librdkafka, rustls with ring).
  local name pid pids=()
  for name in ca broker client other-ca other-client; do
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$name.key" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  printf '%s\n' basicConstraints=critical,CA:TRUE keyUsage=critical,keyCertSign,cRLSign \
    subjectKeyIdentifier=hash >ca.ext
  printf '%s\n' basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
    extendedKeyUsage=serverAuth subjectAltName=DNS:localhost,IP:127.0.0.1 \
    subjectKeyIdentifier=hash authorityKeyIdentifier=keyid >broker.ext
  printf '%s\n' basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
    extendedKeyUsage=clientAuth subjectKeyIdentifier=hash authorityKeyIdentifier=keyid >client.ext
  # cert NAME SUBJECT EXTENSIONS [CA]: NAME.pem from NAME.key, signed by CA (itself without one).
  cert() {
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    local signer=(-signkey "$1.key")
    if [ -n "${4:-}" ]; then signer=(-CA "$4.pem" -CAkey "$4.key"); fi
    openssl x509 -req -in "$1.csr" "${signer[@]}" -extfile "$3" -days 3650 -sha256 \
      -set_serial "0x$(openssl rand -hex 8)" -out "$1.pem"
  }
  cert ca "/CN=saga throwaway CA" ca.ext
  cert broker "/CN=localhost" broker.ext ca
  cert client "/CN=saga" client.ext ca
  cert other-ca "/CN=unrelated throwaway CA" ca.ext
  cert other-client "/CN=saga" client.ext other-ca
  openssl pkcs12 -export -name broker -in broker.pem -inkey broker.key -certfile ca.pem \
    -passout "pass:$tls_password" -out broker.keystore.p12
  openssl pkcs12 -export -name client -in client.pem -inkey client.key -certfile ca.pem \
    -passout "pass:$tls_password" -out client.keystore.p12
  # Java trusts a PKCS12 certificate entry only with a mark that OpenSSL 3.0 cannot write.
  keytool -importcert -noprompt -alias ca -file ca.pem -keystore truststore.p12 \
    -storetype PKCS12 -storepass "$tls_password"
  rm -f ./*.csr ./*.ext ca.key other-ca.key broker.key
}

configure() {
  mkdir -p "$run/data" "$run/logs"
  if [ "$authorizer" = 1 ] && [ -z "$sasl_ssl_port" ]; then
    say "KAFKA_AUTHORIZER=1 needs KAFKA_SASL_SSL_PORT (principals authenticate there)"; exit 1
  fi
  local listeners="PLAINTEXT://127.0.0.1:$port" advertised="PLAINTEXT://127.0.0.1:$port"
  local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT" inter_broker=PLAINTEXT
  if [ "$authorizer" = 1 ]; then
    # The broker authenticates as the super user wherever it is a client: to the controller
    # and to other brokers. Unauthenticated, it would be ANONYMOUS, which would then have to
    # be a super user, and so would every client of a PLAINTEXT listener.
    protocols="CONTROLLER:SASL_PLAINTEXT,PLAINTEXT:PLAINTEXT" inter_broker=SASL_SSL
  fi
  if [ -n "$sasl_ssl_port" ]; then
    listeners+=",SASL_SSL://127.0.0.1:$sasl_ssl_port" advertised+=",SASL_SSL://127.0.0.1:$sasl_ssl_port"
    protocols+=",SASL_SSL:SASL_SSL"
  fi
  if [ -n "$ssl_port" ]; then
    listeners+=",SSL://127.0.0.1:$ssl_port" advertised+=",SSL://127.0.0.1:$ssl_port"
    protocols+=",SSL:SSL"
  fi
  cat >"$run/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=$listeners,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=$inter_broker
listener.security.protocol.map=$protocols
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
  if [ -n "$sasl_ssl_port$ssl_port" ]; then
    make_tls
    cat >>"$run/server.properties" <<EOF
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/broker.keystore.p12
ssl.keystore.password=$tls_password
ssl.key.password=$tls_password
ssl.truststore.type=PKCS12
ssl.truststore.location=$tls/truststore.p12
ssl.truststore.password=$tls_password
EOF
  fi
  if [ -n "$ssl_port" ]; then
    echo "listener.name.ssl.ssl.client.auth=required" >>"$run/server.properties"
  fi
  if [ -n "$sasl_ssl_port" ]; then
    local user plain_users="" self=""
    for user in "${sasl_users[@]}"; do plain_users+=" user_$user=\"$(password_of "$user")\""; done
    if [ "$authorizer" = 1 ]; then self=" username=\"admin\" password=\"$(password_of admin)\""; fi
    cat >>"$run/server.properties" <<EOF
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$self$plain_users;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
  fi
  if [ "$authorizer" = 1 ]; then
    cat >>"$run/server.properties" <<EOF
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin
sasl.mechanism.inter.broker.protocol=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$(password_of admin)" user_admin="$(password_of admin)";
EOF
  fi
  if [ ! -f "$run/data/meta.properties" ]; then
    say "formatting KRaft storage in $run/data"
    local scram=() user
    if [ -n "$sasl_ssl_port" ]; then
      for user in "${sasl_users[@]}"; do
        scram+=(--add-scram "SCRAM-SHA-256=[name=$user,password=$(password_of "$user")]"
          --add-scram "SCRAM-SHA-512=[name=$user,password=$(password_of "$user")]")
      done
    fi
    java_cmd kafka.tools.StorageTool format -t "$(java_cmd kafka.tools.StorageTool random-uuid)" \
      -c "$run/server.properties" ${scram[@]+"${scram[@]}"} >"$run/logs/format.log" 2>&1
    if [ -n "$sasl_ssl_port" ]; then touch "$run/scram-users"; fi
    if [ "$authorizer" = 1 ]; then touch "$run/authorizer-users"; fi
  fi
  if [ "$authorizer" = 1 ] && [ ! -f "$run/authorizer-users" ]; then
    say "this broker's storage was formatted without KAFKA_AUTHORIZER=1, so it lacks the saga's users; start from nothing with: $0 reset"
    exit 1
  fi
}

# Storage formatted before KAFKA_SASL_SSL_PORT was asked for has no SCRAM users: add them.
add_scram_users() {
  if [ -z "$sasl_ssl_port" ] || [ -f "$run/scram-users" ]; then return; fi
  say "adding SCRAM users to storage formatted without them"
  local mechanism
  for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do # one a request: Kafka refuses two at once
    if ! java_cmd kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$port" --alter \
      --entity-type users --entity-name "$sasl_user" --add-config "$mechanism=[password=$sasl_password]" \
      >>"$run/logs/format.log" 2>&1; then
      say "could not add SCRAM users (the broker runs); see $run/logs/format.log"; exit 1
    fi
  done
  touch "$run/scram-users"
}

start() {
  install
  if alive; then say "already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; return; fi
  local p
  for p in "$port" "$controller_port" $sasl_ssl_port $ssl_port; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      say "port $p is taken (another broker?); set KAFKA_PORT / KAFKA_CONTROLLER_PORT / KAFKA_SASL_SSL_PORT"; exit 1
    fi
  done
  configure
  say "starting broker on 127.0.0.1:$port (logs: $run/logs/broker.log)"
  java_args
  broker_jvm_opts
  # Its own session: a Ctrl-C meant for scripts that started it does not reach the broker.
  setsid nohup java "${broker_opts[@]}" "${java_opts[@]}" kafka.Kafka "$run/server.properties" >"$run/logs/broker.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  if [ -n "${KAFKA_STOP_WITH_PID:-}" ]; then
    # A test run owns this broker: stop it and remove its data when the test process exits.
    nohup bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done
      kill -TERM "$2" 2>/dev/null; for _ in $(seq 1 30); do kill -0 "$2" 2>/dev/null || break; sleep 0.5; done
      kill -KILL "$2" 2>/dev/null; rm -rf "$3"; rmdir "$4" 2>/dev/null' _ "$KAFKA_STOP_WITH_PID" "$(cat "$pidfile")" "$run" "$home" >/dev/null 2>&1 </dev/null &
  fi
  for _ in $(seq 1 120); do
    if ! alive; then say "broker exited during start-up; last lines of its log:"; tail -20 "$run/logs/broker.log" >&2; exit 1; fi
    # One that exited (a port it could not bind) must not pass for one that answers.
    if answers; then
      say "broker answers on 127.0.0.1:$port${sasl_ssl_port:+ (SASL_SSL on $sasl_ssl_port)}${ssl_port:+ (SSL on $ssl_port)}"
      add_scram_users
      return
    fi
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
  *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
esac
