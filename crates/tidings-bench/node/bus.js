// The Node.js side of `tidings-bench bus`, as ../shared/PEERS.md fixes it:
// a plain EventEmitter with 1, 3 and 10 listeners, and the guides' EventBus
// pattern with three async subscribers. Prints one JSON object per line.
'use strict';
const { EventEmitter } = require('node:events');
const crypto = require('node:crypto');

const quick = process.argv.includes('--quick');
const WARMUP = quick ? 100_000 : 1_000_000;
const EMITS = quick ? 500_000 : 5_000_000;
const EVENTS = quick ? 100_000 : 1_000_000;

function syncEmit(listeners) {
  const emitter = new EventEmitter();
  emitter.setMaxListeners(100);
  let counter = 0;
  for (let i = 0; i < listeners; i++) {
    emitter.on('order:placed', (payload) => { counter += payload.total; });
  }
  const payload = { orderId: 'o1', userId: 'u1', total: 1 };
  for (let i = 0; i < WARMUP; i++) emitter.emit('order:placed', payload);
  counter = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < EMITS; i++) emitter.emit('order:placed', payload);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (counter !== EMITS * listeners) throw new Error(`lost deliveries: ${counter}`);
  return { workload: `sync emit, ${listeners} listener(s)`, per_second: EMITS / seconds, deliveries_per_second: (EMITS * listeners) / seconds };
}

class EventBus extends EventEmitter {
  constructor() {
    super();
    this.errors = 0;
    this.on('error', () => { this.errors += 1; });
  }

  subscribe(event, handler) {
    const wrapper = async (...args) => {
      try { await handler(...args); } catch (err) { this.emit('error', err); }
    };
    this.on(event, wrapper);
  }

  publish(event, payload) {
    const envelope = { event, payload, timestamp: new Date().toISOString(), id: crypto.randomUUID() };
    this.emit(event, envelope);
    return envelope.id;
  }
}

async function eventBus() {
  const bus = new EventBus();
  let counter = 0;
  for (let i = 0; i < 3; i++) {
    bus.subscribe('order:placed', async ({ payload }) => { counter += payload.total; });
  }
  const payload = { orderId: 'o1', userId: 'u1', total: 1 };
  const start = process.hrtime.bigint();
  for (let i = 0; i < EVENTS; i++) bus.publish('order:placed', payload);
  while (counter < EVENTS * 3) await new Promise((resolve) => setImmediate(resolve));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (counter !== EVENTS * 3 || bus.errors !== 0) throw new Error('lost deliveries');
  return { workload: 'EventBus pattern, 3 async subscribers', per_second: EVENTS / seconds, deliveries_per_second: (EVENTS * 3) / seconds };
}

(async () => {
  for (const n of [1, 3, 10]) console.log(JSON.stringify(syncEmit(n)));
  console.log(JSON.stringify(await eventBus()));
})().catch((err) => { console.error(err); process.exit(1); });
