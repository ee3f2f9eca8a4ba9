// The guides' EventBus (seed 000: `subscribe` returning an unsubscribe
// function, `publish` returning the id, handlers given an envelope of
// event, payload, timestamp and id) on a durable topic and a queue group:
// the same code, now with persistence, retries with backoff and dead letters.

import { Client, TidingsError, dataOf, event, type ClientOptions, type CloudEvent, type Subscription } from "./client.js";

/** What a handler is given: the seed's envelope. */
export interface Envelope<T = unknown> {
  /** The event's name (its CloudEvents type). */
  event: string;
  payload: T;
  /** When it was published, ISO 8601. */
  timestamp: string;
  id: string;
}

export type Handler = (envelope: Envelope) => unknown;

export interface EventBusOptions extends ClientOptions {
  /** The topic the bus lives on (created when missing). */
  topic: string;
  /**
   * This service's name: its queue group (created when missing), so that
   * each service gets every event once, whichever of its processes handles
   * it, and the events' source.
   */
  service: string;
  /** Where a new group starts: `latest` (the default, like an in-memory bus) or `earliest`. */
  from?: "latest" | "earliest";
  /** Attempts before an event is dead-lettered (the server's default if absent). */
  maxDeliveries?: number;
  /** Errors the bus could not hand to a handler's caller (the server unreachable, ...). */
  onError?: (error: unknown) => void;
}

export class EventBus {
  private readonly handlers = new Map<string, Set<Handler>>();
  private subscription: Subscription | undefined;

  private constructor(
    private readonly client: Client,
    private readonly options: EventBusOptions,
  ) {}

  /** Connects, creating the topic and this service's group when missing. */
  static async connect(options: EventBusOptions): Promise<EventBus> {
    const client = new Client(options);
    await existing(client.createTopic(options.topic), "topic_exists");
    const settings: { from: string; max_deliveries?: number } = { from: options.from ?? "latest" };
    if (options.maxDeliveries !== undefined) settings.max_deliveries = options.maxDeliveries;
    await existing(client.createQueue(options.service, options.topic, settings), "group_exists");
    return new EventBus(client, options);
  }

  /**
   * Calls `handler` with each `name` event. Every handler of the event runs;
   * if one throws, the event is retried (all of them run again: make them
   * idempotent) and dead-lettered after the group's last attempt. Returns
   * the function that unsubscribes.
   */
  subscribe(name: string, handler: Handler): () => void {
    let set = this.handlers.get(name);
    if (!set) this.handlers.set(name, (set = new Set()));
    set.add(handler);
    this.subscription ??= this.client.subscribe(this.options.service, (e) => this.dispatch(e), {
      waitMs: 500,
      onError: (error) => this.options.onError?.(error),
    });
    return () => this.unsubscribe(name, handler);
  }

  /** Removes a handler `subscribe` added. */
  unsubscribe(name: string, handler: Handler): void {
    const set = this.handlers.get(name);
    set?.delete(handler);
    if (set?.size === 0) this.handlers.delete(name);
  }

  /** Publishes `payload` as event `name`, durably; answers its id. */
  async publish(name: string, payload: unknown): Promise<string> {
    const e = event({ type: name, source: `/${this.options.service}`, data: payload });
    await this.client.publish(this.options.topic, e);
    return e.id;
  }

  /** Stops consuming after the events in hand are handled and answered. */
  async close(): Promise<void> {
    await this.subscription?.stop();
    this.subscription = undefined;
  }

  private async dispatch(e: CloudEvent): Promise<void> {
    // An event this service has no handler for is not its business: acked.
    const set = this.handlers.get(e.type);
    if (!set) return;
    const envelope: Envelope = { event: e.type, payload: dataOf(e), timestamp: e.time ?? "", id: e.id };
    const failures: unknown[] = [];
    for (const handler of [...set]) {
      try {
        await handler(envelope);
      } catch (error) {
        failures.push(error);
      }
    }
    if (failures.length === 1) throw failures[0];
    if (failures.length > 1) throw new AggregateError(failures, failures.map(String).join("; "));
  }
}

/** Waits for `creation`, taking "it exists already" (`code`) as done. */
async function existing(creation: Promise<void>, code: string): Promise<void> {
  try {
    await creation;
  } catch (e) {
    if (!(e instanceof TidingsError && e.code === code)) throw e;
  }
}
