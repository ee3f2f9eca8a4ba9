"""One consumer group, two kinds of member: a kafka-python KafkaConsumer at
its defaults and a member joined over Tidings' HTTP API. They share the
topic's partitions through one rebalance, every record is read once, the
Kafka admin API lists and describes the group with both members, and
DeleteGroups removes it once both have left. Prints one JSON line.
Driven by crates/tidings-cli/tests/serve/kafka_defaults.rs.

    python3 kafka_python_mixed_group.py <kafka broker> <http base url>
"""
import json
import sys
import threading
import time
import urllib.request

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

broker, http = sys.argv[1], sys.argv[2]
topic, group, count = "mixed", "mixed-group", 60


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(http + path, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
        return json.loads(text) if text else None


admin = KafkaAdminClient(bootstrap_servers=broker)
admin.create_topics([NewTopic(topic, 2, 1)])
producer = KafkaProducer(bootstrap_servers=broker)


def produce(start, end):
    for i in range(start, end):
        producer.send(topic, key=f"k{i}".encode(), value=f"r{i}".encode())
    producer.flush()


produce(0, count // 2)

got, stop = [], threading.Event()
kafka_assigned = []


def kafka_member():
    consumer = KafkaConsumer(topic, bootstrap_servers=broker, group_id=group, auto_offset_reset="earliest")
    while not stop.is_set():
        for records in consumer.poll(timeout_ms=200).values():
            got.extend(("kafka", r.value.decode()) for r in records)
        kafka_assigned[:] = sorted(tp.partition for tp in consumer.assignment())
    consumer.close()


thread = threading.Thread(target=kafka_member)
thread.start()
deadline = time.time() + 60
while not kafka_assigned and time.time() < deadline:
    time.sleep(0.1)
web = call("POST", f"/v1/groups/{group}/members", {"topic": topic})["member"]
http_assigned, listed, described = [], None, None


def http_poll():
    global http_assigned
    answer = call("GET", f"/v1/groups/{group}/members/{web}/events?wait_ms=200")
    http_assigned = answer["assignment"] or http_assigned
    got.extend(("http", e["record"]["value"]) for e in answer["events"])
    if answer["events"]:
        call("POST", f"/v1/groups/{group}/members/{web}/commit", {"offsets": answer["next"]})


# The Kafka member rejoins (it learns of the rebalance at its next
# heartbeat) and, as leader, gives the HTTP member its share.
while time.time() < deadline and not (http_assigned and len(kafka_assigned) == 1):
    http_poll()
listed = admin.list_groups()
described = admin.describe_groups([group])
produce(count // 2, count)
while time.time() < deadline and len({v for _, v in got}) < count:
    http_poll()
stop.set()
thread.join()
call("DELETE", f"/v1/groups/{group}/members/{web}")
deleted = admin.delete_groups([group])
after = admin.describe_groups([group])
admin.close()


def plain(x):
    """kafka-python's answers as JSON."""
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if hasattr(x, "_asdict"):
        return plain(x._asdict())
    if hasattr(x, "__dict__"):
        return plain({k: v for k, v in vars(x).items() if not k.startswith("_")})
    if isinstance(x, bytes):
        return x.hex()
    return x if isinstance(x, (str, int, float, bool, type(None))) else str(x)


values = [v for _, v in got]
print(json.dumps({
    "unique": len(set(values)),
    "reads": len(values),
    "by": {m: sum(1 for n, _ in got if n == m) for m in ("kafka", "http")},
    "kafka_assigned": kafka_assigned,
    "http_assigned": http_assigned,
    "listed": plain(listed),
    "described": plain(described),
    "deleted": plain(deleted),
    "after": plain(after),
}))
