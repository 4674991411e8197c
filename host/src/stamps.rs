//! What the host stamps on what it stores and records: content addresses (sha256) and wall-clock
//! times. A leaf every layer may use, from storage up to the front end.

use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// Lowercase hex sha256 of `bytes`: the content address of components and weights.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
