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

/** What an append expects of its stream: checked atomically with the write. */
export type ExpectedVersion = "any" | "no_stream" | "stream_exists" | number;

/** An event as the event store recorded it. */
export interface RecordedEvent {
  event: CloudEvent;
  /** Its stream and its version there (from 0). */
  stream: string;
  version: number;
  /** Its place in the store's global order (`$all`). */
  position: number;
  recorded_ms: number;
}

/** Where an append went. */
export interface Appended {
  stream: string;
  first_version: number;
  last_version: number;
  first_position: number;
  last_position: number;
}

/** A stored event of a topic, as a stream group's member reads it. */
export interface StoredEvent {
  event?: CloudEvent;
  record?: unknown;
  partition: number;
  offset: number;
  timestamp_ms: number;
}

/** One poll of a stream group's member. */
export interface Poll {
  /** The partitions the member owns now. */
  assignment: number[];
  events: StoredEvent[];
  generation: number;
  /** Per partition the member owns, the offset to read next: what to commit. */
  next: Record<string, number>;
}

export interface ConsumeOptions {
  /** Where a new group starts: `earliest` (the default), `latest` or an RFC 3339 time. */
  from?: string;
  /** How long one poll waits for events (default 1000 ms); a stop waits at most this long. */
  waitMs?: number;
  /** The member's session timeout on the server. */
  sessionTimeoutMs?: number;
  /** Called with errors of the loop and of the handler; the loop goes on. */
  onError?: (error: unknown) => void;
}

export interface StoreSubscribeOptions {
  /** The global position to start at (default 0: the beginning). */
  from?: number;
  /** Only the streams of this category (`order` for `order-17`, ...). */
  category?: string;
  /** Called with errors of the connection and of the handler; it reconnects. */
  onError?: (error: unknown) => void;
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

/** The wait after a failure: 100 ms, doubling to 5 s, back to 100 ms after a success. */
class Pause {
  private ms = 100;

  async wait(): Promise<void> {
    await sleep(this.ms);
    this.ms = Math.min(this.ms * 2, 5000);
  }

  reset(): void {
    this.ms = 100;
  }
}

/** A query string of the options given (`undefined` ones left out). */
function query(options: Record<string, number | string | undefined>): string {
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

  // The event store.

  /**
   * Appends one event or a batch to `stream`, atomically, if the stream is
   * at `expectedVersion` (`any` unless given); a conflict throws
   * `TidingsError` with code `wrong_expected_version`.
   */
  async appendToStream(
    stream: string,
    events: CloudEvent | CloudEvent[],
    options: { expectedVersion?: ExpectedVersion } = {},
  ): Promise<Appended> {
    const q = query({ expected_version: options.expectedVersion });
    const path = `/v1/streams/${seg(stream)}/events${q ? `?${q}` : ""}`;
    const batch = Array.isArray(events);
    return this.request<Appended>(
      "POST",
      path,
      events,
      batch ? "application/cloudevents-batch+json" : "application/cloudevents+json",
    );
  }

  /** Reads `stream` from a version on (forward) or from its end (backward). */
  async readStream(
    stream: string,
    options: { from?: number; direction?: "forward" | "backward"; limit?: number } = {},
  ): Promise<{ events: RecordedEvent[]; version: number | null }> {
    const q = query({ from: options.from, direction: options.direction, limit: options.limit });
    const answer = await this.request<{ events: RecordedEvent[]; version?: number | null }>(
      "GET",
      `/v1/streams/${seg(stream)}/events${q ? `?${q}` : ""}`,
    );
    return { events: answer.events, version: answer.version ?? null };
  }

  /** Every event of `stream`, reading page after page. */
  async readWholeStream(stream: string): Promise<RecordedEvent[]> {
    const events: RecordedEvent[] = [];
    for (;;) {
      const page = await this.readStream(stream, { from: events.length });
      events.push(...page.events);
      if (page.events.length === 0 || page.version === null || events.length > page.version) return events;
    }
  }

  /** Reads the store's global order (`$all`, or one category) from a position on. */
  async readAll(options: { from?: number; limit?: number; category?: string } = {}): Promise<{ events: RecordedEvent[]; next: number }> {
    const q = query({ from: options.from, limit: options.limit, category: options.category });
    return this.request("GET", `/v1/store/events${q ? `?${q}` : ""}`);
  }

  /**
   * Follows the store's global order live over Server-Sent Events, from
   * `from` on: each event goes to `handler`, one at a time, in order. A cut
   * connection is opened again from the last event handled (the server's
   * `Last-Event-ID`), so nothing is skipped or repeated; a handler that
   * throws is reported to `onError` and given the same event again.
   */
  subscribeAll(handler: (event: RecordedEvent) => unknown, options: StoreSubscribeOptions = {}): Subscription {
    const abort = new AbortController();
    let lastId: string | undefined;
    const loop = async () => {
      const pause = new Pause();
      while (!abort.signal.aborted) {
        try {
          const q = query({ from: lastId === undefined ? options.from : undefined, category: options.category });
          const headers: Record<string, string> = { ...this.headers, accept: "text/event-stream" };
          if (lastId !== undefined) headers["last-event-id"] = lastId;
          const response = await fetch(`${this.base}/v1/store/events${q ? `?${q}` : ""}`, {
            headers,
            signal: abort.signal,
          });
          if (!response.ok || !response.body) {
            throw new TidingsError(response.status, `http_${response.status}`, await response.text());
          }
          for await (const message of serverSentEvents(response.body)) {
            if (message.data === undefined) continue;
            const recorded = JSON.parse(message.data) as RecordedEvent;
            for (;;) {
              try {
                await handler(recorded);
                break;
              } catch (e) {
                options.onError?.(e);
                if (abort.signal.aborted) return;
                await pause.wait();
              }
            }
            if (message.id !== undefined) lastId = message.id;
            pause.reset();
          }
        } catch (e) {
          if (abort.signal.aborted) return;
          options.onError?.(e);
          await pause.wait();
        }
      }
    };
    const done = loop();
    return {
      done,
      stop: async () => {
        abort.abort();
        await done;
      },
    };
  }

  // Stream groups: partitions assigned to members, offsets committed.

  /** Joins `group` as a new member reading `topic`; the member's id. */
  async joinGroup(
    group: string,
    topic: string,
    options: { from?: string | undefined; sessionTimeoutMs?: number | undefined } = {},
  ): Promise<string> {
    const body: Record<string, unknown> = { topic };
    if (options.from !== undefined) body.from = options.from;
    if (options.sessionTimeoutMs !== undefined) body.session_timeout_ms = options.sessionTimeoutMs;
    const answer = await this.request<{ member: string }>("POST", `/v1/groups/${seg(group)}/members`, body);
    return answer.member;
  }

  /** Events from the member's partitions, waiting up to `waitMs` when none is there. */
  async poll(group: string, member: string, options: { waitMs?: number; limit?: number } = {}): Promise<Poll> {
    const q = query({ wait_ms: options.waitMs, limit: options.limit });
    return this.request("GET", `/v1/groups/${seg(group)}/members/${seg(member)}/events${q ? `?${q}` : ""}`);
  }

  /** Commits, per partition, the offset of the next event to read. */
  async commit(group: string, member: string, offsets: Record<string, number>): Promise<void> {
    await this.request("POST", `/v1/groups/${seg(group)}/members/${seg(member)}/commit`, { offsets });
  }

  /** Leaves the group: its partitions go to the other members. */
  async leaveGroup(group: string, member: string): Promise<void> {
    await this.request("DELETE", `/v1/groups/${seg(group)}/members/${seg(member)}`);
  }

  /**
   * Consumes `topic` as a member of the stream group `group`: events of
   * each partition reach `handler` in order, one at a time, and what a
   * poll handed out is committed once the handler has resolved for all of
   * it. A handler that throws gets the same event again, with backoff,
   * until it resolves — a stream keeps its order, so it does not skip
   * (queue groups, with `subscribe`, dead-letter instead). A member the
   * group no longer knows joins again; `stop` commits and leaves.
   */
  consume(
    group: string,
    topic: string,
    handler: (event: CloudEvent, stored: StoredEvent) => unknown,
    options: ConsumeOptions = {},
  ): Subscription {
    const waitMs = options.waitMs ?? 1000;
    let stopping = false;
    const loop = async () => {
      let member: string | undefined;
      const pause = new Pause();
      while (!stopping) {
        try {
          member ??= await this.joinGroup(group, topic, { from: options.from, sessionTimeoutMs: options.sessionTimeoutMs });
          const answer = await this.poll(group, member, { waitMs });
          let handled = true;
          events: for (const stored of answer.events) {
            if (!stored.event) continue;
            for (let retry = 100; ; retry = Math.min(retry * 2, 5000)) {
              try {
                await handler(stored.event, stored);
                break;
              } catch (e) {
                options.onError?.(e);
                // Stopping: what is not handled stays uncommitted, for
                // the next member to read.
                if (stopping) {
                  handled = false;
                  break events;
                }
                await sleep(retry);
              }
            }
          }
          if (handled && answer.events.length > 0) await this.commit(group, member, answer.next);
          pause.reset();
        } catch (e) {
          if (e instanceof TidingsError && (e.code === "unknown_member" || e.code === "not_assigned")) {
            member = undefined;
          }
          options.onError?.(e);
          await pause.wait();
        }
      }
      if (member !== undefined) await this.leaveGroup(group, member).catch(options.onError ?? (() => {}));
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
      const pause = new Pause();
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
          pause.reset();
        } catch (e) {
          options.onError?.(e);
          await pause.wait();
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

/** One Server-Sent Event: its id and its data. */
interface ServerSentEvent {
  id?: string;
  data?: string;
}

/** The events of a `text/event-stream` body, as they arrive. */
async function* serverSentEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<ServerSentEvent> {
  const decoder = new TextDecoder();
  let buffer = "";
  let current: ServerSentEvent = {};
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line === "") {
        if (current.data !== undefined || current.id !== undefined) yield current;
        current = {};
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "data") current.data = current.data === undefined ? value : `${current.data}\n${value}`;
      else if (field === "id") current.id = value;
    }
  }
}
