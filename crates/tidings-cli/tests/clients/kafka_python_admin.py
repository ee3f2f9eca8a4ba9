"""kafka-python's KafkaAdminClient, at its defaults, against the Kafka
listener: create topics (with and without configs), describe and alter their
configs, add partitions, describe the cluster and the broker's configs,
delete a topic, and ask for what is not there. Prints one JSON line.
Driven by crates/tidings-cli/tests/serve/kafka_defaults.rs.

    python3 kafka_python_admin.py <broker>
"""
import json
import sys

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic
from kafka.errors import KafkaError

broker = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=broker)
out = {}


def error(call):
    try:
        call()
        return None
    except KafkaError as e:
        return type(e).__name__


created = admin.create_topics(
    [
        NewTopic("admin-plain", 2, 1),
        NewTopic("admin-configured", 1, 1, topic_configs={"retention.ms": "3600000"}),
    ]
)
out["created"] = {
    t["name"]: {
        "error_code": t["error_code"],
        "num_partitions": t["num_partitions"],
        "configs": {name: [c["value"], c["config_source"]] for name, c in t["configs"].items()},
    }
    for t in created["topics"]
}


def described(kind, name, everything=False):
    answer = admin.describe_configs([ConfigResource(kind, name)], config_filter="all" if everything else "modified")
    return {k: [c["value"], c["config_source"], c["read_only"]] for k, c in next(iter(answer[next(iter(answer))].values())).items()}


out["modified_before"] = described(ConfigResourceType.TOPIC, "admin-plain")
out["altered"] = admin.alter_configs(
    [ConfigResource(ConfigResourceType.TOPIC, "admin-plain", configs={"retention.ms": "60000", "segment.bytes": "1048576"})]
)
out["modified_after"] = described(ConfigResourceType.TOPIC, "admin-plain")
out["all_topic_configs"] = described(ConfigResourceType.TOPIC, "admin-plain", everything=True)
out["broker_configs"] = described(ConfigResourceType.BROKER, "1", everything=True)
out["bad_alter"] = str(admin.alter_configs(
    [ConfigResource(ConfigResourceType.TOPIC, "admin-plain", configs={"retention.ms": "-7"})]
))
partitions = admin.create_partitions({"admin-plain": NewPartitions(4)})
out["partitions_error"] = partitions.results[0].error_code
out["shrink_error"] = error(lambda: admin.create_partitions({"admin-plain": NewPartitions(2)}))
out["cluster"] = admin.describe_cluster()
out["deleted"] = [t["error_code"] for t in admin.delete_topics(["admin-configured"])["topics"]]
out["delete_missing"] = error(lambda: admin.delete_topics(["never-was"]))
out["listed"] = sorted(admin.list_topics())
admin.close()
print(json.dumps(out))
