//! How repair and scrub share the machine with the people using it.
//!
//! Three brakes, applied after each step (a window of rows, a part):
//! - a byte rate (`max_bytes_per_sec`): the step's bytes are paid for with time, so the
//!   average over any stretch stays at or under the rate;
//! - tranquility (Garage's): sleep `T x` the time the step took, so at most `1 / (1 + T)` of
//!   the disks' time goes to background work whatever their speed;
//! - foreground first: while a client read or an ingest ran within the last half second, every
//!   step is followed by a pause of at least [`FOREGROUND_FACTOR`] times its length, so a
//!   client's stream gets the disks and the CPU for four fifths of the time (measured: a WebDAV
//!   GET keeps 0.53x of its speed at a factor of 1, see docs/performance.md), while repair
//!   still moves at a fifth of its speed under a stream that never stops (a film playing all
//!   evening must not hold a rebuild back for hours).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Healing;

/// How recent foreground work must be to count as "running".
const FOREGROUND_WINDOW: Duration = Duration::from_millis(500);
/// While foreground work runs, a step is followed by at least this many times its length.
pub const FOREGROUND_FACTOR: u32 = 4;

/// One background worker's brakes.
pub struct Throttle {
    max_bytes_per_sec: u64,
    tranquility: u32,
    /// When the bytes paid so far may have been read at the configured rate.
    paid_until: Instant,
}

impl Throttle {
    /// Brakes with a byte rate (0: none) and a tranquility factor.
    pub fn new(max_bytes_per_sec: u64, tranquility: u32) -> Self {
        Self {
            max_bytes_per_sec,
            tranquility,
            paid_until: Instant::now(),
        }
    }

    /// The pause owed after a step that moved `bytes` and took `took`.
    pub fn pause_after(&mut self, bytes: u64, took: Duration, foreground: bool) -> Duration {
        let now = Instant::now();
        let mut pause = took * self.tranquility;
        if foreground {
            pause = pause.max(took * FOREGROUND_FACTOR);
        }
        if self.max_bytes_per_sec > 0 {
            let cost = Duration::from_secs_f64(bytes as f64 / self.max_bytes_per_sec as f64);
            // Time left unused in the past is banked for a second at most (no long bursts
            // after idling).
            let floor = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
            self.paid_until = self.paid_until.max(floor) + cost;
            pause = pause.max(self.paid_until.saturating_duration_since(now));
        }
        pause
    }

    /// Waits out the pause owed after a step; `false` if `stop` was cancelled meanwhile.
    pub async fn after_step(
        &mut self,
        bytes: u64,
        took: Duration,
        healing: &Healing,
        stop: &CancellationToken,
    ) -> bool {
        let pause = self.pause_after(bytes, took, healing.foreground_recently(FOREGROUND_WINDOW));
        if pause.is_zero() {
            return !stop.is_cancelled();
        }
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tranquility_scales_the_step_and_foreground_work_stretches_it() {
        let mut t = Throttle::new(0, 2);
        assert_eq!(
            t.pause_after(1, Duration::from_millis(100), false),
            Duration::from_millis(200)
        );
        let mut t = Throttle::new(0, 0);
        assert_eq!(
            t.pause_after(1, Duration::from_millis(100), false),
            Duration::ZERO
        );
        assert_eq!(
            t.pause_after(1, Duration::from_millis(100), true),
            Duration::from_millis(400)
        );
    }

    #[test]
    fn the_byte_rate_is_paid_for_with_time() {
        // 10 MB at 10 MB/s: about a second owed, less the step's own time.
        let mut t = Throttle::new(10_000_000, 0);
        let p = t.pause_after(10_000_000, Duration::ZERO, false);
        assert!(
            p > Duration::from_millis(900) && p <= Duration::from_millis(1000),
            "{p:?}"
        );
        // Over many steps the rate holds: 20 more steps of 1 MB owe about 2 more seconds.
        let mut owed = Duration::ZERO;
        for _ in 0..20 {
            owed = t.pause_after(1_000_000, Duration::ZERO, false);
        }
        assert!(owed > Duration::from_millis(2800), "{owed:?}");
    }
}
