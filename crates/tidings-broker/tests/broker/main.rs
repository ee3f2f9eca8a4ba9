//! Integration tests of the broker, through its public API only.

#![allow(unreachable_pub)]

mod alter;
mod catalog;
mod groups;
mod kafka_groups;
mod publish;
mod queue;
mod schemas;
mod sim;
mod support;
