"""kafka-python against the Kafka listener: produce, consume in a group with
committed offsets, then rejoin and find nothing left. Prints one JSON line.
Driven by crates/tidings-cli/tests/serve/kafka.rs.

    python3 kafka_python_group.py <broker> <topic> <group> <count>
"""
import json
import sys
import time

from kafka import KafkaConsumer, KafkaProducer

broker, topic, group, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

# kafka-python 3's defaults: idempotent, acks all.
producer = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
futures = [producer.send(topic, key=f"k{i % 5}".encode(), value=f"py-{i}".encode()) for i in range(count)]
offsets = [f.get(timeout=30).offset for f in futures]
producer.close()


def consume(expect_at_least, wait_s):
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        fetch_max_wait_ms=200,
    )
    got = []
    until = time.time() + wait_s
    while time.time() < until and (expect_at_least == 0 or len(got) < expect_at_least):
        for records in consumer.poll(timeout_ms=200).values():
            got.extend(r.value.decode() for r in records)
    consumer.commit()
    consumer.close()
    return got


first = consume(count, 60)
again = consume(0, 3)
print(json.dumps({"offsets": offsets, "first": first, "again": again}))
