// The package's entry: the client and the guides' EventBus on it.

export * from "./client.js";
export { EventBus, type Envelope, type EventBusOptions, type Handler } from "./bus.js";
