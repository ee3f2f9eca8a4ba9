"""Confluent's own schema registry client and JSON Schema serializer
(confluent-kafka-python, its defaults) against Tidings' registry and Kafka
listener: the serializer registers `orders-value` and produces framed
records, a consumer reads them back through the deserializer (which fetches
the schema by id); the registry client checks compatibility (an optional
property added to an open model passes, a required one fails with reasons),
changes levels, reads versions and deletes. The topic validates: values
that break their schema, framed or not, are refused with INVALID_RECORD and
never read back. Prints one JSON line.
Driven by crates/tidings-cli/tests/serve/registry.rs.

    python3 confluent_registry.py <http host:port> <kafka host:port>
"""
import json
import struct
import sys

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

http, broker = sys.argv[1], sys.argv[2]
out = {}

ORDER_V1 = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Order",
    "type": "object",
    "properties": {"id": {"type": "string"}, "amount": {"type": "number"}},
    "required": ["id", "amount"],
}
# An optional property added; additionalProperties left open, as most schemas do.
ORDER_V2 = dict(ORDER_V1, properties=dict(ORDER_V1["properties"], coupon={"type": "string"}))
# A required property added: old orders lack it.
ORDER_BAD = dict(
    ORDER_V1,
    properties=dict(ORDER_V1["properties"], currency={"type": "string"}),
    required=["id", "amount", "currency"],
)

client = SchemaRegistryClient({"url": f"http://{http}/registry"})
topic = "orders"
serializer = JSONSerializer(json.dumps(ORDER_V1), client)
producer = Producer({"bootstrap.servers": broker})
delivered = []
errors = []


def report(err, msg):
    if err is not None:
        errors.append(str(err))
    else:
        delivered.append(msg.offset())


orders = [{"id": f"o-{i}", "amount": 10.5 + i} for i in range(3)]
for order in orders:
    value = serializer(order, SerializationContext(topic, MessageField.VALUE))
    producer.produce(topic, value=value, key=order["id"], on_delivery=report)
producer.flush(30)
out["delivered"] = len(delivered)
out["produce_errors"] = errors
out["first_bytes"] = list(value[:5])

# The topic validates: a value framed with the schema's id that breaks it,
# and one that is not JSON at all, are refused by the broker (the serializer
# would have refused the first itself, so it is framed by hand here).
refused = []


def refused_report(err, msg):
    refused.append(None if err is None else {"name": err.name(), "retriable": err.retriable(), "text": err.str()})


producer.produce(topic, value=b"\x00" + struct.pack(">I", 1) + json.dumps({"id": 7}).encode(), on_delivery=refused_report)
producer.flush(30)
producer.produce(topic, value=b"not json", on_delivery=refused_report)
producer.flush(30)
out["refused"] = refused

# The serializer refuses a bad order itself, before anything is sent.
try:
    serializer({"id": 7}, SerializationContext(topic, MessageField.VALUE))
    out["serializer_refused"] = False
except Exception as e:  # SerializationError
    out["serializer_refused"] = type(e).__name__

latest = client.get_latest_version("orders-value")
out["latest"] = {"version": latest.version, "schema_id": latest.schema_id, "type": latest.schema.schema_type}
out["subjects"] = client.get_subjects()
schema = client.get_schema(latest.schema_id)
out["schema_by_id_equal"] = json.loads(schema.schema_str) == ORDER_V1

deserializer = JSONDeserializer(None, schema_registry_client=client)
consumer = Consumer({"bootstrap.servers": broker, "group.id": "registry-check", "auto.offset.reset": "earliest"})
consumer.subscribe([topic])
read = []
for _ in range(60):
    msg = consumer.poll(1.0)
    if msg is None or msg.error():
        if len(read) >= len(orders):
            break
        continue
    read.append(deserializer(msg.value(), SerializationContext(topic, MessageField.VALUE)))
    if len(read) >= len(orders):
        break
consumer.close()
out["read_back"] = sorted(read, key=lambda o: o["id"]) == orders

out["v2_compatible"] = client.test_compatibility("orders-value", Schema(json.dumps(ORDER_V2), "JSON"))
out["bad_compatible"] = client.test_compatibility("orders-value", Schema(json.dumps(ORDER_BAD), "JSON"))
try:
    client.register_schema("orders-value", Schema(json.dumps(ORDER_BAD), "JSON"))
    out["bad_register"] = None
except SchemaRegistryError as e:
    out["bad_register"] = {"status": e.http_status_code, "code": e.error_code, "message": e.error_message}
out["v2_id"] = client.register_schema("orders-value", Schema(json.dumps(ORDER_V2), "JSON"))
out["versions"] = client.get_versions("orders-value")

client.set_compatibility("orders-value", "FULL")
out["level"] = client.get_compatibility("orders-value")
out["lookup_version"] = client.lookup_schema("orders-value", Schema(json.dumps(ORDER_V1), "JSON")).version

out["soft_deleted_version"] = client.delete_version("orders-value", 2)
out["versions_after_soft_delete"] = client.get_versions("orders-value")
try:
    client.get_version("orders-value", 2)
    out["deleted_version_read"] = None
except SchemaRegistryError as e:
    out["deleted_version_read"] = e.error_code
out["hard_deleted_version"] = client.delete_version("orders-value", 2, permanent=True)
out["deleted_subject_versions"] = client.delete_subject("orders-value")
out["hard_deleted_subject_versions"] = client.delete_subject("orders-value", permanent=True)
out["subjects_after"] = client.get_subjects()
try:
    # A fresh client: the first one caches what it read.
    SchemaRegistryClient({"url": f"http://{http}/registry"}).get_latest_version("orders-value")
    out["missing_subject"] = None
except SchemaRegistryError as e:
    out["missing_subject"] = {"status": e.http_status_code, "code": e.error_code}

print(json.dumps(out))
