"""kafka-python 3 logging in to the Kafka listener with SASL: a KafkaProducer
writes one record and a KafkaConsumer reads the topic back, both with
`mechanism`, `user` and `password` over plaintext. Prints one JSON line: the
values read, or the error when the login fails with the errors the client
logged (kafka-python logs a refused login and retries it until bootstrap_timeout_ms;
5 s here rather than its 30, so a failing login does not hold the test).
Driven by crates/tidings-cli/tests/serve/login.rs.

    python3 kafka_python_login.py <broker> <mechanism> <user> <password> <topic> <value> [<ca file>]

With a CA file, over TLS (SASL_SSL), checking the server's certificate
against it. With the mechanism `certificate`, no SASL: the client logs in by
its certificate (mutual TLS, SSL), `user` and `password` being the paths of
its certificate and key.
"""
import json
import logging
import sys

from kafka import KafkaConsumer, KafkaProducer

broker, mechanism, user, password, topic, value = sys.argv[1:7]
cafile = sys.argv[7] if len(sys.argv) > 7 else None
logged = []


class Collect(logging.Handler):
    def emit(self, record):
        logged.append(record.getMessage())


logging.getLogger("kafka").addHandler(Collect(level=logging.ERROR))
logging.getLogger("kafka").setLevel(logging.ERROR)
if mechanism == "certificate":
    login = dict(
        bootstrap_servers=broker,
        security_protocol="SSL",
        ssl_certfile=user,
        ssl_keyfile=password,
        bootstrap_timeout_ms=5000,
    )
else:
    login = dict(
        bootstrap_servers=broker,
        security_protocol="SASL_SSL" if cafile else "SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_plain_username=user,
        sasl_plain_password=password,
        bootstrap_timeout_ms=5000,
    )
if cafile:
    login["ssl_cafile"] = cafile
try:
    producer = KafkaProducer(**login)
    producer.send(topic, value.encode()).get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(
        topic, auto_offset_reset="earliest", consumer_timeout_ms=3000, **login
    )
    values = [r.value.decode() for r in consumer]
    consumer.close()
    print(json.dumps({"values": values}))
except Exception as e:  # the test reads what the client says
    print(json.dumps({"error": type(e).__name__, "message": str(e), "logged": logged}))
