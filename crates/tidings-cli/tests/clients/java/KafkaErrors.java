// What the Java Kafka client reports for requests a server must refuse: each
// bad case's exception class, or "ok". Run against Tidings and against Apache
// Kafka by crates/tidings-cli/tests/serve/kafka_compare.rs, which holds the
// two answers equal. Prints one JSON line.
//
//   java -cp 'lib/*' KafkaErrors.java <bootstrap servers> <topic prefix>
import java.time.Duration;
import java.util.*;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.StringDeserializer;

public class KafkaErrors {
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

    interface Value { String get() throws Exception; }

    /// The value, or the exception class and message that stopped it.
    static String value(Value v) {
        try {
            return v.get();
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName() + ": " + e.getCause().getMessage();
        } catch (Exception e) {
            return e.getClass().getSimpleName() + ": " + e.getMessage();
        }
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], prefix = args[1];
        String topic = prefix + ".errors", group = prefix + "-busy";
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        Map<String, String> out = new LinkedHashMap<>();
        try (Admin admin = Admin.create(p)) {
            out.put("create", outcome(() -> admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all().get()));
            out.put("create_again", outcome(() -> admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all().get()));
            out.put("create_zero_partitions", outcome(() -> admin.createTopics(List.of(new NewTopic(prefix + ".zero", 0, (short) 1))).all().get()));
            out.put("create_three_replicas", outcome(() -> admin.createTopics(List.of(new NewTopic(prefix + ".rf", 1, (short) 3))).all().get()));
            out.put("create_assigned", outcome(() -> admin.createTopics(List.of(new NewTopic(prefix + ".assigned",
                Map.of(0, List.of(1), 1, List.of(1))))).all().get()));
            out.put("assigned_partitions", value(() -> String.valueOf(admin.describeTopics(List.of(prefix + ".assigned"))
                .allTopicNames().get().get(prefix + ".assigned").partitions().size())));
            out.put("create_on_missing_broker", outcome(() -> admin.createTopics(List.of(new NewTopic(prefix + ".elsewhere",
                Map.of(0, List.of(2))))).all().get()));
            out.put("shrink_partitions", outcome(() -> admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(1))).all().get()));
            out.put("grow_partitions", outcome(() -> admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all().get()));
            out.put("delete_missing_topic", outcome(() -> admin.deleteTopics(List.of(prefix + ".never")).all().get()));
            out.put("describe_missing_topic", outcome(() -> admin.describeTopics(List.of(prefix + ".never")).allTopicNames().get()));
            ConfigResource missing = new ConfigResource(ConfigResource.Type.TOPIC, prefix + ".never");
            out.put("configs_of_missing_topic", outcome(() -> admin.describeConfigs(List.of(missing)).all().get()));
            ConfigResource mine = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            out.put("bad_retention", outcome(() -> admin.incrementalAlterConfigs(Map.of(mine,
                List.of(new AlterConfigOp(new ConfigEntry("retention.ms", "-7"), AlterConfigOp.OpType.SET)))).all().get()));
            out.put("good_retention", outcome(() -> admin.incrementalAlterConfigs(Map.of(mine,
                List.of(new AlterConfigOp(new ConfigEntry("retention.ms", "60000"), AlterConfigOp.OpType.SET)))).all().get()));
            // A KRaft broker applies an altered config once the controller's
            // record reaches it: a describe right after may still see the old
            // value, so look again for up to 10 s.
            String retention = "";
            for (int i = 0; i < 100; i++) {
                retention = admin.describeConfigs(List.of(mine)).all().get().get(mine).get("retention.ms").value();
                if (retention.equals("60000")) break;
                Thread.sleep(100);
            }
            out.put("retention_after", retention);
            // The record with the largest timestamp (ListOffsets v7, KIP-734).
            Properties pp = new Properties();
            pp.put("bootstrap.servers", bootstrap);
            pp.put("key.serializer", StringSerializer.class.getName());
            pp.put("value.serializer", StringSerializer.class.getName());
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(pp)) {
                for (long ts : new long[] {1_000L, 3_000L, 2_000L, 3_000L}) {
                    producer.send(new ProducerRecord<>(topic, 0, ts, "k", "at " + ts)).get();
                }
            }
            TopicPartition first = new TopicPartition(topic, 0);
            ListOffsetsResult.ListOffsetsResultInfo max =
                admin.listOffsets(Map.of(first, OffsetSpec.maxTimestamp())).partitionResult(first).get();
            out.put("max_timestamp", max.offset() + "@" + max.timestamp());
            TopicPartition empty = new TopicPartition(topic, 1);
            ListOffsetsResult.ListOffsetsResultInfo none =
                admin.listOffsets(Map.of(empty, OffsetSpec.maxTimestamp())).partitionResult(empty).get();
            out.put("max_timestamp_empty", none.offset() + "@" + none.timestamp());
            out.put("delete_missing_group", outcome(() -> admin.deleteConsumerGroups(List.of(prefix + "-never")).all().get()));
            out.put("describe_missing_group", outcome(() -> admin.describeConsumerGroups(List.of(prefix + "-never")).all().get()));

            // A group with a live member cannot be deleted.
            Properties c = new Properties();
            c.put("bootstrap.servers", bootstrap);
            c.put("group.id", group);
            c.put("key.deserializer", StringDeserializer.class.getName());
            c.put("value.deserializer", StringDeserializer.class.getName());
            try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
                consumer.subscribe(List.of(topic));
                long until = System.currentTimeMillis() + 60_000;
                while (consumer.assignment().isEmpty() && System.currentTimeMillis() < until) {
                    consumer.poll(Duration.ofMillis(100));
                }
                out.put("delete_busy_group", outcome(() -> admin.deleteConsumerGroups(List.of(group)).all().get()));
                // Positions known (not still being reset) before they are committed.
                for (TopicPartition tp : consumer.assignment()) consumer.position(tp);
                consumer.commitSync();
                out.put("delete_subscribed_offsets", outcome(() -> admin.deleteConsumerGroupOffsets(group,
                    Set.of(new TopicPartition(topic, 0))).all().get()));
            }
            out.put("delete_left_offsets", outcome(() -> admin.deleteConsumerGroupOffsets(group,
                Set.of(new TopicPartition(topic, 0))).all().get()));
            out.put("offsets_left", String.valueOf(admin.listConsumerGroupOffsets(group)
                .partitionsToOffsetAndMetadata().get().keySet().stream().map(TopicPartition::partition).sorted().toList()));
            out.put("delete_left_group", outcome(() -> admin.deleteConsumerGroups(List.of(group)).all().get()));
            out.put("delete_topic", outcome(() -> admin.deleteTopics(List.of(topic, prefix + ".assigned")).all().get()));
        }
        StringBuilder json = new StringBuilder("{");
        for (Map.Entry<String, String> e : out.entrySet()) {
            if (json.length() > 1) json.append(',');
            json.append('"').append(e.getKey()).append("\":\"").append(e.getValue()).append('"');
        }
        System.out.println(json.append('}'));
    }
}
