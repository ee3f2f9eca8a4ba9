// The Java Kafka client (kafka-clients 4.x) at its default settings against a
// Kafka-protocol server: AdminClient creates, describes and deletes topics and
// groups; a default KafkaProducer (idempotent, acks=all) writes two topics; two
// KafkaConsumers subscribed to both share them in one group with a rebalance in
// the middle; a fresh consumer finds nothing left. Prints one JSON line.
// Driven by crates/tidings-cli/tests/serve/kafka_defaults.rs:
//
//   java -cp 'lib/*' KafkaDefaults.java <bootstrap servers> <name prefix>
//
// Topics are <prefix>.orders and <prefix>.payments, the group <prefix>-group:
// a broker that lives on between runs (deleting a topic is not instant on
// Kafka) gets fresh names each time.
import java.time.Duration;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class KafkaDefaults {
    static List<String> TOPICS;
    static String GROUP;
    static final int PER_TOPIC = 50;

    static Properties base(String bootstrap) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        return p;
    }

    static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    static String list(Collection<?> items) {
        return items.stream().map(i -> i instanceof String ? quote((String) i) : String.valueOf(i))
            .collect(Collectors.joining(",", "[", "]"));
    }

    /// A consumer thread: polls until stopped, recording what it read and what it owns.
    static class Member implements Runnable {
        final String name;
        final String bootstrap;
        final List<String> read = Collections.synchronizedList(new ArrayList<>());
        volatile Set<TopicPartition> owned = Set.of();
        final AtomicBoolean stop = new AtomicBoolean();

        Member(String name, String bootstrap) { this.name = name; this.bootstrap = bootstrap; }

        public void run() {
            Properties p = base(bootstrap);
            p.put("group.id", GROUP);
            p.put("auto.offset.reset", "earliest");
            p.put("key.deserializer", StringDeserializer.class.getName());
            p.put("value.deserializer", StringDeserializer.class.getName());
            try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
                c.subscribe(TOPICS);
                while (!stop.get()) {
                    for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                        read.add(r.value());
                    }
                    owned = new HashSet<>(c.assignment());
                }
            }
        }
    }

    static void waitFor(String what, java.util.function.BooleanSupplier check, long ms) throws Exception {
        long until = System.currentTimeMillis() + ms;
        while (!check.getAsBoolean()) {
            if (System.currentTimeMillis() > until) throw new IllegalStateException("timed out waiting for " + what);
            Thread.sleep(50);
        }
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        TOPICS = List.of(args[1] + ".orders", args[1] + ".payments");
        GROUP = args[1] + "-group";
        StringBuilder out = new StringBuilder("{");
        try (Admin admin = Admin.create(base(bootstrap))) {
            admin.createTopics(TOPICS.stream().map(t -> new NewTopic(t, 2, (short) 1)).toList()).all().get();
            Map<String, TopicDescription> described = admin.describeTopics(TOPICS).allTopicNames().get();
            out.append("\"partitions\":").append(list(TOPICS.stream()
                .map(t -> described.get(t).partitions().size()).toList()));
            out.append(",\"cluster_nodes\":").append(admin.describeCluster().nodes().get().size());

            Properties pp = base(bootstrap);
            pp.put("key.serializer", StringSerializer.class.getName());
            pp.put("value.serializer", StringSerializer.class.getName());
            List<String> placements = new ArrayList<>();
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(pp)) {
                List<Future<RecordMetadata>> sent = new ArrayList<>();
                for (String t : TOPICS) {
                    for (int i = 0; i < PER_TOPIC / 2; i++) {
                        sent.add(producer.send(new ProducerRecord<>(t, "order-" + i, t + ":" + i)));
                    }
                }
                for (Future<RecordMetadata> f : sent) {
                    RecordMetadata m = f.get(30, TimeUnit.SECONDS);
                    placements.add(m.topic() + "/" + m.partition() + "/" + m.offset());
                }

                Member a = new Member("a", bootstrap);
                Thread ta = new Thread(a);
                ta.start();
                waitFor("a to read the first half", () -> a.read.size() >= PER_TOPIC, 60_000);
                Member b = new Member("b", bootstrap);
                Thread tb = new Thread(b);
                tb.start();
                waitFor("the rebalance", () -> !b.owned.isEmpty() && a.owned.size() + b.owned.size() == 4, 60_000);
                for (String t : TOPICS) {
                    for (int i = PER_TOPIC / 2; i < PER_TOPIC; i++) {
                        producer.send(new ProducerRecord<>(t, "order-" + i, t + ":" + i)).get(30, TimeUnit.SECONDS);
                    }
                }
                Set<String> all = ConcurrentHashMap.newKeySet();
                waitFor("every record", () -> {
                    all.clear();
                    synchronized (a.read) { all.addAll(a.read); }
                    synchronized (b.read) { all.addAll(b.read); }
                    return all.size() >= 2 * PER_TOPIC;
                }, 60_000);
                ConsumerGroupDescription group = admin.describeConsumerGroups(List.of(GROUP)).all().get().get(GROUP);
                out.append(",\"group_state\":").append(quote(group.groupState().toString()));
                out.append(",\"group_members\":").append(group.members().size());
                out.append(",\"owned_per_member\":").append(list(group.members().stream()
                    .map(m -> m.assignment().topicPartitions().size()).sorted().toList()));
                out.append(",\"listed\":").append(admin.listGroups().all().get().stream()
                    .anyMatch(g -> g.groupId().equals(GROUP)));
                a.stop.set(true);
                b.stop.set(true);
                ta.join();
                tb.join();
                out.append(",\"unique\":").append(all.size());
                out.append(",\"reads\":").append(a.read.size() + b.read.size());
                out.append(",\"by_member\":").append(list(List.of(a.read.size(), b.read.size())));
            }
            out.append(",\"placements\":").append(list(placements));

            // A fresh member resumes after the group's commits on both topics.
            Member c = new Member("c", bootstrap);
            Thread tc = new Thread(c);
            tc.start();
            waitFor("c to be assigned", () -> c.owned.size() == 4, 60_000);
            Thread.sleep(1500);
            c.stop.set(true);
            tc.join();
            out.append(",\"after_resume\":").append(c.read.size());
            Map<TopicPartition, OffsetAndMetadata> committed =
                admin.listConsumerGroupOffsets(GROUP).partitionsToOffsetAndMetadata().get();
            out.append(",\"committed_total\":").append(committed.values().stream().mapToLong(OffsetAndMetadata::offset).sum());
            admin.deleteConsumerGroups(List.of(GROUP)).all().get();
            admin.deleteTopics(TOPICS).all().get();
            // A KRaft broker lists a deleted topic for a moment after it
            // answers the deletion: what is left once that has passed (5 s).
            List<String> left = admin.listTopics().names().get().stream().filter(TOPICS::contains).toList();
            for (int i = 0; i < 50 && !left.isEmpty(); i++) {
                Thread.sleep(100);
                left = admin.listTopics().names().get().stream().filter(TOPICS::contains).toList();
            }
            out.append(",\"topics_after_delete\":").append(list(left));
        }
        System.out.println(out.append("}"));
    }
}
