"""kafka-python 3 at its defaults against the Kafka listener: an idempotent
KafkaProducer() writes two topics; a KafkaConsumer group subscribed to both
consumes them, a second member joins half-way (a rebalance across both
topics), both commit and leave, and a fresh member finds nothing left.
Prints one JSON line. Driven by crates/tidings-cli/tests/serve/kafka_defaults.rs.

    python3 kafka_python_two_topics.py <broker> <count per topic>
"""
import json
import sys
import threading
import time

from kafka import KafkaConsumer, KafkaProducer

broker, count = sys.argv[1], int(sys.argv[2])
topics = ["payment.completed", "payment.failed"]

producer = KafkaProducer(bootstrap_servers=broker)
idempotent = producer.config["enable_idempotence"]


def produce(start, end):
    futures = [
        producer.send(topic, key=f"order-{i}".encode(), value=f"{topic}:{i}".encode())
        for i in range(start, end)
        for topic in topics
    ]
    return [f.get(timeout=30) for f in futures]


def member(name, got, stop, joined):
    consumer = KafkaConsumer(bootstrap_servers=broker, group_id="notifier", auto_offset_reset="earliest")
    consumer.subscribe(topics)
    while not stop.is_set():
        for records in consumer.poll(timeout_ms=200).values():
            got.extend((name, r.value.decode()) for r in records)
        if consumer.assignment():
            joined.add(name)
    consumer.close()  # commits (auto-commit) and leaves


got, stop, joined = [], threading.Event(), set()
produce(0, count // 2)
a = threading.Thread(target=member, args=("a", got, stop, joined))
a.start()
deadline = time.time() + 60
while len(got) < count and time.time() < deadline:
    time.sleep(0.1)
b = threading.Thread(target=member, args=("b", got, stop, joined))
b.start()
while "b" not in joined and time.time() < deadline:
    time.sleep(0.1)
produce(count // 2, count)
while len({v for _, v in got}) < 2 * count and time.time() < deadline:
    time.sleep(0.1)
stop.set()
a.join()
b.join()
producer.close()

again, stop2, joined2 = [], threading.Event(), set()
c = threading.Thread(target=member, args=("c", again, stop2, joined2))
c.start()
deadline = time.time() + 30
while "c" not in joined2 and time.time() < deadline:
    time.sleep(0.1)
time.sleep(1.5)
stop2.set()
c.join()

values = [v for _, v in got]
print(json.dumps({
    "idempotent": idempotent,
    "unique": len(set(values)),
    "by_member": {m: sum(1 for n, _ in got if n == m) for m in ("a", "b")},
    "again": [v for _, v in again],
}))
