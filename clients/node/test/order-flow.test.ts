// The guides' order flow in Node.js (examples/order-flow) against the real
// server: its HTTP API for this client, its Kafka listener for kafkajs. The
// flow's final check, read back from the event store, must pass with the
// outcomes the orders' data calls for.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client } from "../src/index.js";
import { OrderFlow, check, expectedOutcome, orderOf, place } from "../examples/order-flow/flow.js";
import { startServer, type RunningServer } from "./server.js";

let server: RunningServer;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server.stop();
});

test("the order flow passes its final check: every order ended once, every effect once", async () => {
  const client = new Client({ url: server.url });
  const errors: unknown[] = [];
  const flow = new OrderFlow(client, { url: server.url, kafka: server.kafka, prefix: "nf-", transientPercent: 20, onError: (e) => errors.push(e) });
  const endpoint = await flow.start();
  const orders = Array.from({ length: 40 }, (_, n) => orderOf("nf", n, 20, 10));
  const expected = { confirmed: 0, cancelled: 0, rejected: 0 };
  for (const o of orders) expected[expectedOutcome(o).slice("order.".length) as keyof typeof expected] += 1;
  assert.ok(expected.cancelled > 0 && expected.rejected > 0, "the orders take every path");
  let verdict;
  try {
    await place(endpoint, orders);
    // Until every order has settled, or a minute has passed.
    const deadline = Date.now() + 60_000;
    do {
      await new Promise((r) => setTimeout(r, 500));
      verdict = await check(client, orders);
    } while (verdict.problems.length > 0 && Date.now() < deadline);
  } finally {
    await flow.stop();
  }
  // Stopped, nothing more happens: checked again.
  verdict = await check(client, orders);
  assert.deepEqual(verdict.problems, []);
  assert.deepEqual(
    { confirmed: verdict.confirmed, cancelled: verdict.cancelled, rejected: verdict.rejected },
    expected,
  );
  assert.ok(flow.gatewayTimeouts > 0, "time-outs were retried");
});
