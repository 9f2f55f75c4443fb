//! Exercise 5's policy probe: the grader asks the worker to call the student's
//! retry policy on made-up failures and to report every answer, so that a
//! diagnosis says what the policy decided (the delays, when it gave up), not
//! only what a run's numbers looked like. Students need not edit this file.
//!
//! The grader submits a job of exercise 5 whose payload is `{"probePolicy":
//! [<case>, ...]}`; the worker runs each [`ProbeCase`] against the policy it was
//! built with, writes a [`ProbeReport`] as JSON to `probe:<jobId>` and
//! acknowledges the job (nothing is charged). The API serves it as
//! `GET /jobs/{jobId}/probe`.

use serde::{Deserialize, Serialize};

/// The payload field that makes a job of exercise 5 a probe.
pub const PROBE_POLICY: &str = "probePolicy";

/// How many delays of each life a report keeps (the rest are summed up).
pub const KEPT_DELAYS: usize = 16;

/// Most lives of one case, and most calls of one life.
pub const MAX_LIVES: u32 = 200;
pub const MAX_CALLS: u32 = crate::MAX_SCHEDULED_ATTEMPTS;

/// `probe:<jobId>`: the report of a probe job (JSON), kept a day.
pub fn key(job_id: &str) -> String {
    format!("probe:{job_id}")
}

/// One kind of failure, asked again and again as a job's life would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeCase {
    /// Names the case in the report.
    pub name: String,
    /// The provider's status (`None`: no answer).
    pub status: Option<u16>,
    /// The provider's `Retry-After`, in milliseconds.
    pub retry_after_ms: Option<u64>,
    /// How many jobs live it (each its own job id: `probe-<name>-<n>`).
    pub lives: u32,
    /// A life ends at the first dead-letter, after this many calls, or once
    /// the time since its first failure passes `max_since_ms`.
    pub max_calls: u32,
    pub max_since_ms: u64,
    /// `true`: every call of a life is the SAME first failure (attempt 1, no
    /// time since) of the same job: a pure policy answers each one alike.
    #[serde(default)]
    pub repeat: bool,
}

/// What the policy answered one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseReport {
    pub name: String,
    pub lives: Vec<Life>,
}

/// The answers of one life: the first [`KEPT_DELAYS`] delays, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Life {
    /// The delay of each "retry" answer, in order (the first [`KEPT_DELAYS`]).
    pub delays_ms: Vec<u64>,
    /// How many times the policy was called.
    pub calls: u32,
    /// The longest delay it answered.
    pub max_delay_ms: u64,
    /// The time since the first failure at the last call (the delays summed).
    pub since_ms: u64,
    pub end: LifeEnd,
}

/// How a life ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum LifeEnd {
    /// The policy dead-lettered the job at this call, with this reason.
    DeadLettered { call: u32, reason: String },
    /// Still "retry" when the life's limits were reached.
    StillRetrying,
    /// The policy panicked at this call.
    Panicked { call: u32, message: String },
}

/// The report of a probe job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReport {
    /// The policy's student file as the worker was built from it (`file #hash`).
    pub code: String,
    pub cases: Vec<CaseReport>,
}

/// One call of the policy, as a probe makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call<'a> {
    /// The failed attempts so far, this one included (1: the first failure).
    pub attempt: u32,
    /// Time since the first failure (ms).
    pub since_ms: u64,
    pub status: Option<u16>,
    pub retry_after_ms: Option<u64>,
    pub job_id: &'a str,
}

/// What the policy answered one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Retry after this many milliseconds.
    Retry(u64),
    DeadLetter(String),
    /// The policy panicked, with this message.
    Panicked(String),
}

/// Lives `case` with the policy `decide`: each life asks it after every
/// failure, the time moving on by each delay it answers (plus the 1 ms an
/// attempt takes), until it dead-letters or the case's limits are reached.
pub fn live_case(case: &ProbeCase, mut decide: impl FnMut(&Call<'_>) -> Answer) -> CaseReport {
    let lives = (0..case.lives.min(MAX_LIVES))
        .map(|n| {
            let job_id = if case.repeat {
                format!("probe-{}", case.name)
            } else {
                format!("probe-{}-{n}", case.name)
            };
            live(case, &job_id, &mut decide)
        })
        .collect();
    CaseReport {
        name: case.name.clone(),
        lives,
    }
}

fn live(case: &ProbeCase, job_id: &str, decide: &mut impl FnMut(&Call<'_>) -> Answer) -> Life {
    let mut life = Life {
        delays_ms: Vec::new(),
        calls: 0,
        max_delay_ms: 0,
        since_ms: 0,
        end: LifeEnd::StillRetrying,
    };
    let max_calls = case.max_calls.min(MAX_CALLS);
    while life.calls < max_calls && life.since_ms <= case.max_since_ms {
        life.calls += 1;
        let (attempt, since_ms) = if case.repeat {
            (1, 0)
        } else {
            (life.calls, life.since_ms)
        };
        let call = Call {
            attempt,
            since_ms,
            status: case.status,
            retry_after_ms: case.retry_after_ms,
            job_id,
        };
        match decide(&call) {
            Answer::Retry(ms) => {
                if life.delays_ms.len() < KEPT_DELAYS {
                    life.delays_ms.push(ms);
                }
                life.max_delay_ms = life.max_delay_ms.max(ms);
                life.since_ms = life.since_ms.saturating_add(ms).saturating_add(1);
            }
            Answer::DeadLetter(reason) => {
                life.end = LifeEnd::DeadLettered {
                    call: life.calls,
                    reason,
                };
                return life;
            }
            Answer::Panicked(message) => {
                life.end = LifeEnd::Panicked {
                    call: life.calls,
                    message,
                };
                return life;
            }
        }
    }
    life
}
