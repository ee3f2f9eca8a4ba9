//! Integration tests of the broker, through its public API only.

#![allow(unreachable_pub)]

mod groups;
mod publish;
mod queue;
mod support;
