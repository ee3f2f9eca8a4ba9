// kafkajs logging in to the Kafka listener with SASL: a producer writes one
// message and a consumer group reads the topic back, both with `mechanism`
// (plain, scram-sha-256, scram-sha-512), `user` and `password` over
// plaintext. Prints one JSON line: the values read, or the error when the
// login fails. Driven by crates/tidings-cli/tests/serve/login.rs.
//
//   node kafkajs_login.js <broker> <mechanism> <user> <password> <topic> <value> [<ca file>]
//
// With a CA file, over TLS, checking the server's certificate against it.
// With the mechanism `certificate`, no SASL: the client logs in by its
// certificate (mutual TLS), `user` and `password` being the paths of its
// certificate and key.
'use strict';
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

const [broker, mechanism, username, password, topic, value, ca] = process.argv.slice(2);
const byCertificate = mechanism === 'certificate';
const ssl = !ca ? false : byCertificate
  ? {
    ca: [fs.readFileSync(ca, 'utf-8')],
    cert: fs.readFileSync(username, 'utf-8'),
    key: fs.readFileSync(password, 'utf-8'),
  }
  : { ca: [fs.readFileSync(ca, 'utf-8')] };
const kafka = new Kafka({
  ssl,
  clientId: 'tidings-login-test',
  brokers: [broker],
  logLevel: logLevel.NOTHING,
  sasl: byCertificate ? undefined : { mechanism, username, password },
  retry: { retries: 0 },
});

async function main() {
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, messages: [{ value }] });
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: `login-${mechanism}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const values = [];
  const admin = kafka.admin();
  await admin.connect();
  const [{ partitions }] = await admin.fetchTopicOffsets(topic).then((p) => [{ partitions: p }]);
  await admin.disconnect();
  const total = partitions.reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timed out reading back')), 30000);
    consumer.run({
      eachMessage: async ({ message }) => {
        values.push(message.value.toString());
        if (values.length >= total) {
          clearTimeout(timer);
          resolve();
        }
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  return { values };
}

main()
  .then((out) => console.log(JSON.stringify(out)))
  .catch((e) => console.log(JSON.stringify({ error: e.name, message: e.message })));
