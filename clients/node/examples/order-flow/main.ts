// The Node.js order flow against a running `tidings serve`:
//
//   node dist/examples/order-flow/main.js --url http://127.0.0.1:8080 --kafka 127.0.0.1:9092 --orders 100
//
// places the orders, waits until every one has settled (or --timeout
// seconds), stops the services and prints the final check; exits 1 when
// it fails.

import { parseArgs } from "node:util";

import { Client } from "../../src/index.js";
import { OrderFlow, check, orderOf, place } from "./flow.js";

const { values } = parseArgs({
  options: {
    url: { type: "string", default: "http://127.0.0.1:8080" },
    kafka: { type: "string", default: "127.0.0.1:9092" },
    orders: { type: "string", default: "100" },
    "decline-percent": { type: "string", default: "10" },
    "poison-percent": { type: "string", default: "3" },
    "transient-percent": { type: "string", default: "10" },
    timeout: { type: "string", default: "120" },
  },
});

const client = new Client({ url: values.url });
const run = `n${Date.now().toString(36)}`;
const flow = new OrderFlow(client, {
  url: values.url,
  kafka: values.kafka,
  prefix: "",
  transientPercent: Number(values["transient-percent"]),
  onError: (e) => console.error("retrying after:", e instanceof Error ? e.message : e),
});
const endpoint = await flow.start();
console.error(`order flow (Node.js) on ${values.url}: the order service at ${endpoint}/orders`);
const orders = Array.from({ length: Number(values.orders) }, (_, n) =>
  orderOf(run, n, Number(values["decline-percent"]), Number(values["poison-percent"])),
);
const started = Date.now();
let verdict;
try {
  await place(endpoint, orders);
  const deadline = started + Number(values.timeout) * 1000;
  do {
    await new Promise((r) => setTimeout(r, 500));
    verdict = await check(client, orders);
    const unsettled = new Set(verdict.problems.map((p) => p.split(":")[0])).size;
    console.error(`placed ${orders.length}  settled ${orders.length - unsettled}`);
  } while (verdict.problems.length > 0 && Date.now() < deadline);
} finally {
  await flow.stop();
}
verdict = await check(client, orders);
const seconds = (Date.now() - started) / 1000;
console.log(
  `${orders.length} orders in ${seconds.toFixed(1)} s: confirmed ${verdict.confirmed}, cancelled ${verdict.cancelled}, rejected ${verdict.rejected}; gateway time-outs retried ${flow.gatewayTimeouts}`,
);
if (verdict.problems.length === 0) {
  console.log("check passed: every order ended exactly once, every effect happened exactly once");
} else {
  console.log(`check FAILED: ${verdict.problems.length} problems`);
  for (const p of verdict.problems.slice(0, 20)) console.log(`  ${p}`);
  process.exitCode = 1;
}
