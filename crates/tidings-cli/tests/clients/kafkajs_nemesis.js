// kafkajs producing through faults: `count` messages, five to a send, each
// send awaited and sent again until acknowledged, while the test kills,
// pauses and stops the server under it. Prints one JSON line with every
// acknowledged value. Driven by crates/tidings-cli/tests/serve/nemesis.rs.
//
//   node kafkajs_nemesis.js <broker> <topic> <count>
'use strict';
const { Kafka, logLevel } = require('kafkajs');

const [broker, topic, countArg] = process.argv.slice(2);
const count = Number(countArg);
const kafka = new Kafka({
  clientId: 'tidings-nemesis',
  brokers: [broker],
  logLevel: logLevel.NOTHING,
  retry: { initialRetryTime: 100, retries: 5, maxRetryTime: 1000 },
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const producer = kafka.producer();
  const acked = [];
  let sends = 0;
  let failures = 0;
  const reconnect = async () => {
    try {
      await producer.connect();
    } catch (err) {
      // Still down; the next send finds out.
    }
  };
  await reconnect();
  for (let i = 0; i < count; i += 5) {
    const messages = [];
    for (let j = i; j < Math.min(count, i + 5); j++) {
      messages.push({ key: `js-k${j % 7}`, value: `js-${j}` });
    }
    for (;;) {
      try {
        sends += 1;
        await producer.send({ topic, acks: -1, messages });
        break;
      } catch (err) {
        // Not acknowledged: the server is down or paused. Send it again.
        failures += 1;
        await sleep(100);
        await reconnect();
      }
    }
    for (const m of messages) acked.push(m.value);
  }
  await producer.disconnect();
  console.log(JSON.stringify({ acked, sends, failures }));
}

main()
  .then(() => process.exit(0))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
