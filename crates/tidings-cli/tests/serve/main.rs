//! `tidings serve` as a user meets it: the real binary on a loopback port,
//! spoken to over HTTP, the CLI and the Kafka protocol.

mod api;
mod bad_input;
mod browser;
mod bulk;
mod catalog;
mod cli;
mod collector;
mod consumers;
mod dashboard;
mod disk_full;
mod groups;
mod kafka;
mod kafka_compare;
mod kafka_defaults;
mod kafka_producers;
mod login;
mod matrix;
mod monitoring;
mod nemesis;
mod permissions;
mod reading;
mod readme;
mod registry;
mod schemathesis;
mod security;
mod shutdown;
mod store;
mod streams;
mod support;
mod tls;
mod traces;
mod wire;
