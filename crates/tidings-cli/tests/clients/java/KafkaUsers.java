// The Java Kafka client's Admin managing SCRAM users on a running server
// (alterUserScramCredentials, describeUserScramCredentials: what
// kafka-configs.sh --entity-type users sends), run against Tidings and
// against Apache Kafka by crates/tidings-cli/tests/serve/kafka_compare.rs,
// which holds the two answers equal. Prints one JSON line.
//
//   java -cp 'lib/*' KafkaUsers.java manage <bootstrap servers> <user prefix> [<admin> <password>]
//   java -cp 'lib/*' KafkaUsers.java login <bootstrap servers> <mechanism> <user> <password>
//   java -cp 'lib/*' KafkaUsers.java add <bootstrap servers> <user> <password>
//   java -cp 'lib/*' KafkaUsers.java remove <bootstrap servers> <user> <password>
//   java -cp 'lib/*' KafkaUsers.java batch <bootstrap servers> <admin> <password> <good user>
//
// With an admin and password, the Admin logs in with SCRAM-SHA-256. `login`
// lists the topics as <user>, then asks to add the user <user>-new: for
// each, "ok" or the exception that stopped it. `add` adds a SCRAM-SHA-256
// user without logging in (on a server without users); `remove` logs in as
// the user and removes its own SCRAM-SHA-256 credential; `batch` adds a
// user with a 256-byte name and <good user> in one request.
import java.util.*;
import java.util.concurrent.ExecutionException;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.*;

public class KafkaUsers {
    interface Call { void run() throws Exception; }

    static String outcome(Call call) {
        try {
            call.run();
            return "ok";
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName();
        } catch (Exception e) {
            return e.getClass().getSimpleName();
        }
    }

    static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    static Properties login(String bootstrap, String mechanism, String user, String password) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        if (user != null) {
            p.put("security.protocol", "SASL_PLAINTEXT");
            p.put("sasl.mechanism", mechanism);
            p.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required username="
                + quote(user) + " password=" + quote(password) + ";");
        }
        return p;
    }

    /// The users named with `prefix` and their credentials, in order.
    static String described(Admin admin, String prefix) throws Exception {
        Map<String, UserScramCredentialsDescription> all = admin.describeUserScramCredentials().all().get();
        return all.entrySet().stream()
            .filter(e -> e.getKey().startsWith(prefix))
            .sorted(Map.Entry.comparingByKey())
            .map(e -> quote(e.getKey().substring(prefix.length())) + ":" + quote(
                e.getValue().credentialInfos().stream()
                    .map(c -> c.mechanism() + "/" + c.iterations())
                    .sorted()
                    .collect(Collectors.joining(","))))
            .collect(Collectors.joining(",", "{", "}"));
    }

    /// What describing shows once it shows `expected` (a KRaft broker
    /// applies a change a moment after it answers), or after 10 s.
    static String settled(Admin admin, String prefix, String expected) throws Exception {
        String now = described(admin, prefix);
        for (int i = 0; i < 100 && !now.equals(expected); i++) {
            Thread.sleep(100);
            now = described(admin, prefix);
        }
        return now;
    }

    static UserScramCredentialUpsertion upsert(String user, ScramMechanism m, int iterations, String password) {
        return new UserScramCredentialUpsertion(user, new ScramCredentialInfo(m, iterations), password);
    }

    public static void main(String[] args) throws Exception {
        if (args[0].equals("login")) {
            Properties p = login(args[1], args[2], args[3], args[4]);
            p.put("request.timeout.ms", "5000");
            p.put("default.api.timeout.ms", "5000");
            try (Admin admin = Admin.create(p)) {
                String listed = outcome(() -> admin.listTopics().names().get());
                String alter = listed.equals("ok")
                    ? outcome(() -> admin.alterUserScramCredentials(List.of(
                        upsert(args[3] + "-new", ScramMechanism.SCRAM_SHA_256, 4096, "new-pw"))).all().get())
                    : "not logged in";
                System.out.println("{\"login\":" + quote(listed) + ",\"alter\":" + quote(alter) + "}");
            }
            return;
        }
        if (args[0].equals("add")) {
            try (Admin admin = Admin.create(login(args[1], null, null, null))) {
                System.out.println("{\"add\":" + quote(outcome(() -> admin.alterUserScramCredentials(List.of(
                    upsert(args[2], ScramMechanism.SCRAM_SHA_256, 4096, args[3]))).all().get())) + "}");
            }
            return;
        }
        if (args[0].equals("remove")) {
            try (Admin admin = Admin.create(login(args[1], "SCRAM-SHA-256", args[2], args[3]))) {
                System.out.println("{\"remove\":" + quote(outcome(() -> admin.alterUserScramCredentials(List.of(
                    new UserScramCredentialDeletion(args[2], ScramMechanism.SCRAM_SHA_256))).all().get())) + "}");
            }
            return;
        }
        if (args[0].equals("batch")) {
            try (Admin admin = Admin.create(login(args[1], "SCRAM-SHA-256", args[2], args[3]))) {
                String longName = "x".repeat(256);
                AlterUserScramCredentialsResult r = admin.alterUserScramCredentials(List.of(
                    upsert(longName, ScramMechanism.SCRAM_SHA_256, 4096, "pw"),
                    upsert(args[4], ScramMechanism.SCRAM_SHA_256, 4096, "pw")));
                System.out.println("{\"long\":" + quote(outcome(() -> r.values().get(longName).get()))
                    + ",\"good\":" + quote(outcome(() -> r.values().get(args[4]).get())) + "}");
            }
            return;
        }
        String bootstrap = args[1], prefix = args[2];
        Properties p = args.length > 4
            ? login(bootstrap, "SCRAM-SHA-256", args[3], args[4])
            : login(bootstrap, null, null, null);
        Map<String, String> out = new LinkedHashMap<>();
        String carol = prefix + "carol", dave = prefix + "dave", erin = prefix + "erin", fred = prefix + "fred";
        try (Admin admin = Admin.create(p)) {
            AlterUserScramCredentialsResult altered = admin.alterUserScramCredentials(List.of(
                upsert(carol, ScramMechanism.SCRAM_SHA_256, 8192, "carol-pw"),
                upsert(prefix + "both", ScramMechanism.SCRAM_SHA_256, 4096, "both-pw"),
                upsert(prefix + "both", ScramMechanism.SCRAM_SHA_512, 4096, "both-pw"),
                upsert(dave, ScramMechanism.SCRAM_SHA_256, 100, "dave-pw"),
                upsert(dave, ScramMechanism.SCRAM_SHA_512, 4096, "dave-pw"),
                upsert(fred, ScramMechanism.SCRAM_SHA_256, 100000, "fred-pw"),
                new UserScramCredentialDeletion(erin, ScramMechanism.SCRAM_SHA_256),
                upsert(prefix + "twice", ScramMechanism.SCRAM_SHA_256, 4096, "a"),
                upsert(prefix + "twice", ScramMechanism.SCRAM_SHA_256, 4096, "b")));
            for (Map.Entry<String, ?> e : new TreeMap<>(altered.values()).entrySet()) {
                String user = e.getKey().substring(prefix.length());
                out.put("alter " + user, outcome(() -> altered.values().get(e.getKey()).get()));
            }
            out.put("add carol 512", outcome(() -> admin.alterUserScramCredentials(List.of(
                upsert(carol, ScramMechanism.SCRAM_SHA_512, 4096, "carol-pw"))).all().get()));
            out.put("described", settled(admin, prefix, "{\"carol\":\"SCRAM_SHA_256/8192,SCRAM_SHA_512/4096\"}"));
            out.put("describe unknown", outcome(() -> admin.describeUserScramCredentials(List.of(carol, erin)).description(erin).get()));
            out.put("describe carol", outcome(() -> admin.describeUserScramCredentials(List.of(carol)).description(carol).get()));
            out.put("delete carol 512", outcome(() -> admin.alterUserScramCredentials(List.of(
                new UserScramCredentialDeletion(carol, ScramMechanism.SCRAM_SHA_512))).all().get()));
            out.put("after delete", settled(admin, prefix, "{\"carol\":\"SCRAM_SHA_256/8192\"}"));
        }
        System.out.println(out.entrySet().stream()
            .map(e -> quote(e.getKey()) + ":" + (e.getValue().startsWith("{") ? e.getValue() : quote(e.getValue())))
            .collect(Collectors.joining(",", "{", "}")));
    }
}
