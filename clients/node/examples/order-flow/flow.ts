// The guides' order flow in Node.js against `tidings serve`, with the same
// final check as the Rust one (examples/order-flow): an order service behind
// HTTP, a payment service on kafkajs as the guide writes it (consumer group
// `payment-service`, answers produced to a topic, poison orders to a dead
// letter topic), inventory with its compensation, the order's outcome,
// reconciliation, notification and analytics consumers on this client.
//
// Each service keeps its facts about an order in the server's event store
// (a stream per order and service) and is idempotent the event-store way:
// a fact is appended with an expected version or a fixed id, so a repeated
// delivery finds it; what it announces carries a fixed id, so announcing it
// again (after a crash between the two) is stored once by the server's
// publish dedup and is harmless to the idempotent consumers anyway. The
// order service's announcements leave through the store: a relay follows
// the `order` category live and publishes each `order.placed` — the outbox,
// with the event store as the outbox table.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

import { Kafka, logLevel, type Consumer, type IHeaders, type Producer } from "kafkajs";

import { Client, TidingsError, dataOf, event, type CloudEvent, type RecordedEvent, type Subscription } from "../../src/index.js";

export interface Order {
  order: string;
  customer: string;
  sku: string;
  quantity: number;
  cents: number;
  currency: string;
  payment_token: string;
}

export const TOKEN_DECLINED = "tok_chargeDeclined";
export const TOKEN_VISA = "tok_visa";
const CURRENCIES = ["EUR", "USD", "GBP"];

/** The outcome an order's data calls for. */
export function expectedOutcome(order: Order): string {
  if (!CURRENCIES.includes(order.currency)) return "order.rejected";
  if (order.payment_token === TOKEN_DECLINED) return "order.cancelled";
  return "order.confirmed";
}

export interface FlowOptions {
  /** The server's HTTP address. */
  url: string;
  /** Its Kafka listener, `host:port`. */
  kafka: string;
  /** Prefix of topics, groups and stream categories' ids: flows sharing a server keep apart. */
  prefix: string;
  /** Share of card-gateway calls, in percent, that time out (retried with backoff). */
  transientPercent: number;
  onError?: (error: unknown) => void;
}

const correlation = (order: string) => `${order}.placed`;

/** `value` as JSON with every object's keys sorted: equal values, equal text. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

/** A fact or an announcement about `order`, in its correlation. */
function fact(type: string, source: string, order: string, data: unknown, id: string, cause?: CloudEvent): CloudEvent {
  return event({
    type,
    source,
    id,
    data,
    extensions: {
      partitionkey: order,
      correlationid: correlation(order),
      ...(cause ? { causationid: cause.id } : {}),
    },
  });
}

/** Whether `e` is the server's refusal of an append that found its fact there already. */
const alreadyThere = (e: unknown) =>
  e instanceof TidingsError && (e.code === "wrong_expected_version" || e.code === "duplicate_event_id");

/** A CloudEvent as a Kafka record in the binding's binary mode. */
function toKafka(e: CloudEvent): { key: string; value: string; headers: IHeaders } {
  const headers: IHeaders = { "content-type": "application/json" };
  for (const [name, value] of Object.entries(e)) {
    if (name === "data" || name === "datacontenttype" || value === undefined) continue;
    headers[`ce_${name}`] = String(value);
  }
  return { key: String(e.partitionkey ?? e.id), value: JSON.stringify(e.data ?? null), headers };
}

/** A Kafka record (the binding's binary or structured mode) back to a CloudEvent. */
function fromKafka(headers: IHeaders | undefined, value: Buffer | null): CloudEvent {
  const contentType = String(headers?.["content-type"] ?? "");
  if (contentType.startsWith("application/cloudevents") && value) return JSON.parse(value.toString("utf8")) as CloudEvent;
  const e: Record<string, unknown> = {};
  for (const [name, raw] of Object.entries(headers ?? {})) {
    if (!name.startsWith("ce_") || raw === undefined) continue;
    e[name.slice(3)] = Buffer.isBuffer(raw) ? raw.toString("utf8") : String(raw);
  }
  if (value) e.data = JSON.parse(value.toString("utf8"));
  return e as CloudEvent;
}

/** The running services. */
export class OrderFlow {
  readonly topics: { orders: string; payments: string; inventory: string; dead: string };
  private readonly subscriptions: Subscription[] = [];
  private http: Server | undefined;
  private producer: Producer | undefined;
  private consumer: Consumer | undefined;
  /** Card-gateway time-outs retried. */
  gatewayTimeouts = 0;

  constructor(
    readonly client: Client,
    private readonly options: FlowOptions,
  ) {
    const p = options.prefix;
    this.topics = {
      orders: `${p}orders`,
      payments: `${p}payments`,
      inventory: `${p}inventory`,
      dead: `${p}orders.payment-service.dlq`,
    };
  }

  private group(name: string): string {
    return `${this.options.prefix}${name}`;
  }

  private report = (e: unknown) => this.options.onError?.(e);

  /** Creates the topics and groups, starts every service; the order endpoint's address. */
  async start(): Promise<string> {
    const c = this.client;
    for (const topic of Object.values(this.topics)) {
      await c.createTopic(topic, { partitions: 2 }).catch((e) => {
        if (!(e instanceof TidingsError && e.code === "topic_exists")) throw e;
      });
    }
    const queue = async (name: string, topic: string) => {
      await c.createQueue(this.group(name), topic, { max_deliveries: 10, backoff_initial_ms: 50, backoff_factor: 2, ack_timeout_ms: 10_000 }).catch((e) => {
        if (!(e instanceof TidingsError && e.code === "group_exists")) throw e;
      });
      return this.group(name);
    };
    const on = (types: Record<string, (e: CloudEvent) => Promise<void>>) => async (e: CloudEvent) => {
      await types[e.type]?.(e);
    };
    const options = { waitMs: 200, onError: this.report };
    const subscribe = async (name: string, topic: string, handlers: Record<string, (e: CloudEvent) => Promise<void>>) => {
      this.subscriptions.push(c.subscribe(await queue(name, topic), on(handlers), options));
    };

    await subscribe("inventory", this.topics.orders, {
      "order.placed": (e) => this.reserve(e),
      "order.rejected": (e) => this.release(e),
    });
    await subscribe("inventory-compensation", this.topics.payments, { "payment.failed": (e) => this.release(e) });
    await subscribe("orders", this.topics.payments, {
      "payment.completed": (e) => this.conclude(e, "order.confirmed"),
      "payment.failed": (e) => this.conclude(e, "order.cancelled", (dataOf(e) as { reason?: string }).reason),
    });
    await subscribe("reconciliation", this.topics.dead, {
      "order.placed": (e) => this.conclude(e, "order.rejected", String(e.dlqerror ?? "dead-lettered")),
    });
    const outcome = (e: CloudEvent) => this.notify(e);
    await subscribe("notifications", this.topics.orders, {
      "order.confirmed": outcome,
      "order.cancelled": outcome,
      "order.rejected": outcome,
    });
    // Analytics reads the stream in order, as a stream group's member.
    this.subscriptions.push(c.consume(this.group("analytics"), this.topics.orders, (e) => this.count(e), options));

    // The payment service, as the guide writes it: kafkajs.
    const kafka = new Kafka({ clientId: "payment-service", brokers: [this.options.kafka], logLevel: logLevel.NOTHING });
    this.producer = kafka.producer();
    await this.producer.connect();
    this.consumer = kafka.consumer({ groupId: this.group("payment-service") });
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.topics.orders, fromBeginning: true });
    await this.consumer.run({
      eachMessage: async ({ message }) => {
        const placed = fromKafka(message.headers, message.value);
        if (placed.type === "order.placed") await this.pay(placed);
      },
    });

    // The outbox's relay: the order category of the store, live.
    this.subscriptions.push(
      c.subscribeAll(
        async ({ event: e }) => {
          if (e.type !== "order.placed" || !String(e.partitionkey ?? "").startsWith(this.options.prefix)) return;
          const order = dataOf(e) as Order;
          await c.publish(this.topics.orders, fact("order.placed", "/shop/orders", order.order, order, correlation(order.order)));
        },
        { category: "order", onError: this.report },
      ),
    );

    this.http = createServer((request, response) => {
      this.handle(request, response).catch((e) => {
        this.report(e);
        if (!response.headersSent) response.writeHead(500).end();
      });
    });
    await new Promise<void>((resolve) => this.http!.listen(0, "127.0.0.1", resolve));
    const { port } = this.http.address() as AddressInfo;
    return `http://127.0.0.1:${port}`;
  }

  /** Stops every service: what is in hand is finished and answered. */
  async stop(): Promise<void> {
    await Promise.all(this.subscriptions.map((s) => s.stop()));
    await this.consumer?.disconnect();
    await this.producer?.disconnect();
    await new Promise<void>((resolve) => (this.http ? this.http.close(() => resolve()) : resolve()));
  }

  /** `POST /orders`: the order's first fact; the relay announces it. */
  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const reply = (status: number, body: unknown): void => {
      response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    };
    if (request.method !== "POST" || request.url !== "/orders") return reply(404, { error: "POST /orders" });
    let order: Order;
    try {
      const chunks: Buffer[] = [];
      for await (const chunk of request) chunks.push(chunk as Buffer);
      order = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Order;
    } catch (e) {
      return reply(400, { error: `not JSON: ${String(e)}` });
    }
    if (typeof order.order !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(order.order)) {
      return reply(400, { error: "order: 1 to 64 letters, digits, '-' or '_'" });
    }
    const stream = `order-${order.order}`;
    try {
      await this.client.appendToStream(stream, fact("order.placed", "/shop/orders", order.order, order, `${order.order}.placed.fact`), {
        expectedVersion: "no_stream",
      });
      return reply(201, { order: order.order, placed: true });
    } catch (e) {
      if (!alreadyThere(e)) throw e;
      const [first] = await this.client.readWholeStream(stream);
      const same = first !== undefined && canonical(dataOf(first.event)) === canonical(order);
      return same ? reply(200, { order: order.order, placed: false }) : reply(409, { error: `order ${order.order} exists with other contents` });
    }
  }

  /** The card gateway: times out on a share of calls, declines one token. */
  private async charge(order: Order): Promise<string | undefined> {
    if (Math.random() * 100 < this.options.transientPercent) {
      this.gatewayTimeouts += 1;
      throw new Error("the card gateway timed out");
    }
    return order.payment_token === TOKEN_DECLINED ? "card declined" : undefined;
  }

  /** The payment service (kafkajs): charges once, answers on `payments`; poison goes to the dead letters. */
  private async pay(placed: CloudEvent): Promise<void> {
    const order = dataOf(placed) as Order;
    const send = (topic: string, e: CloudEvent, extra: IHeaders = {}) => {
      const record = toKafka(e);
      return this.producer!.send({ topic, messages: [{ ...record, headers: { ...record.headers, ...extra } }] });
    };
    if (!CURRENCIES.includes(order.currency)) {
      // The Kafka way to dead-letter: the record to a topic of its own, with why.
      await send(this.topics.dead, placed, { ce_dlqerror: `the gateway does not settle ${order.currency}` });
      return;
    }
    const stream = `payment-${order.order}`;
    let declined: string | undefined;
    const recorded = (await this.client.readWholeStream(stream))[0];
    if (recorded) {
      // Charged before (the answer may not have gone out): answer again.
      declined = (dataOf(recorded.event) as { reason?: string }).reason;
    } else {
      for (let attempt = 1, backoff = 20; ; attempt++, backoff *= 2) {
        try {
          declined = await this.charge(order);
          break;
        } catch (e) {
          if (attempt >= 8) throw e;
          await sleep(backoff);
        }
      }
      const data = { order: order.order, cents: order.cents, ...(declined ? { reason: declined } : {}) };
      const type = declined ? "payment.declined" : "payment.charged";
      try {
        await this.client.appendToStream(stream, fact(type, "/shop/payments", order.order, data, `${order.order}.payment.fact`, placed), {
          expectedVersion: "no_stream",
        });
      } catch (e) {
        if (!alreadyThere(e)) throw e;
        declined = (dataOf((await this.client.readWholeStream(stream))[0]!.event) as { reason?: string }).reason;
      }
    }
    const data = { order: order.order, cents: order.cents, ...(declined ? { reason: declined } : {}) };
    await send(
      this.topics.payments,
      fact(declined ? "payment.failed" : "payment.completed", "/shop/payments", order.order, data, `${order.order}.payment`, placed),
    );
  }

  /** Appends `e` to `stream` as its fact with `expectedVersion`; false when it was there already. */
  private async append(stream: string, e: CloudEvent, expectedVersion: "no_stream" | "any" | number): Promise<boolean> {
    try {
      await this.client.appendToStream(stream, e, { expectedVersion });
      return true;
    } catch (error) {
      if (alreadyThere(error)) return false;
      throw error;
    }
  }

  /** Inventory's step: reserves, unless the reservation was voided first. */
  private async reserve(placed: CloudEvent): Promise<void> {
    const order = dataOf(placed) as Order;
    const stream = `reservation-${order.order}`;
    const stock = { order: order.order, sku: order.sku, quantity: order.quantity };
    const facts = await this.client.readWholeStream(stream);
    if (facts.length === 0) {
      const e = fact("stock.reserved", "/shop/inventory", order.order, stock, `${order.order}.reserved.fact`, placed);
      if (!(await this.append(stream, e, "no_stream"))) return this.reserve(placed);
    } else if (facts[0]!.event.type !== "stock.reserved") {
      return;
    }
    await this.client.publish(this.topics.inventory, fact("stock.reserved", "/shop/inventory", order.order, stock, `${order.order}.reserved`, placed));
  }

  /** The compensation: releases what was reserved, or voids the reservation not made yet. */
  private async release(cause: CloudEvent): Promise<void> {
    const { order } = dataOf(cause) as { order: string };
    const stream = `reservation-${order}`;
    const facts = await this.client.readWholeStream(stream);
    const last = facts.at(-1);
    if (!last) {
      const e = fact("reservation.void", "/shop/inventory", order, { order }, `${order}.void.fact`, cause);
      if (!(await this.append(stream, e, "no_stream"))) await this.release(cause);
      return;
    }
    if (last.event.type === "stock.reserved") {
      const e = fact("stock.released", "/shop/inventory", order, dataOf(last.event), `${order}.released.fact`, cause);
      if (!(await this.append(stream, e, last.version))) return this.release(cause);
    }
    if (last.event.type !== "reservation.void") {
      // Announced with a fixed id: again after a crash, stored once.
      await this.client.publish(this.topics.inventory, fact("stock.released", "/shop/inventory", order, dataOf(last.event), `${order}.released`, cause));
    }
  }

  /** The order service's side of an outcome: once in the order's stream, then announced. */
  private async conclude(cause: CloudEvent, outcome: string, reason?: string): Promise<void> {
    const order = (dataOf(cause) as { order: string }).order;
    const stream = `order-${order}`;
    const facts = await this.client.readWholeStream(stream);
    const last = facts.at(-1);
    if (!last) throw new Error(`order ${order} is not in the store`);
    const data = { order, ...(reason !== undefined ? { reason } : {}) };
    if (last.event.type === "order.placed") {
      const e = fact(outcome, "/shop/orders", order, data, `${order}.outcome.fact`, cause);
      if (!(await this.append(stream, e, last.version))) return this.conclude(cause, outcome, reason);
    }
    const ended = (await this.client.readWholeStream(stream))[1]!;
    // Announced with a fixed id: again after a crash, stored once.
    await this.client.publish(this.topics.orders, fact(ended.event.type, "/shop/orders", order, dataOf(ended.event), `${order}.outcome`, cause));
  }

  private async notify(outcome: CloudEvent): Promise<void> {
    const { order } = dataOf(outcome) as { order: string };
    const sent = fact("notification.sent", "/shop/notifications", order, { order, outcome: outcome.type }, `${order}.notified`, outcome);
    await this.append(`notification-${order}`, sent, "no_stream");
  }

  private async count(e: CloudEvent): Promise<void> {
    if (!["order.placed", "order.confirmed", "order.cancelled", "order.rejected"].includes(e.type)) return;
    const order = String(e.partitionkey);
    const counted = fact("analytics.counted", "/shop/analytics", order, { order, counted: e.type }, `${e.id}.counted`, e);
    // A fixed id: counting the same event again is refused, or writes nothing.
    await this.append(`analytics-${order}`, counted, "any");
  }
}

/** What the check found. */
export interface Verdict {
  orders: number;
  confirmed: number;
  cancelled: number;
  rejected: number;
  problems: string[];
}

/** The Rust flow's check, read from the server's event store. */
export async function check(client: Client, orders: Order[]): Promise<Verdict> {
  const verdict: Verdict = { orders: orders.length, confirmed: 0, cancelled: 0, rejected: 0, problems: [] };
  const types = (events: RecordedEvent[]) => events.map((e) => e.event.type);
  const same = (a: unknown[], b: unknown[]) => JSON.stringify(a) === JSON.stringify(b);
  for (const order of orders) {
    const id = order.order;
    const [placed, payment, reservation, notification, analytics] = await Promise.all(
      ["order", "payment", "reservation", "notification", "analytics"].map((c) => client.readWholeStream(`${c}-${id}`)),
    );
    const outcome = expectedOutcome(order);
    const bad = (what: string) => verdict.problems.push(`order ${id}: ${what}`);
    if (!same(types(placed!), ["order.placed", outcome])) bad(`the order's stream is ${JSON.stringify(types(placed!))}, expected [order.placed, ${outcome}]`);
    else if (canonical(dataOf(placed![0]!.event)) !== canonical(order)) bad("the order's stream holds other contents than were placed");
    const payments = outcome === "order.confirmed" ? ["payment.charged"] : outcome === "order.cancelled" ? ["payment.declined"] : [];
    if (!same(types(payment!), payments)) bad(`payment facts ${JSON.stringify(types(payment!))}, expected ${JSON.stringify(payments)}`);
    const stock = types(reservation!);
    const stockOk =
      outcome === "order.confirmed"
        ? same(stock, ["stock.reserved"])
        : same(stock, ["stock.reserved", "stock.released"]) || same(stock, ["reservation.void"]);
    if (!stockOk) bad(`reservation facts ${JSON.stringify(stock)} for ${outcome}`);
    const notified = notification!.map((e) => (dataOf(e.event) as { outcome?: string }).outcome);
    if (!same(notified, [outcome])) bad(`notifications ${JSON.stringify(notified)}, expected one for ${outcome}`);
    const counted = analytics!.map((e) => (dataOf(e.event) as { counted?: string }).counted).sort();
    if (!same(counted, ["order.placed", outcome].sort())) bad(`analytics counted ${JSON.stringify(counted)}`);
    const strays = [...payment!, ...reservation!, ...notification!, ...analytics!, ...placed!.slice(1)].filter(
      (e) => e.event.correlationid !== correlation(id),
    );
    if (strays.length > 0) bad(`${strays.length} facts outside the order's correlation`);
    if (outcome === "order.confirmed") verdict.confirmed += 1;
    else if (outcome === "order.cancelled") verdict.cancelled += 1;
    else verdict.rejected += 1;
  }
  return verdict;
}

/** Order `n` of a run: shares of declined and poison orders by `n`. */
export function orderOf(run: string, n: number, declinePercent: number, poisonPercent: number): Order {
  const roll = (n * 37 + 11) % 100;
  const [currency, token] =
    roll < poisonPercent ? ["XTS", TOKEN_VISA] : roll < poisonPercent + declinePercent ? ["EUR", TOKEN_DECLINED] : ["EUR", TOKEN_VISA];
  const quantity = 1 + (n % 3);
  return {
    order: `${run}-${n}`,
    customer: `customer-${n % 50}`,
    sku: `sku-${n % 8}`,
    quantity,
    cents: quantity * (500 + ((n * 7919) % 9500)),
    currency,
    payment_token: token,
  };
}

/** Places `orders` at the order endpoint, each until it is accepted (a repeat is harmless). */
export async function place(endpoint: string, orders: Order[], clients = 4): Promise<void> {
  let next = 0;
  const customer = async () => {
    while (next < orders.length) {
      const order = orders[next++]!;
      for (let attempt = 0; ; attempt++) {
        try {
          const response = await fetch(`${endpoint}/orders`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify(order),
          });
          const text = await response.text();
          if (response.status === 200 || response.status === 201) break;
          if (response.status < 500) throw new Error(`order ${order.order} refused with ${response.status}: ${text}`);
        } catch (e) {
          if (attempt >= 50) throw e;
        }
        await sleep(100);
      }
    }
  };
  await Promise.all(Array.from({ length: clients }, customer));
}
