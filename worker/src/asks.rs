//! What a job's payload asks of the plumbing: faults to stage, a lease, a
//! sooner redelivery (see `lab_schema::payload`). Read once per delivery, by
//! the worker, never by the student's code. Plumbing: students need not edit
//! this file.

use std::time::Duration;

use lab_schema::order_email::unique_lock;
use lab_schema::payload;

/// The payload's requests to the plumbing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Asks {
    /// `simulateEffectFailure: "once"`: the first effect attempt fails.
    pub(crate) fail_once: bool,
    /// `simulateCrash: "before-effect"`: the process dies as the effect is about to run.
    pub(crate) crash_before_effect: bool,
    /// `simulateCrash: "after-effect"`: the process dies right after the effect.
    pub(crate) crash_after_effect: bool,
    /// `simulateCrash: "before-schedule"`, `"after-schedule"`, `"after-move"`:
    /// the process dies at that step of a scheduled retry (`queue/retries.rs`).
    pub(crate) crash_before_schedule: bool,
    pub(crate) crash_after_schedule: bool,
    pub(crate) crash_after_move: bool,
    /// `stallMs`: the n-th effect attempt first stalls that long (at most a minute).
    pub(crate) stall_ms: Vec<u64>,
    /// `leaseMs` (100 ms to 10 min): the handler's `ctx.lease_ms`.
    pub(crate) lease_ms: Option<u64>,
    /// `redeliverAfterMs`: a failed delivery comes back this soon.
    pub(crate) redeliver_after: Option<Duration>,
    /// Exercise 6's demonstration (`lab_schema::order_email::unique_lock`):
    /// the unique lock the API took for this job (its key and mode), and the
    /// worker that runs it instead of the student's file.
    pub(crate) unique_lock: Option<(String, String)>,
    pub(crate) demo_worker: Option<String>,
}

impl Asks {
    pub(crate) fn of(payload_json: &str) -> Asks {
        // Cheap test first: almost no payload asks for anything.
        let asks = [
            payload::SIMULATE_EFFECT_FAILURE,
            payload::SIMULATE_CRASH,
            payload::STALL_MS,
            payload::LEASE_MS,
            payload::REDELIVER_AFTER_MS,
            unique_lock::FIELD,
            unique_lock::DEMO_WORKER,
        ]
        .iter()
        .any(|name| payload_json.contains(name));
        if !asks {
            return Asks::default();
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(payload_json) else {
            return Asks::default();
        };
        let text = |name: &str| value.get(name).and_then(|v| v.as_str());
        let ms = |name: &str| value.get(name).and_then(|v| v.as_u64());
        Asks {
            fail_once: text(payload::SIMULATE_EFFECT_FAILURE) == Some(payload::ONCE),
            crash_before_effect: text(payload::SIMULATE_CRASH) == Some(payload::BEFORE_EFFECT),
            crash_after_effect: text(payload::SIMULATE_CRASH) == Some(payload::AFTER_EFFECT),
            crash_before_schedule: text(payload::SIMULATE_CRASH) == Some(payload::BEFORE_SCHEDULE),
            crash_after_schedule: text(payload::SIMULATE_CRASH) == Some(payload::AFTER_SCHEDULE),
            crash_after_move: text(payload::SIMULATE_CRASH) == Some(payload::AFTER_MOVE),
            stall_ms: value
                .get(payload::STALL_MS)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .map(|ms| ms.as_u64().unwrap_or(0).min(60_000))
                        .collect()
                })
                .unwrap_or_default(),
            lease_ms: ms(payload::LEASE_MS).filter(|ms| (100..=600_000).contains(ms)),
            redeliver_after: ms(payload::REDELIVER_AFTER_MS).map(Duration::from_millis),
            unique_lock: value.get(unique_lock::FIELD).and_then(|lock| {
                let text = |name: &str| lock.get(name)?.as_str().map(str::to_string);
                Some((text("key")?, text("mode")?))
            }),
            demo_worker: text(unique_lock::DEMO_WORKER).map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_payloads_ask_for_anything() {
        assert!(Asks::of(r#"{"simulateEffectFailure":"once"}"#).fail_once);
        assert!(Asks::of(r#"{"template":"x","simulateEffectFailure":"once"}"#).fail_once);
        assert!(!Asks::of(r#"{"simulateEffectFailure":"always"}"#).fail_once);
        assert_eq!(
            Asks::of(r#"{"template":"simulateEffectFailure"}"#),
            Asks::default()
        );
        assert_eq!(Asks::of("{}"), Asks::default());
        assert_eq!(Asks::of("not json simulateCrash"), Asks::default());
        assert!(Asks::of(r#"{"simulateCrash":"before-effect"}"#).crash_before_effect);
        assert!(!Asks::of(r#"{"simulateCrash":"after-effect"}"#).crash_before_effect);
        assert_eq!(
            Asks::of(r#"{"stallMs":[4000,0,"x"]}"#).stall_ms,
            [4000, 0, 0]
        );
    }

    #[test]
    fn a_lease_out_of_bounds_is_not_taken_and_a_redelivery_delay_is() {
        assert_eq!(Asks::of(r#"{"leaseMs":1000}"#).lease_ms, Some(1000));
        assert_eq!(Asks::of(r#"{"leaseMs":50}"#).lease_ms, None);
        assert_eq!(Asks::of(r#"{"leaseMs":"1000"}"#).lease_ms, None);
        assert_eq!(
            Asks::of(r#"{"redeliverAfterMs":1000}"#).redeliver_after,
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_unique_lock_and_a_demonstration_worker_are_read_from_the_payload() {
        let asks = Asks::of(
            r#"{"orderId":"o","uniqueLock":{"key":"unique-lock:o","mode":"until-executed"},"demoWorker":"unguarded"}"#,
        );
        assert_eq!(
            asks.unique_lock,
            Some(("unique-lock:o".to_string(), "until-executed".to_string()))
        );
        assert_eq!(asks.demo_worker.as_deref(), Some("unguarded"));
        assert_eq!(Asks::of(r#"{"uniqueLock":{"key":"k"}}"#).unique_lock, None);
    }
}
