#!/usr/bin/env bash
# A throwaway CA and the broker's certificate for compose.secured.yaml, made with keytool alone
# (the Kafka image has Java but no openssl). Writes into $1 (default /tls), once:
#   ca.pem                 the CA, for clients (the services, kcat, saga)
#   broker.keystore.p12    the broker's key and certificate (DNS:kafka, DNS:localhost,
#                          IP:127.0.0.1), chained to the CA; PKCS12, password `saga-tls`
#   truststore.p12         the CA, for the broker as a client of itself; same password
#   admin.properties       the Kafka tools' client settings, as the super user (healthcheck, topics)
set -euo pipefail
dir=${1:-/tls}
password=saga-tls
cd "$dir"
if [ -f .complete ]; then exit 0; fi
rm -f ./*.p12 ./*.pem admin.properties
store() { printf '%s\n' -storetype PKCS12 -storepass "$password"; }
# RSA 2048 and SHA-256: what every client here accepts (Java, librdkafka, rustls with ring).
keytool -genkeypair -alias ca -dname "CN=saga compose throwaway CA" -ext bc:c -ext ku:c=keyCertSign,cRLSign \
  -keyalg RSA -keysize 2048 -sigalg SHA256withRSA -validity 3650 -keystore ca.p12 $(store)
keytool -exportcert -rfc -alias ca -keystore ca.p12 $(store) >ca.pem
keytool -genkeypair -alias broker -dname "CN=kafka" -keyalg RSA -keysize 2048 -sigalg SHA256withRSA \
  -validity 3650 -keystore broker.keystore.p12 $(store)
keytool -certreq -alias broker -keystore broker.keystore.p12 $(store) \
  | keytool -gencert -alias ca -keystore ca.p12 $(store) -rfc -validity 3650 -sigalg SHA256withRSA \
      -ext SAN=dns:kafka,dns:localhost,ip:127.0.0.1 -ext ku:c=digitalSignature,keyEncipherment \
      -ext eku=serverAuth,clientAuth >broker.pem
# The signed certificate replaces the self-signed one once its issuer is in the store.
keytool -importcert -noprompt -alias ca -file ca.pem -keystore broker.keystore.p12 $(store)
keytool -importcert -noprompt -alias broker -file broker.pem -keystore broker.keystore.p12 $(store)
keytool -importcert -noprompt -alias ca -file ca.pem -keystore truststore.p12 $(store)
cat >admin.properties <<EOF
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret";
ssl.truststore.type=PKCS12
ssl.truststore.location=$dir/truststore.p12
ssl.truststore.password=$password
EOF
rm -f ca.p12 broker.pem
chmod a+r ca.pem broker.keystore.p12 truststore.p12 admin.properties
touch .complete
