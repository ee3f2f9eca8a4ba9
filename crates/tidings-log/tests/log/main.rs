//! Integration tests of the storage engine, through its public API only.

#![allow(unreachable_pub)]

mod bad_input;
mod behaviour;
mod crash_images;
mod kill9;
mod model;
mod producers;
mod sim;
mod support;
