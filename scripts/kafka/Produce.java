// Produce records read from stdin with Apache Kafka's own Java producer (tests and local checks:
// what a Java client writes — compressed batches, transactions, headers — the saga must read).
//
// Run it with the JDK's single-file source launcher and the jars of `scripts/kafka.sh install`:
//
//   java -cp "<repo>/.kafka/libs/*" scripts/kafka/Produce.java --bootstrap-server 127.0.0.1:9092 \
//     --topic orders [--compression none|gzip|snappy|lz4|zstd] [--partition N] \
//     [--header NAME=VALUE]... [--null-header NAME]... [--producer-config FILE] \
//     [--transactional-id ID [--abort]]   <records.txt
//
// stdin: one record a line, `key|value`, split at the first `|` (`|v` has an empty key; a line
// without `|` is a value with a null key). Every line is a record, an empty one too.
// --header/--null-header add that header (a null value for --null-header) to every record.
// --transactional-id: initTransactions, beginTransaction, send all, flush, commitTransaction
// (abortTransaction with --abort). --producer-config: a properties file of further producer
// settings (security.protocol, sasl.*, ssl.* ...), applied over this tool's defaults
// (acks=all, linger.ms=100, max.block.ms=15000, request.timeout.ms=10000,
// delivery.timeout.ms=20000) and under the options above. --command-config is the same.
//
// stderr: `topic/partition@offset` for each record, in input order, once all are acknowledged;
// otherwise one `Produce: ...` line saying what failed. Exit 0 only if every record was
// acknowledged and the transaction (if any) committed or aborted as asked; 1 on failure, 2 on
// bad usage. Kafka's own logging is off (log4j2 root level OFF); to see it, add
// -Dlog4j2.configurationFile=scripts/kafka/log4j2.properties (it then goes to stdout).

import java.io.BufferedReader;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;

public class Produce {
    record Options(String bootstrap, String topic, String compression, String transactionalId,
                   boolean abort, Integer partition, String config,
                   List<String[]> headers) {}

    static final class UsageException extends Exception {
        UsageException(String message) { super(message); }
    }

    public static void main(String[] args) {
        // Before any Kafka or log4j class loads: no configuration file means log4j's default
        // configuration, whose level this sets.
        if (System.getProperty("log4j2.configurationFile") == null
                && System.getProperty("log4j.configurationFile") == null) {
            System.setProperty("log4j2.level", "OFF");
            System.setProperty("log4j2.statusLoggerLevel", "OFF");
        }
        Options options;
        try {
            options = parse(args);
        } catch (UsageException e) {
            System.err.println("Produce: " + e.getMessage());
            System.err.println("usage: java -cp \"<repo>/.kafka/libs/*\" scripts/kafka/Produce.java"
                    + " --bootstrap-server HOST:PORT --topic NAME [--compression none|gzip|snappy|lz4|zstd]"
                    + " [--partition N] [--header NAME=VALUE]... [--null-header NAME]..."
                    + " [--producer-config FILE] [--transactional-id ID [--abort]] <lines-of-key|value");
            System.exit(2);
            return;
        }
        try {
            System.exit(run(options));
        } catch (Throwable t) {
            System.err.println("Produce: " + describe(t));
            System.exit(1);
        }
    }

    static Options parse(String[] args) throws UsageException {
        String bootstrap = null, topic = null, compression = null, transactionalId = null, config = null;
        Integer partition = null;
        boolean abort = false;
        List<String[]> headers = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            if (arg.equals("--abort")) { abort = true; continue; }
            if (arg.equals("--help") || arg.equals("-h")) throw new UsageException("help");
            if (!Set.of("--bootstrap-server", "--topic", "--compression", "--transactional-id",
                    "--null-header", "--header", "--partition", "--producer-config", "--command-config")
                    .contains(arg)) {
                throw new UsageException("unknown option " + arg);
            }
            if (i + 1 >= args.length) throw new UsageException(arg + " needs a value");
            String value = args[++i];
            switch (arg) {
                case "--bootstrap-server" -> bootstrap = value;
                case "--topic" -> topic = value;
                case "--compression" -> {
                    if (!Set.of("none", "gzip", "snappy", "lz4", "zstd").contains(value)) {
                        throw new UsageException("--compression must be none, gzip, snappy, lz4 or zstd, not " + value);
                    }
                    compression = value;
                }
                case "--transactional-id" -> transactionalId = value;
                case "--null-header" -> headers.add(new String[] {value, null});
                case "--header" -> {
                    int eq = value.indexOf('=');
                    if (eq <= 0) throw new UsageException("--header takes NAME=VALUE, not " + value);
                    headers.add(new String[] {value.substring(0, eq), value.substring(eq + 1)});
                }
                case "--partition" -> {
                    try {
                        partition = Integer.parseInt(value);
                    } catch (NumberFormatException e) {
                        throw new UsageException("--partition takes a number, not " + value);
                    }
                    if (partition < 0) throw new UsageException("--partition must not be negative");
                }
                case "--producer-config", "--command-config" -> config = value;
                default -> throw new IllegalStateException(arg);
            }
        }
        if (bootstrap == null) throw new UsageException("--bootstrap-server is required");
        if (topic == null) throw new UsageException("--topic is required");
        if (abort && transactionalId == null) throw new UsageException("--abort needs --transactional-id");
        return new Options(bootstrap, topic, compression, transactionalId, abort, partition, config, headers);
    }

    static int run(Options o) throws IOException {
        Properties props = new Properties();
        props.put("linger.ms", "100"); // batch.size stays the default: several records a batch
        props.put("acks", "all");
        // Fail within seconds, not minutes, when the broker is missing or refuses us.
        props.put("max.block.ms", "15000");
        props.put("request.timeout.ms", "10000");
        props.put("delivery.timeout.ms", "20000");
        if (o.config() != null) {
            try (InputStream in = new FileInputStream(o.config())) {
                props.load(in);
            }
        }
        props.put("bootstrap.servers", o.bootstrap());
        props.put("key.serializer", "org.apache.kafka.common.serialization.StringSerializer");
        props.put("value.serializer", "org.apache.kafka.common.serialization.StringSerializer");
        if (o.compression() != null) props.put("compression.type", o.compression());
        if (o.transactionalId() != null) props.put("transactional.id", o.transactionalId());

        List<String> lines = new ArrayList<>();
        try (BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            for (String line; (line = in.readLine()) != null; ) lines.add(line);
        }

        var producer = new org.apache.kafka.clients.producer.KafkaProducer<String, String>(props);
        boolean transactional = o.transactionalId() != null;
        boolean inTransaction = false;
        try {
            if (transactional) {
                producer.initTransactions();
                producer.beginTransaction();
                inTransaction = true;
            }
            List<Future<org.apache.kafka.clients.producer.RecordMetadata>> sent = new ArrayList<>();
            for (String line : lines) {
                int bar = line.indexOf('|');
                String key = bar < 0 ? null : line.substring(0, bar);
                String value = bar < 0 ? line : line.substring(bar + 1);
                var headers = new org.apache.kafka.common.header.internals.RecordHeaders();
                for (String[] h : o.headers()) {
                    headers.add(h[0], h[1] == null ? null : h[1].getBytes(StandardCharsets.UTF_8));
                }
                var future = producer.send(new org.apache.kafka.clients.producer.ProducerRecord<>(
                        o.topic(), o.partition(), key, value, headers));
                sent.add(future);
                // Failed already (no such topic, refused credentials ...): do not wait again for
                // each remaining record.
                if (future.isDone() && failed(future)) break;
            }
            producer.flush();
            List<String> acked = new ArrayList<>();
            String failure = null;
            for (int i = 0; i < sent.size(); i++) {
                try {
                    var m = sent.get(i).get();
                    acked.add(m.topic() + "/" + m.partition() + "@" + m.offset());
                } catch (ExecutionException e) {
                    failure = "record " + (i + 1) + " of " + lines.size() + " not acknowledged: " + describe(e.getCause());
                    break;
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    failure = "interrupted";
                    break;
                }
            }
            if (failure != null) {
                if (inTransaction) abortQuietly(producer);
                System.err.println("Produce: " + failure);
                return 1;
            }
            if (transactional) {
                if (o.abort()) producer.abortTransaction();
                else producer.commitTransaction();
                inTransaction = false;
            }
            for (String line : acked) System.err.println(line);
            return 0;
        } catch (RuntimeException e) {
            if (inTransaction) abortQuietly(producer);
            System.err.println("Produce: " + (transactional ? "transaction " + o.transactionalId() + ": " : "") + describe(e));
            return 1;
        } finally {
            producer.close(Duration.ofSeconds(5));
        }
    }

    static boolean failed(Future<?> future) {
        try {
            future.get();
            return false;
        } catch (ExecutionException e) {
            return true;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return true;
        }
    }

    static void abortQuietly(org.apache.kafka.clients.producer.KafkaProducer<String, String> producer) {
        try {
            producer.abortTransaction();
        } catch (RuntimeException ignored) {
            // The error being reported is the first one.
        }
    }

    // One line: the innermost cause that says something, with its class name.
    static String describe(Throwable t) {
        Throwable cause = t;
        while (cause.getCause() != null && cause.getCause() != cause) cause = cause.getCause();
        String text = cause.getClass().getSimpleName() + ": " + cause.getMessage();
        if (cause != t && t.getMessage() != null && !t.getMessage().contains(String.valueOf(cause.getMessage()))) {
            text = t.getClass().getSimpleName() + ": " + t.getMessage() + " (" + text + ")";
        }
        return text.replaceAll("\\s*\\R\\s*", " ");
    }
}
