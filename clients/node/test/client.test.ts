// The client against the real server: `tidings serve` (the binary named by
// TIDINGS_BIN) on a throwaway data directory, loopback only.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, EventBus, Reject, TidingsError, dataOf, event, type CloudEvent, type Envelope } from "../src/index.js";
import { startServer, type RunningServer } from "./server.js";

let server: RunningServer;
let client: Client;
let url: string;

before(async () => {
  server = await startServer();
  url = server.url;
  client = new Client({ url });
});

after(async () => {
  await server.stop();
});

/** Waits until `check` holds, polling; fails after 10 s. */
async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("a batch and a single event are published; a repeat is answered as a duplicate", async () => {
  await client.createTopic("orders", { partitions: 2 });
  const placed = [1, 2, 3].map((n) =>
    event({ type: "order.placed", source: "/shop", data: { orderId: `o-${n}`, total: n * 10 }, extensions: { partitionkey: `o-${n}` } }),
  );
  const answer = await client.publish("orders", placed);
  assert.equal(answer.length, 3);
  assert.deepEqual(answer.map((p) => p.id), placed.map((e) => e.id));
  assert.ok(answer.every((p) => !p.duplicate));
  const bytes = event({ type: "file.stored", source: "/files", data: new Uint8Array([0, 1, 255]) });
  const [single] = await client.publish("orders", bytes);
  assert.equal(single?.duplicate, false);
  // The same source and id again: not appended, the original's place answered.
  const [again] = await client.publish("orders", placed[0]!);
  assert.equal(again?.duplicate, true);
  assert.equal(again?.offset, answer[0]?.offset);
  assert.equal(again?.partition, answer[0]?.partition);
});

test("a resolved handler acks; a thrown error is retried with backoff, then dead-lettered", async () => {
  await client.createTopic("payments");
  await client.createQueue("payment-service", "payments", { max_deliveries: 3, backoff_initial_ms: 20, backoff_factor: 2 });
  const events = ["ok-1", "poison", "ok-2", "refused"].map((card) =>
    event({ type: "payment.requested", source: "/orders", data: { card } }),
  );
  await client.publish("payments", events);
  const seen: { card: string; attempt: number }[] = [];
  const errors: unknown[] = [];
  const sub = client.subscribe(
    "payment-service",
    async (e: CloudEvent, d) => {
      const { card } = dataOf(e) as { card: string };
      seen.push({ card, attempt: d.attempt });
      if (card === "poison") throw new Error(`card ${card} cannot be charged`);
      if (card === "refused") throw new Reject("card refused for good");
    },
    { waitMs: 100, onError: (e) => errors.push(e) },
  );
  await until("three attempts at the poison event", () => seen.filter((s) => s.card === "poison").length === 3);
  await sub.stop();
  assert.deepEqual(errors, []);
  // Each good event handled once: acked, never redelivered.
  assert.deepEqual(seen.filter((s) => s.card.startsWith("ok")).map((s) => [s.card, s.attempt]), [["ok-1", 1], ["ok-2", 1]]);
  assert.deepEqual(seen.filter((s) => s.card === "poison").map((s) => s.attempt), [1, 2, 3]);
  assert.deepEqual(seen.filter((s) => s.card === "refused").map((s) => s.attempt), [1]);
  const dead = await client.deadLetters("payment-service");
  const byCard = new Map(dead.map((d) => [(dataOf(d.event!) as { card: string }).card, d]));
  assert.equal(dead.length, 2);
  assert.equal(byCard.get("poison")?.attempts, 3);
  assert.equal(byCard.get("poison")?.error, "card poison cannot be charged");
  assert.equal(byCard.get("refused")?.error, "card refused for good");
  assert.deepEqual(await client.receive("payment-service", { waitMs: 200 }), []);
  // Redriven, the dead letters are delivered again.
  assert.equal(await client.redrive("payment-service"), 2);
  const again = await client.receive("payment-service", { max: 10, waitMs: 2000 });
  assert.equal(again.length, 2);
  const acked = await client.ack("payment-service", again.map((d) => d.lease));
  assert.deepEqual(acked, { acked: 2, failed: [] });
});

test("errors carry the server's status and error code", async () => {
  await assert.rejects(
    client.publish("no-such-topic", event({ type: "t", source: "/s" })),
    (e: unknown) => e instanceof TidingsError && e.status === 404 && e.code === "unknown_topic" && /no-such-topic/.test(e.message),
  );
  const invalid = { ...event({ type: "t", source: "/s" }), id: "" };
  await assert.rejects(
    client.publish("orders", invalid),
    (e: unknown) => e instanceof TidingsError && e.status === 400 && e.code === "invalid_event",
  );
  await assert.rejects(
    client.nack("payment-service", "no-such-lease"),
    (e: unknown) => e instanceof TidingsError && e.code === "unknown_lease",
  );
  const result = await client.ack("payment-service", ["no-such-lease"]);
  assert.equal(result.acked, 0);
  assert.equal(result.failed[0]?.error_code, "unknown_lease");
  await assert.rejects(
    client.receive("no-such-group"),
    (e: unknown) => e instanceof TidingsError && e.status === 404 && e.code === "unknown_group",
  );
});

test("the guides' EventBus: every handler runs, unsubscribe stops one, a failure is retried", async () => {
  // Two services on one topic: each gets every event once.
  const shop = await EventBus.connect({ url, topic: "bus-orders", service: "shop" });
  const notifications = await EventBus.connect({ url, topic: "bus-orders", service: "notifications", maxDeliveries: 2 });
  const emails: Envelope[] = [];
  const audit: string[] = [];
  let failOnce = true;
  const stopEmails = notifications.subscribe("order:placed", async (envelope) => {
    if (failOnce) {
      failOnce = false;
      throw new Error("mail server down");
    }
    emails.push(envelope);
  });
  notifications.subscribe("order:placed", (envelope) => {
    audit.push(envelope.id);
  });
  const shopSaw: string[] = [];
  shop.subscribe("order:placed", (envelope) => {
    shopSaw.push(envelope.id);
  });
  const id = await shop.publish("order:placed", { orderId: "o-1", total: 99 });
  await until("the email after one retry", () => emails.length === 1);
  await until("the shop's own handler", () => shopSaw.length === 1);
  assert.equal(emails[0]?.id, id);
  assert.equal(emails[0]?.event, "order:placed");
  assert.deepEqual(emails[0]?.payload, { orderId: "o-1", total: 99 });
  assert.ok(!Number.isNaN(Date.parse(emails[0]!.timestamp)));
  // The failure retried the event: both of the service's handlers ran twice.
  assert.deepEqual(audit, [id, id]);
  assert.deepEqual(shopSaw, [id]);
  // Unsubscribed, the email handler no longer runs; the audit one still does.
  stopEmails();
  const second = await shop.publish("order:placed", { orderId: "o-2", total: 5 });
  await until("the audit of the second order", () => audit.length === 3);
  assert.equal(audit[2], second);
  assert.equal(emails.length, 1);
  await Promise.all([shop.close(), notifications.close()]);
  assert.deepEqual(await client.deadLetters("notifications"), []);
});

test("the event store: appends with expected versions, reads back, follows live over SSE", async () => {
  const stream = "order-o-17";
  const placed = event({ type: "order.placed", source: "/shop", data: { order: "o-17" } });
  const first = await client.appendToStream(stream, placed, { expectedVersion: "no_stream" });
  assert.equal(first.first_version, 0);
  // A second writer that also thought the stream new loses.
  await assert.rejects(
    client.appendToStream(stream, event({ type: "order.placed", source: "/shop" }), { expectedVersion: "no_stream" }),
    (e: unknown) => e instanceof TidingsError && e.status === 409 && e.code === "wrong_expected_version",
  );
  const later = ["order.paid", "order.shipped"].map((type) => event({ type, source: "/shop", data: { order: "o-17" } }));
  const batch = await client.appendToStream(stream, later, { expectedVersion: 0 });
  assert.deepEqual([batch.first_version, batch.last_version], [1, 2]);
  const read = await client.readWholeStream(stream);
  assert.deepEqual(read.map((e) => [e.version, e.event.type]), [[0, "order.placed"], [1, "order.paid"], [2, "order.shipped"]]);
  assert.equal(read[0]?.event.id, placed.id);
  const backward = await client.readStream(stream, { direction: "backward", limit: 1 });
  assert.deepEqual([backward.version, backward.events[0]?.event.type], [2, "order.shipped"]);

  // Live: a category's events as they are appended, each once and in
  // order, a handler's failure given the same event again.
  const seen: string[] = [];
  const errors: unknown[] = [];
  let failOnce = true;
  const sub = client.subscribeAll(
    (recorded) => {
      if (recorded.event.type === "account.debited" && failOnce) {
        failOnce = false;
        throw new Error("projection busy");
      }
      seen.push(`${recorded.stream}:${recorded.event.type}`);
    },
    { category: "account", onError: (e) => errors.push(e) },
  );
  await client.appendToStream("account-a1", event({ type: "account.opened", source: "/bank" }));
  await client.appendToStream("order-o-18", event({ type: "order.placed", source: "/shop" }));
  await client.appendToStream("account-a1", event({ type: "account.debited", source: "/bank" }), { expectedVersion: 0 });
  await client.appendToStream("account-a2", event({ type: "account.opened", source: "/bank" }));
  try {
    await until("three account events", () => seen.length === 3);
  } finally {
    // Stopped whatever happens, or the test runner waits for it for good.
    await sub.stop();
  }
  assert.deepEqual(seen, ["account-a1:account.opened", "account-a1:account.debited", "account-a2:account.opened"]);
  assert.equal(errors.length, 1);
  const all = await client.readAll({ category: "account" });
  assert.equal(all.events.length, 3);
});

test("a stream group: each key in order, committed, and a new member resumes after the commit", async () => {
  await client.createTopic("ledger", { partitions: 2 });
  const entry = (key: string, n: number) =>
    event({ type: "ledger.entry", source: "/ledger", data: { key, n }, extensions: { partitionkey: key } });
  await client.publish("ledger", ["a", "b"].flatMap((key) => [0, 1, 2, 3, 4].map((n) => entry(key, n))));
  const seen: { key: string; n: number }[] = [];
  const errors: unknown[] = [];
  let failOnce = true;
  const sub = client.consume(
    "ledger-readers",
    "ledger",
    (e) => {
      const data = dataOf(e) as { key: string; n: number };
      if (data.key === "a" && data.n === 2 && failOnce) {
        failOnce = false;
        throw new Error("not now");
      }
      seen.push(data);
    },
    { waitMs: 200, onError: (e) => errors.push(e) },
  );
  try {
    await until("ten entries", () => seen.length === 10);
  } finally {
    await sub.stop();
  }
  // The failed entry was given again before the ones after it.
  for (const key of ["a", "b"]) {
    assert.deepEqual(seen.filter((s) => s.key === key).map((s) => s.n), [0, 1, 2, 3, 4]);
  }
  assert.equal(errors.length, 1);
  // A member joining later reads only what came after the commit.
  await client.publish("ledger", [entry("a", 5), entry("b", 5)]);
  const after: number[] = [];
  const next = client.consume("ledger-readers", "ledger", (e) => {
    after.push((dataOf(e) as { n: number }).n);
  }, { waitMs: 200 });
  try {
    await until("the two new entries", () => after.length === 2);
  } finally {
    await next.stop();
  }
  assert.deepEqual(after, [5, 5]);
});
