//! The guides' e-commerce order flow on the Tidings toolkit, as a library
//! the `order-flow` command runs: the event model, the services, the order
//! service's HTTP front, the read model, the customers and the final check.

pub mod board;
pub mod check;
pub mod load;
pub mod model;
pub mod services;
pub mod shop;

/// SplitMix64: the next pseudo-random value after `x`. The dice of the
/// customers' choices, the card gateway's time-outs and the faults: a seed
/// replays them all.
pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
