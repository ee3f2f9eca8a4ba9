//! Randomness for salts, nonces and secrets: the operating system's.

/// Fills `buf` from the operating system's random source. A system without
/// one cannot authenticate anyone safely: that is a fail-stop.
pub(crate) fn fill(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source is unavailable");
}
