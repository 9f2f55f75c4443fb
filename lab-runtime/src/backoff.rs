//! The one retry delay policy of the lab: a delay that doubles after each
//! failure up to a cap, back to the start after a success. Every retry loop
//! (the worker's reads and acknowledgements, the demo-runner's requests) uses
//! it with its own bounds. Students need not edit this file.

use std::time::Duration;

/// Capped doubling: `first`, `2 x first`, ... up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    delay: Duration,
    failures: u32,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            delay: first,
            failures: 0,
        }
    }

    /// The delay to wait after the failure just seen; the next one is twice as long (capped).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.delay;
        self.failures += 1;
        self.delay = (self.delay * 2).min(self.max);
        delay
    }

    /// The delay the next [`next_delay`](Backoff::next_delay) returns, without taking it (for log lines).
    pub fn peek(&self) -> Duration {
        self.delay
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After a success; returns how many failures came before it.
    pub fn reset(&mut self) -> u32 {
        self.delay = self.first;
        std::mem::take(&mut self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_starts_over_after_a_success() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        assert_eq!(b.reset(), 4);
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
