"""The client side of `tidings-bench kafka`: confluent-kafka (librdkafka) against
the Kafka listener. Prints one JSON object per line.

    python3 client.py <broker> produce <topic> <count> <size>
    python3 client.py <broker> latency <topic> <rate> <seconds> <size>

produce: `count` records of `size` bytes, acks=all, librdkafka's own batching
(linger.ms=5), as fast as the producer goes; reports records/s and MB/s.
latency: one producer at a fixed rate, one consumer in a group in its own
process; each record carries its send time (CLOCK_MONOTONIC, shared by every
process), the consumer records the difference on receipt; reports
p50/p99/p999/max in ms.
"""
import json
import subprocess
import sys
import time

from confluent_kafka import Consumer, Producer

broker, mode, topic = sys.argv[1], sys.argv[2], sys.argv[3]


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def produce(count, size):
    producer = Producer({"bootstrap.servers": broker, "acks": "all", "linger.ms": 5,
                         "enable.idempotence": False, "queue.buffering.max.messages": 1000000})
    payload = b"x" * size
    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(err)

    start = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, payload, key=str(i % 64).encode(), on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.001)
        producer.poll(0)
    producer.flush(60)
    seconds = time.perf_counter() - start
    if failed:
        raise SystemExit(f"{len(failed)} deliveries failed: {failed[0]}")
    print(json.dumps({"case": "produce", "records": count, "size": size,
                      "per_second": count / seconds, "mb_per_second": count * size / seconds / 1e6}))


def consume_latency(total, wait_s):
    """The consumer side of `latency`, in its own process (no shared GIL with the
    producer). Send times are CLOCK_MONOTONIC, which every process shares."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": "bench-latency",
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 500,
                         "fetch.min.bytes": 1, "enable.auto.commit": True})
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(0.1)
    print("ready", flush=True)
    samples = []
    until = time.monotonic() + wait_s
    while len(samples) < total and time.monotonic() < until:
        msg = consumer.poll(0.1)
        if msg is None or msg.error():
            continue
        sent = int.from_bytes(msg.value()[:8], "big")
        samples.append((time.clock_gettime_ns(time.CLOCK_MONOTONIC) - sent) / 1e6)
    consumer.close()
    print(json.dumps(samples), flush=True)


def latency(rate, seconds, size):
    total = int(rate * seconds)
    reader = subprocess.Popen([sys.executable, __file__, broker, "consume-latency", topic,
                               str(total), str(seconds + 30)],
                              stdout=subprocess.PIPE, text=True)
    if reader.stdout.readline().strip() != "ready":
        raise SystemExit("the consumer did not start")
    producer = Producer({"bootstrap.servers": broker, "acks": "all", "linger.ms": 0,
                         "enable.idempotence": False})
    pad = b"x" * max(0, size - 8)
    start = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    interval = 1e9 / rate
    sent = 0
    while sent < total:
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        due = min(total, int((now - start) / interval) + 1)
        while sent < due:
            stamp = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            producer.produce(topic, stamp.to_bytes(8, "big") + pad)
            sent += 1
        producer.poll(0)
        time.sleep(0.0001)
    producer.flush(30)
    samples = json.loads(reader.stdout.readline())
    reader.wait()
    samples.sort()
    print(json.dumps({"case": "latency", "rate": rate, "sent": total, "received": len(samples),
                      "p50_ms": percentile(samples, 0.50), "p99_ms": percentile(samples, 0.99),
                      "p999_ms": percentile(samples, 0.999), "max_ms": samples[-1] if samples else None}))


if mode == "produce":
    produce(int(sys.argv[4]), int(sys.argv[5]))
elif mode == "consume-latency":
    consume_latency(int(sys.argv[4]), float(sys.argv[5]))
else:
    latency(float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
