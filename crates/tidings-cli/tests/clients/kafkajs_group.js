// kafkajs against the Kafka listener, as the guides use it: one producer and a
// consumer group of three members on a three-partition topic. Prints one JSON
// line with what every member received. Driven by crates/tidings-cli/tests/serve/kafka.rs.
//
//   node kafkajs_group.js <broker> <topic> <group> <mode> [count]
//
// mode "rebalance": produce, consume with three members, stop one, produce
// more, and wait until the two left have taken over its partitions.
// mode "restart": produce `count` messages in small batches (printing
// "acked N" to stderr after each) while the test kills and restarts the
// server; then consume with one member until every acknowledged message is back.
'use strict';
const { Kafka, logLevel } = require('kafkajs');

const [broker, topic, groupId, mode, countArg] = process.argv.slice(2);
const count = Number(countArg || 300);
const kafka = new Kafka({
  clientId: 'tidings-test',
  brokers: [broker],
  logLevel: logLevel.ERROR,
  retry: { initialRetryTime: 100, retries: 30, maxRetryTime: 1000 },
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, check, ms = 60000) {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function produce(producer, from, to, batch = 50) {
  const acked = [];
  for (let i = from; i < to; i += batch) {
    const messages = [];
    for (let j = i; j < Math.min(to, i + batch); j++) {
      messages.push({ key: `key-${j % 17}`, value: `m-${j}` });
    }
    for (;;) {
      try {
        await producer.send({ topic, acks: -1, messages });
        break;
      } catch (err) {
        // The server is restarting: this batch was not acknowledged; send it again.
        await sleep(200);
      }
    }
    for (const m of messages) acked.push(m.value);
    console.error(`acked ${acked.length}`);
  }
  return acked;
}

// Every group join each member saw, with the partitions it was assigned.
const joins = [];

async function member(received, name) {
  const consumer = kafka.consumer({
    groupId,
    sessionTimeout: 6000,
    rebalanceTimeout: 10000,
    heartbeatInterval: 300,
    // Heartbeats queue behind a connection's long-poll fetch (as on a Kafka
    // broker), so a short wait makes rebalances quick.
    maxWaitTimeInMs: 500,
    retry: { initialRetryTime: 100, retries: 30, maxRetryTime: 1000 },
  });
  consumer.on(consumer.events.GROUP_JOIN, (e) => {
    joins.push({ member: name, assigned: e.payload.memberAssignment[topic] || [] });
  });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      received.push({ member: name, partition, value: message.value.toString() });
    },
  });
  return consumer;
}

async function rebalance() {
  // The topic comes from kafkajs' admin client (CreateTopics).
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({ topics: [{ topic, numPartitions: 3 }] });
  const metadata = await admin.fetchTopicMetadata({ topics: [topic] });
  await admin.disconnect();
  if (!created || metadata.topics[0].partitions.length !== 3) {
    throw new Error(`topic not created with 3 partitions: ${JSON.stringify(metadata)}`);
  }
  const producer = kafka.producer();
  await producer.connect();
  const received = [];
  const members = [];
  for (const name of ['a', 'b', 'c']) members.push(await member(received, name));
  const first = await produce(producer, 0, count);
  await waitFor('the first half', () => received.length >= first.length);
  const before = new Set(received.filter((r) => r.member === 'c').map((r) => r.partition));
  // One member leaves; its partitions go to the two left.
  await members[2].disconnect();
  const second = await produce(producer, count, 2 * count);
  await waitFor('the second half', () => received.length >= first.length + second.length);
  await sleep(500); // anything delivered twice would arrive now
  // The joins up to here; disconnecting a and b below rebalances again.
  const joinsWhileRunning = joins.slice();
  for (const m of members.slice(0, 2)) await m.disconnect();
  await producer.disconnect();
  const after = received.slice(first.length);
  console.log(JSON.stringify({
    sent: first.concat(second),
    received: received.map((r) => r.value),
    members_first: [...new Set(received.slice(0, first.length).map((r) => r.member))].sort(),
    members_after: [...new Set(after.map((r) => r.member))].sort(),
    left_member_partitions: [...before],
    joins: joinsWhileRunning,
  }));
}

async function restart() {
  const producer = kafka.producer();
  await producer.connect();
  const acked = await produce(producer, 0, count, 10);
  await producer.disconnect();
  const received = [];
  const consumer = await member(received, 'a');
  await waitFor('every acknowledged message', () => {
    const seen = new Set(received.map((r) => r.value));
    return acked.every((v) => seen.has(v));
  });
  await consumer.disconnect();
  console.log(JSON.stringify({ acked, received: received.map((r) => r.value) }));
}

(mode === 'restart' ? restart() : rebalance())
  .then(() => process.exit(0))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
