// A Node.js client for Tidings' HTTP API: CloudEvents in, queue groups out,
// with the acks, retries and dead letters the guides ask for. No runtime
// dependencies: Node's own fetch, crypto and timers.

import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

/** A CloudEvent in the JSON event format, as the server stores and answers it. */
export interface CloudEvent {
  specversion: "1.0";
  id: string;
  source: string;
  type: string;
  time?: string;
  datacontenttype?: string;
  dataschema?: string;
  subject?: string;
  data?: unknown;
  data_base64?: string;
  /** Extension attributes: strings, integers or booleans. */
  [extension: string]: unknown;
}

/** What `event` needs to make a CloudEvent; the rest it fills in. */
export interface EventInput {
  type: string;
  source: string;
  /** Any JSON value (sent as `data`), or bytes (sent as `data_base64`). */
  data?: unknown;
  /** Defaults to a random UUID: the id the server deduplicates on. */
  id?: string;
  subject?: string;
  datacontenttype?: string;
  dataschema?: string;
  /** Defaults to now. */
  time?: Date;
  /** Extension attributes (`partitionkey`, `correlationid`, ...). */
  extensions?: Record<string, string | number | boolean>;
}

/** Makes a CloudEvent: a fresh id and the current time unless given. */
export function event(input: EventInput): CloudEvent {
  const out: CloudEvent = {
    specversion: "1.0",
    id: input.id ?? randomUUID(),
    source: input.source,
    type: input.type,
    time: (input.time ?? new Date()).toISOString(),
  };
  if (input.subject !== undefined) out.subject = input.subject;
  if (input.dataschema !== undefined) out.dataschema = input.dataschema;
  for (const [name, value] of Object.entries(input.extensions ?? {})) {
    out[name] = value;
  }
  if (input.data instanceof Uint8Array) {
    out.datacontenttype = input.datacontenttype ?? "application/octet-stream";
    out.data_base64 = Buffer.from(input.data).toString("base64");
  } else if (input.data !== undefined) {
    out.datacontenttype = input.datacontenttype ?? "application/json";
    out.data = input.data;
  } else if (input.datacontenttype !== undefined) {
    out.datacontenttype = input.datacontenttype;
  }
  return out;
}

/** An event's data: the JSON value, the text, or the bytes of `data_base64`. */
export function dataOf(e: CloudEvent): unknown {
  if (typeof e.data_base64 === "string") return Buffer.from(e.data_base64, "base64");
  return e.data;
}

/** An error the server answered: its HTTP status and stable error code. */
export class TidingsError extends Error {
  override readonly name = "TidingsError";
  constructor(
    /** The HTTP status. */
    readonly status: number,
    /** One of the server's error codes (`unknown_topic`, `invalid_event`, ...). */
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Where one published event went. */
export interface Published {
  id?: string;
  partition: number;
  offset: number;
  /** Published within the dedup window already: nothing was appended. */
  duplicate: boolean;
}

/** An event handed out under a lease: ack it, nack it or reject it. */
export interface Delivery {
  /** Which attempt this is, from 1. */
  attempt: number;
  lease: string;
  /** The event (absent for a raw Kafka record, which `record` then holds). */
  event?: CloudEvent;
  record?: unknown;
  partition: number;
  offset: number;
  timestamp_ms: number;
}

/** Settings of a queue group; the server's defaults where absent. */
export interface QueueSettings {
  ack_timeout_ms?: number;
  max_deliveries?: number;
  backoff_initial_ms?: number;
  backoff_factor?: number;
  backoff_max_ms?: number;
  key_ordering?: boolean;
  /** `earliest` (the default), `latest` or an RFC 3339 time. */
  from?: string;
}

/** A dead letter: the event, where it came from, and why it failed. */
export interface DeadLetter {
  attempts: number;
  error: string;
  source_partition: number;
  source_offset: number;
  event?: CloudEvent;
  offset: number;
  partition: number;
  timestamp_ms: number;
}

/** The answer to an ack of several leases. */
export interface AckResult {
  acked: number;
  failed: { lease: string; error_code: string; message: string }[];
}

export interface ClientOptions {
  /** The server's HTTP address, such as `http://127.0.0.1:8080`. */
  url: string;
  /** An API token, sent as `Authorization: Bearer`. */
  token?: string;
}

/** What a handler may throw to say how a failure is retried. */
export class Retry extends Error {
  constructor(
    message: string,
    /** Retry after this long instead of the group's backoff. */
    readonly delayMs?: number,
  ) {
    super(message);
  }
}

/** What a handler may throw to dead-letter the event at once. */
export class Reject extends Error {}

export interface SubscribeOptions {
  /** Most deliveries per receive (default 32). */
  max?: number;
  /** How long one receive waits for events (default 1000 ms); a stop waits at most this long. */
  waitMs?: number;
  /** Called with errors of the loop itself (the server unreachable, ...); it retries after them. */
  onError?: (error: unknown) => void;
}

/** A running subscription. */
export interface Subscription {
  /** Stops after the deliveries in hand are handled and answered. */
  stop(): Promise<void>;
  /** Settles when the subscription has stopped. */
  readonly done: Promise<void>;
}

/** Longest error text sent with a nack or reject. */
const ERROR_TEXT_MAX = 1024;

function errorText(e: unknown): string {
  const text = e instanceof Error ? e.message || e.name : String(e);
  return text.length > ERROR_TEXT_MAX ? text.slice(0, ERROR_TEXT_MAX) : text;
}

const seg = (s: string) => encodeURIComponent(s);

/** A query string of the options given (`undefined` ones left out). */
function query(options: Record<string, number | undefined>): string {
  const q = new URLSearchParams();
  for (const [name, value] of Object.entries(options)) {
    if (value !== undefined) q.set(name, String(value));
  }
  return q.toString();
}

export class Client {
  private readonly base: string;
  private readonly headers: Record<string, string>;

  constructor(options: ClientOptions) {
    this.base = options.url.replace(/\/+$/, "");
    this.headers = options.token ? { authorization: `Bearer ${options.token}` } : {};
  }

  private async request<T>(method: string, path: string, body?: unknown, contentType = "application/json"): Promise<T> {
    const init: RequestInit = { method, headers: { ...this.headers, accept: "application/json" } };
    if (body !== undefined) {
      init.headers = { ...init.headers, "content-type": contentType };
      init.body = JSON.stringify(body);
    }
    const response = await fetch(this.base + path, init);
    const text = await response.text();
    if (!response.ok) {
      let code = `http_${response.status}`;
      let message = text || response.statusText;
      try {
        const parsed = JSON.parse(text) as { error_code?: unknown; message?: unknown };
        if (typeof parsed.error_code === "string") code = parsed.error_code;
        if (typeof parsed.message === "string") message = parsed.message;
      } catch {
        // Not the server's JSON error (a proxy's page): the text as it is.
      }
      throw new TidingsError(response.status, code, message);
    }
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** Creates a topic. */
  async createTopic(name: string, settings: { partitions?: number } & Record<string, unknown> = {}): Promise<void> {
    await this.request("POST", "/v1/topics", { name, ...settings });
  }

  /**
   * Publishes one event or a batch (one request, appended together). The
   * answer has one entry per event, in order.
   */
  async publish(topic: string, events: CloudEvent | CloudEvent[]): Promise<Published[]> {
    const batch = Array.isArray(events) ? events : [events];
    const answer = await this.request<{ events: Published[] }>(
      "POST",
      `/v1/topics/${seg(topic)}/events`,
      batch,
      "application/cloudevents-batch+json",
    );
    return answer.events;
  }

  /** Creates a queue group on `topic`: each event goes to one of its consumers. */
  async createQueue(name: string, topic: string, settings: QueueSettings = {}): Promise<void> {
    await this.request("POST", "/v1/queues", { name, topic, ...settings });
  }

  /** Leases up to `max` due events, waiting up to `waitMs` for one. */
  async receive(group: string, options: { max?: number; waitMs?: number } = {}): Promise<Delivery[]> {
    const answer = await this.request<{ deliveries: Delivery[] }>(
      "POST",
      `/v1/queues/${seg(group)}/receive?${query({ max: options.max, wait_ms: options.waitMs })}`,
    );
    return answer.deliveries;
  }

  /** Acknowledges leases, durably: their events are done for the group. */
  async ack(group: string, leases: string[]): Promise<AckResult> {
    return this.request<AckResult>("POST", `/v1/queues/${seg(group)}/acks`, { leases });
  }

  /** Gives a lease back as failed: retried after the group's backoff (or `delayMs`), dead-lettered after its last attempt. */
  async nack(group: string, lease: string, options: { error?: string; delayMs?: number } = {}): Promise<void> {
    const body: { error?: string; delay_ms?: number } = {};
    if (options.error !== undefined) body.error = options.error;
    if (options.delayMs !== undefined) body.delay_ms = options.delayMs;
    await this.request("POST", `/v1/queues/${seg(group)}/leases/${seg(lease)}/nack`, body);
  }

  /** Dead-letters a lease's event at once. */
  async reject(group: string, lease: string, reason?: string): Promise<void> {
    await this.request(
      "POST",
      `/v1/queues/${seg(group)}/leases/${seg(lease)}/reject`,
      reason === undefined ? {} : { reason },
    );
  }

  /** The group's dead letters not yet redriven or purged. */
  async deadLetters(group: string, options: { from?: number; limit?: number } = {}): Promise<DeadLetter[]> {
    const answer = await this.request<{ dead_letters: DeadLetter[] }>(
      "GET",
      `/v1/queues/${seg(group)}/dead-letters?${query({ from: options.from, limit: options.limit })}`,
    );
    return answer.dead_letters;
  }

  /** Sends dead letters again: to this group, or to every consumer of topic `to`. */
  async redrive(group: string, options: { max?: number; to?: string; error?: string } = {}): Promise<number> {
    const answer = await this.request<{ redriven: number }>(
      "POST",
      `/v1/queues/${seg(group)}/dead-letters/redrive`,
      options,
    );
    return answer.redriven;
  }

  /**
   * Consumes `group`: each delivery's event goes to `handler`, one at a
   * time. A handler that resolves acks the event (the acks of one receive
   * go together); one that throws nacks it, so it is retried with the
   * group's backoff and dead-lettered after its last attempt (throw
   * `Retry` to choose the delay, `Reject` to dead-letter at once).
   */
  subscribe(
    group: string,
    handler: (event: CloudEvent, delivery: Delivery) => unknown,
    options: SubscribeOptions = {},
  ): Subscription {
    const max = options.max ?? 32;
    const waitMs = options.waitMs ?? 1000;
    let stopping = false;
    const loop = async () => {
      let pause = 100;
      while (!stopping) {
        try {
          const deliveries = await this.receive(group, { max, waitMs });
          const acks: string[] = [];
          for (const d of deliveries) {
            if (!d.event) {
              await this.reject(group, d.lease, "not a CloudEvent");
              continue;
            }
            try {
              await handler(d.event, d);
              acks.push(d.lease);
            } catch (e) {
              if (e instanceof Reject) {
                await this.reject(group, d.lease, errorText(e));
              } else {
                const nack: { error: string; delayMs?: number } = { error: errorText(e) };
                if (e instanceof Retry && e.delayMs !== undefined) nack.delayMs = e.delayMs;
                await this.nack(group, d.lease, nack);
              }
            }
          }
          if (acks.length > 0) {
            const result = await this.ack(group, acks);
            for (const f of result.failed) {
              options.onError?.(new TidingsError(409, f.error_code, `ack of ${f.lease}: ${f.message}`));
            }
          }
          pause = 100;
        } catch (e) {
          options.onError?.(e);
          await sleep(pause);
          pause = Math.min(pause * 2, 5000);
        }
      }
    };
    const done = loop();
    return {
      done,
      stop: async () => {
        stopping = true;
        await done;
      },
    };
  }
}
