// The guides' e-commerce order flow (seed 003) in kafkajs at its default
// settings, against the Kafka listener: the order service publishes
// order.placed; the payment service (group payment-service) charges and
// publishes payment.completed or payment.failed; the notification service
// (group notification-service) subscribes to both in one group; the payment
// service's producer is idempotent (`idempotent: true`). A second
// notification instance joins half-way (a rebalance across two topics); at
// the end both stop, and a fresh instance must find nothing left, because
// the group's commits covered both topics. Prints one JSON line.
// Driven by crates/tidings-cli/tests/serve/kafka_defaults.rs.
//
//   node kafkajs_order_flow.js <broker> <orders>
'use strict';
const { Kafka, logLevel } = require('kafkajs');

const [broker, ordersArg] = process.argv.slice(2);
const orders = Number(ordersArg);
const kafka = new Kafka({ clientId: 'order-flow', brokers: [broker], logLevel: logLevel.ERROR });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(what, check, ms = 90000) {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function main() {
  // The order service publishes with kafkajs' defaults; the payment service
  // with an idempotent producer, so a retried payment event is stored once.
  const producer = kafka.producer();
  await producer.connect();
  const payer = kafka.producer({ idempotent: true });
  await payer.connect();

  // Payment service: a charge fails for every tenth order.
  const payments = kafka.consumer({ groupId: 'payment-service' });
  let paymentJoined = false;
  payments.on(payments.events.GROUP_JOIN, () => { paymentJoined = true; });
  await payments.connect();
  await payments.subscribe({ topic: 'order.placed' });
  await payments.run({
    eachMessage: async ({ message }) => {
      const { orderId, amount } = JSON.parse(message.value.toString());
      const topic = amount % 10 === 0 ? 'payment.failed' : 'payment.completed';
      const value = topic === 'payment.failed'
        ? JSON.stringify({ orderId, reason: 'card declined' })
        : JSON.stringify({ orderId, transactionId: `tx-${orderId}` });
      await payer.send({ topic, messages: [{ key: orderId, value }] });
    },
  });

  // Notification service: both payment outcomes, one group.
  const notified = [];
  const joins = [];
  async function notifier(name) {
    const consumer = kafka.consumer({ groupId: 'notification-service' });
    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      joins.push({ member: name, assigned: e.payload.memberAssignment });
    });
    await consumer.connect();
    await consumer.subscribe({ topics: ['payment.completed', 'payment.failed'] });
    await consumer.run({
      eachMessage: async ({ topic, message }) => {
        notified.push({ member: name, topic, orderId: JSON.parse(message.value.toString()).orderId });
      },
    });
    return consumer;
  }
  const first = await notifier('a');
  await waitFor('the consumers to join', () => paymentJoined && joins.length >= 1);

  // Order service.
  async function placeOrders(from, to) {
    for (let i = from; i < to; i++) {
      const orderId = `order-${i}`;
      await producer.send({
        topic: 'order.placed',
        messages: [{ key: orderId, value: JSON.stringify({ orderId, userId: `user-${i % 7}`, amount: i }) }],
      });
    }
  }
  const half = Math.floor(orders / 2);
  await placeOrders(0, half);
  await waitFor('the first half notified', () => new Set(notified.map((n) => n.orderId)).size >= half);
  const second = await notifier('b');
  await waitFor('the rebalance', () => joins.some((j) => j.member === 'b'));
  await placeOrders(half, orders);
  await waitFor('every order notified', () => new Set(notified.map((n) => n.orderId)).size >= orders);
  await first.disconnect();
  await second.disconnect();
  await payments.disconnect();

  // A fresh instance resumes after the group's commits on both topics.
  const before = notified.length;
  const fresh = await notifier('c');
  await waitFor('the fresh instance to join', () => joins.some((j) => j.member === 'c'));
  await sleep(2000);
  await fresh.disconnect();
  await producer.disconnect();
  await payer.disconnect();

  const unique = new Set(notified.slice(0, before).map((n) => n.orderId));
  console.log(JSON.stringify({
    notified: unique.size,
    deliveries: before,
    // Distinct orders: a rebalance may deliver an uncommitted one again
    // (at least once), which 'deliveries' shows.
    failed: new Set(notified.slice(0, before).filter((n) => n.topic === 'payment.failed').map((n) => n.orderId)).size,
    by_member: ['a', 'b'].map((m) => notified.slice(0, before).filter((n) => n.member === m).length),
    after_resume: notified.slice(before).map((n) => n.orderId),
    joins,
  }));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
