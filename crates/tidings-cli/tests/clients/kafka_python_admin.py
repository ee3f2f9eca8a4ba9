"""kafka-python's KafkaAdminClient, at its defaults, against the Kafka
listener: create topics (with and without configs) and list them. Prints one
JSON line. Driven by crates/tidings-cli/tests/serve/kafka_defaults.rs.

    python3 kafka_python_admin.py <broker>
"""
import json
import sys

from kafka.admin import KafkaAdminClient, NewTopic

broker = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=broker)
created = admin.create_topics(
    [
        NewTopic("admin-plain", 2, 1),
        NewTopic("admin-configured", 1, 1, topic_configs={"retention.ms": "3600000"}),
    ]
)
topics = {
    t["name"]: {
        "error_code": t["error_code"],
        "num_partitions": t["num_partitions"],
        "configs": {name: [c["value"], c["config_source"]] for name, c in t["configs"].items()},
    }
    for t in created["topics"]
}
listed = sorted(admin.list_topics())
admin.close()
print(json.dumps({"created": topics, "listed": listed}))
