//! The event store's tests. `conformance` holds the checks both backends must
//! pass; each backend module runs every one of them against a fresh store.

mod conformance;
mod embedded;
mod postgres;
mod sim;
mod support;
