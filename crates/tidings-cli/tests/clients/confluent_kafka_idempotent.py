"""librdkafka through confluent-kafka-python with enable.idempotence=true
(its defaults otherwise) against the Kafka listener: an idempotent producer
writes two topics, two consumers subscribed to both share them in one group
with a rebalance in the middle (the second joins half-way), both commit and
leave, and a fresh consumer finds nothing left. Prints one JSON line.
Driven by crates/tidings-cli/tests/serve/kafka_defaults.rs.

    python3 confluent_kafka_idempotent.py <broker> <count per topic>
"""
import json
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer

broker, count = sys.argv[1], int(sys.argv[2])
topics = ["rd.completed", "rd.failed"]
errors = []

producer = Producer({"bootstrap.servers": broker, "enable.idempotence": True})
placements = []


def delivered(err, msg):
    if err is not None:
        errors.append(str(err))
    else:
        placements.append((msg.topic(), msg.partition(), msg.offset()))


def produce(start, end):
    for i in range(start, end):
        for topic in topics:
            producer.produce(topic, key=f"order-{i}", value=f"{topic}:{i}", on_delivery=delivered)
    if producer.flush(30) != 0:
        errors.append("flush left messages undelivered")


def member(name, got, stop, joined):
    consumer = Consumer({"bootstrap.servers": broker, "group.id": "rd-group", "auto.offset.reset": "earliest"})
    consumer.subscribe(topics)
    while not stop.is_set():
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            got.append((name, msg.value().decode()))
        if consumer.assignment():
            joined.add(name)
    consumer.close()


produce(0, count // 2)
got, stop, joined = [], threading.Event(), set()
a = threading.Thread(target=member, args=("a", got, stop, joined))
a.start()
deadline = time.time() + 90
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
by_partition = {}
for topic, partition, offset in placements:
    by_partition.setdefault(f"{topic}/{partition}", []).append(offset)
print(json.dumps({
    "errors": errors,
    "delivered": len(placements),
    "offsets_dense": all(sorted(o) == list(range(len(o))) for o in by_partition.values()),
    "unique": len(set(values)),
    "reads": len(values),
    "by_member": {m: sum(1 for n, _ in got if n == m) for m in ("a", "b")},
    "again": [v for _, v in again],
}))
