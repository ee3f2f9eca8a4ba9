//! The toolkit's tests. `conformance` holds the checks every backend must
//! pass, in each mode, as far as its declared capabilities reach; each
//! backend module runs every one of them against a fresh backend.

mod bridge;
mod chain;
mod conformance;
mod embedded;
mod hooks;
mod inbox;
#[cfg(feature = "kafka")]
mod kafka;
mod nats;
mod outbox;
mod postgres;
mod readme;
mod saga;
mod schemas;
mod server;
mod store_inbox;
mod store_outbox;
mod support;
mod traces;
