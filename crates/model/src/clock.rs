//! Time as a service reads it: injected where tests need to choose it.

use std::time::SystemTime;

/// The time, as a service sees it: injected so that tests (and replays) choose it.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The machine's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}
