"""One order's trace across two services and Tidings, drawn by OpenTelemetry's
own SDK for Python: a "checkout" service produces `order.placed` through
confluent-kafka (librdkafka, its defaults) instrumented by
opentelemetry-instrumentation-confluent-kafka, which writes the send span's
context into the record's `traceparent` header; a "billing" service consumes
it (instrumented the same way) and, as the guides say, continues the trace
from the header in its own `process` span. Both export their spans over
OTLP/HTTP to the endpoint given, as Tidings does. Prints one JSON line with
the ids the test looks for in what the collector received.
Driven by crates/tidings-cli/tests/serve/traces.rs.

    python3 otel_kafka_trace.py <broker> <topic> <otlp traces url>
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.confluent_kafka import ConfluentKafkaInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

broker, topic, otlp = sys.argv[1], sys.argv[2], sys.argv[3]


def provider(service):
    p = TracerProvider(resource=Resource.create({"service.name": service}))
    p.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=otlp)))
    return p


checkout, billing = provider("checkout"), provider("billing")
instrumentor = ConfluentKafkaInstrumentor()

producer = instrumentor.instrument_producer(
    Producer({"bootstrap.servers": broker}), tracer_provider=checkout
)
errors = []


def delivered(err, msg):
    if err is not None:
        errors.append(str(err))


producer.produce(topic, key="order-1", value=b'{"order":"o-1","total":42}', on_delivery=delivered)
if producer.flush(30) != 0:
    errors.append("flush left the record undelivered")

consumer = instrumentor.instrument_consumer(
    Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": "billing",
            "auto.offset.reset": "earliest",
        }
    ),
    tracer_provider=billing,
)
consumer.subscribe([topic])
record = None
deadline = time.time() + 60
while record is None and time.time() < deadline:
    msg = consumer.poll(1.0)
    if msg is None:
        continue
    if msg.error():
        errors.append(str(msg.error()))
        break
    record = msg

out = {"errors": errors}
if record is not None:
    headers = {k: v.decode() for k, v in (record.headers() or [])}
    out["traceparent"] = headers.get("traceparent")
    # The consumer continues the producer's trace from the header.
    parent = propagate.extract(headers)
    tracer = billing.get_tracer("billing")
    with tracer.start_as_current_span(
        f"process {topic}", context=parent, kind=trace.SpanKind.CONSUMER
    ) as span:
        span.set_attribute("messaging.system", "kafka")
        span.set_attribute("messaging.destination.name", topic)
        ctx = span.get_span_context()
        out["process_span_id"] = format(ctx.span_id, "016x")
        out["trace_id"] = format(ctx.trace_id, "032x")
consumer.close()
checkout.shutdown()
billing.shutdown()
print(json.dumps(out))
