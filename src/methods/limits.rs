//! Per-call limits of a Lua method.

use std::time::Duration;

/// What one call of a method may spend. Going over any of them fails that
/// call only, with an error that names the limit and the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Lua VM instructions (counted in steps of 1,000).
    pub instructions: u64,
    /// Bytes of Lua memory for the call's state.
    pub memory: usize,
    /// Wall-clock time, including the time spent waiting for vSphere.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            instructions: 200_000_000,
            memory: 256 << 20,
            timeout: Duration::from_secs(60),
        }
    }
}

impl Limits {
    /// The limits for running a script's top level when it is (re)loaded.
    pub fn for_loading() -> Limits {
        Limits {
            instructions: 10_000_000,
            memory: 64 << 20,
            timeout: Duration::from_secs(2),
        }
    }
}
