//! Exercise 5's checks: what the student's retry policy decides, asked by the
//! grader's probe (`lab_schema::probe`) on the failures a class meets, then
//! judged by the rules of a good retry policy. Students need not edit this file.
//!
//! Every bound is derived, not guessed (the instructor guide explains each):
//! - "at once" is a delay under [`IMMEDIATE_MS`]: less than one mover's tick, so
//!   the job is back before the provider could recover;
//! - jitter is a spread of at least [`MIN_SPREAD`] between the shortest and the
//!   longest of 40 jobs' delays after the same failure: gRPC's ±20 % gives 33 %,
//!   equal jitter 50 %, full jitter ~100 %; a spread under 20 % keeps 40 jobs
//!   in the same 100 ms window after a few seconds' delay;
//! - the cap: no delay over [`CAP_LIMIT`], the longest a job may wait once the
//!   provider is back (the incident's goal: every job through within a minute);
//! - giving up: every life of a failing job ends in the dead letters within a
//!   day of its first failure ([`GIVE_UP_WITHIN_MS`]);
//! - a pure policy answers 60 identical first failures of one job as it answers
//!   the first failure of 40 jobs: never a dead letter, never a delay over twice
//!   the longest of those 40 (each from the same distribution: a larger one has
//!   a chance under 2^-40 for any jitter).

use lab_schema::probe::{CaseReport, LifeEnd, MAX_CALLS, ProbeCase, ProbeReport};
use serde_json::{Value, json};

use super::{Check, Mistake};

/// A delay under this is "at once" (ms).
pub(crate) const IMMEDIATE_MS: u64 = 10;
/// The least spread of one attempt's delays across jobs that counts as jitter.
pub(crate) const MIN_SPREAD: f64 = 0.2;
/// The longest delay a retry may have (ms).
pub(crate) const CAP_LIMIT_MS: u64 = 60_000;
/// A failing job must be given up within this time of its first failure (ms).
pub(crate) const GIVE_UP_WITHIN_MS: u64 = 86_400_000;
/// How often the same first failure is asked.
pub(crate) const REPEATS: u32 = 60;
/// How many jobs live the transient failure.
pub(crate) const LIVES: u32 = 40;

pub(crate) const PERMANENT: &str = "permanent-dead-lettered";
pub(crate) const TRANSIENT: &str = "transient-retried";
pub(crate) const BACKS_OFF: &str = "backs-off";
pub(crate) const JITTERED: &str = "jittered";
pub(crate) const CAPPED: &str = "capped";
pub(crate) const GIVES_UP: &str = "gives-up";
pub(crate) const RETRY_AFTER: &str = "retry-after-honoured";
pub(crate) const FROM_THE_JOB: &str = "attempt-from-the-job";
pub(crate) const NO_STORM: &str = "outage-no-429";
pub(crate) const CHARGED: &str = "charged-once-after-outage";

/// A failing job must be retried at least this long before it is given up
/// (ms): the provider's outages last seconds (20 s in the incident), and a
/// job dead-lettered during one is lost work. With full jitter a count of
/// attempts lasts a random time: the count must make even the luckiest of
/// 40 jobs last this long (or give up on a deadline instead).
pub(crate) const KEEP_TRYING_MS: u64 = 30_000;

/// `verify`'s own outage and jobs: short, and enough jobs that waves show.
pub(crate) const VERIFY_OUTAGE: std::time::Duration = std::time::Duration::from_secs(3);
pub(crate) const VERIFY_JOBS: u32 = 21;

/// Beyond what the policy's own delays predict, how late the last charge may
/// be: the mover's tick, the request, the run being read (ms).
pub(crate) const LATE_SLACK_MS: u64 = 2_000;

/// The probe's checks, in the order they are printed.
pub(crate) const PROBE_CHECKS: [&str; 8] = [
    PERMANENT,
    TRANSIENT,
    BACKS_OFF,
    JITTERED,
    CAPPED,
    GIVES_UP,
    RETRY_AFTER,
    FROM_THE_JOB,
];

/// Every check: the probe's, then the real outage's.
pub(crate) const CHECKS: [&str; 10] = super::chain(PROBE_CHECKS, [NO_STORM, CHARGED]);

/// The failures the probe asks about: (case name, status, Retry-After ms).
const TRANSIENT_503: &str = "transient-503";
const REPEATED: &str = "same-first-failure";
const PERMANENT_CASES: [(&str, u16); 3] = [
    ("declined-402", 402),
    ("bad-request-400", 400),
    ("key-reused-422", 422),
];
const OTHER_TRANSIENT: [(&str, Option<u16>, Option<u64>); 4] = [
    ("rate-limited-429", Some(429), Some(2_000)),
    ("in-flight-409", Some(409), None),
    ("no-answer", None, None),
    ("outage-503-retry-after", Some(503), Some(3_000)),
];

/// The probe's cases.
pub(crate) fn cases() -> Vec<ProbeCase> {
    let case = |name: &str, status, retry_after_ms, lives, max_calls| ProbeCase {
        name: name.to_string(),
        status,
        retry_after_ms,
        lives,
        max_calls,
        max_since_ms: GIVE_UP_WITHIN_MS,
        repeat: false,
    };
    let mut cases = vec![case(
        TRANSIENT_503,
        Some(503),
        None,
        LIVES,
        lab_schema::MAX_SCHEDULED_ATTEMPTS,
    )];
    for (name, status) in PERMANENT_CASES {
        cases.push(case(name, Some(status), None, 5, 3));
    }
    for (name, status, retry_after) in OTHER_TRANSIENT {
        cases.push(case(name, status, retry_after, 20, 4));
    }
    cases.push(ProbeCase {
        repeat: true,
        ..case(REPEATED, Some(503), None, 1, REPEATS)
    });
    cases
}

/// How a status reads in a sentence.
fn status_text(status: Option<u16>) -> String {
    match status {
        None => "no answer (a timeout)".to_string(),
        Some(402) => "402 (card declined)".to_string(),
        Some(400) => "400 (bad request)".to_string(),
        Some(422) => "422 (key reused with another body)".to_string(),
        Some(429) => "429 (too many requests)".to_string(),
        Some(409) => "409 (our first request still running)".to_string(),
        Some(503) => "503 (outage)".to_string(),
        Some(s) => s.to_string(),
    }
}

/// A duration in milliseconds as people say it: `150 ms`, `3.2 s`, `14 min`, `3 h 20 min`.
pub(crate) fn human(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} min", ms / 60_000),
        3_600_000..=86_399_999 => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
        _ => format!("{} days", ms / 86_400_000),
    }
}

/// What the policy did wrong, said from what it answered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PolicyMistake {
    /// A permanent answer was retried: (status, the delay answered).
    PermanentRetried(Vec<(Option<u16>, u64)>),
    /// A transient answer was dead-lettered at its first failure: (status, reason).
    TransientDeadLettered(Vec<(Option<u16>, String)>),
    /// The policy panicked: (case, call, message).
    Panicked(String, u32, String),
    /// The first delays were "at once": the median of attempts 1 to 3.
    Immediate { median_ms: u64 },
    /// The delay does not grow: the longest delay at attempt 1 and at the last attempt looked at.
    NoGrowth { first_ms: u64, later: (u32, u64) },
    /// 40 jobs' delays after the same failure hardly differ: (attempt, shortest, longest).
    NoJitter(Vec<(u32, u64, u64)>),
    /// A delay over the cap limit: (attempt it came after, delay).
    Uncapped {
        attempt: u32,
        delay_ms: u64,
        first_over: Option<u32>,
    },
    /// A life dead-lettered less than [`KEEP_TRYING_MS`] after its first failure.
    GivesUpTooSoon { calls: u32, since_ms: u64 },
    /// A life still retrying at its limits: (calls, time since the first failure, its last delays).
    NeverGivesUp {
        calls: u32,
        since_ms: u64,
        max_delay_ms: u64,
    },
    /// A delay shorter than the provider's Retry-After: (status, Retry-After, delay, attempt).
    RetryAfterIgnored(Vec<(Option<u16>, u64, u64, u32)>),
    /// The same first failure was answered differently as calls went on.
    CounterInMemory {
        answers: Vec<String>,
        first_attempt_max_ms: u64,
    },
}

impl Mistake for PolicyMistake {
    fn code(&self) -> &'static str {
        match self {
            PolicyMistake::PermanentRetried(_) => "permanent-retried",
            PolicyMistake::TransientDeadLettered(_) => "transient-dead-lettered",
            PolicyMistake::Panicked(..) => "policy-panicked",
            PolicyMistake::Immediate { .. } => "immediate-retries",
            PolicyMistake::NoGrowth { .. } => "no-growth",
            PolicyMistake::NoJitter(_) => "no-jitter",
            PolicyMistake::Uncapped { .. } => "uncapped-growth",
            PolicyMistake::NeverGivesUp { .. } => "never-gives-up",
            PolicyMistake::GivesUpTooSoon { .. } => "gives-up-too-soon",
            PolicyMistake::RetryAfterIgnored(_) => "retry-after-ignored",
            PolicyMistake::CounterInMemory { .. } => "counter-in-memory",
        }
    }

    fn message(&self) -> String {
        match self {
            PolicyMistake::PermanentRetried(seen) => {
                let what: Vec<String> = seen
                    .iter()
                    .map(|(s, d)| {
                        format!("{} answered \"retry after {}\"", status_text(*s), human(*d))
                    })
                    .collect();
                format!(
                    "{}: the provider gives the same answer to every retry of a permanent refusal, so the job is retried until the lab's safety net stops it (all night, in the incident). Dead-letter 400, 402, 404 and 422 at once, with the reason",
                    what.join("; ")
                )
            }
            PolicyMistake::TransientDeadLettered(seen) => {
                let what: Vec<String> = seen
                    .iter()
                    .map(|(s, r)| {
                        format!(
                            "{} was dead-lettered at its first failure ({r:?})",
                            status_text(*s)
                        )
                    })
                    .collect();
                format!(
                    "{}: that answer means \"later\", not \"never\" (429: slow down; 409: our first request is still running; 5xx or no answer: the provider is down); retry it with backoff",
                    what.join("; ")
                )
            }
            PolicyMistake::Panicked(case, call, message) => format!(
                "the policy panicked on {case}, call {call}: {message:?} (an overflow? `2u32.pow(attempt)` overflows at attempt 32: use `saturating_pow`, `checked_shl` or cap the exponent first)"
            ),
            PolicyMistake::Immediate { median_ms } => format!(
                "after a 503 your policy retries at once (median delay of attempts 1 to 3: {}): during an outage every job comes back within milliseconds, again and again, and the rate limiter bans the account. Wait longer after each failure: base x 2^(attempt - 1), up to a cap",
                human(*median_ms)
            ),
            PolicyMistake::NoGrowth { first_ms, later } => format!(
                "the delay does not grow: at most {} after attempt 1 and at most {} after attempt {}. A fixed delay keeps hitting a provider that is down at the same rate however long it stays down; double it after each failure (up to a cap)",
                human(*first_ms),
                human(later.1),
                later.0
            ),
            PolicyMistake::NoJitter(seen) => {
                let what: Vec<String> = seen
                    .iter()
                    .map(|(a, lo, hi)| {
                        if lo == hi {
                            format!("attempt {a}: every job waited {}", human(*hi))
                        } else {
                            format!("attempt {a}: {} to {}", human(*lo), human(*hi))
                        }
                    })
                    .collect();
                format!(
                    "{LIVES} jobs that failed at the same moment wait (almost) the same delay ({}): they come back together, in waves that hit the provider all at once. Pick a random delay between 0 and the backoff (full jitter): `fastrand::u64(0..=ms)`",
                    what.join("; ")
                )
            }
            PolicyMistake::Uncapped {
                attempt,
                delay_ms,
                first_over,
            } => format!(
                "after attempt {attempt} your policy waits {}{}: the delay grows without a cap, so a job whose provider is back long ago still waits. Cap it (e.g. `.min(Duration::from_secs(30))`) at a minute or less",
                human(*delay_ms),
                first_over
                    .map(|a| format!(" (over a minute from attempt {a} on)"))
                    .unwrap_or_default()
            ),
            PolicyMistake::NeverGivesUp {
                calls,
                since_ms,
                max_delay_ms,
            } => format!(
                "a job that keeps failing (503) is still retried after {calls} failures over {} (delays up to {}): it never goes to the dead letters, where a person would look at it. Give up after a number of attempts (failure.attempt) or a deadline (failure.since_first_failure)",
                human(*since_ms),
                human(*max_delay_ms)
            ),
            PolicyMistake::GivesUpTooSoon { calls, since_ms } => format!(
                "a job failing with 503 was dead-lettered after {calls} failures, {} after the first: an outage of {} (the incident's lasted 20 s) would send working jobs to the dead letters. Keep retrying for at least a minute: more attempts, or a deadline on failure.since_first_failure",
                human(*since_ms),
                human(*since_ms + 1000)
            ),
            PolicyMistake::RetryAfterIgnored(seen) => {
                let what: Vec<String> = seen
                    .iter()
                    .map(|(s, ra, d, a)| {
                        format!(
                            "{} with Retry-After {}: retried after {} (attempt {a})",
                            status_text(*s),
                            human(*ra),
                            human(*d)
                        )
                    })
                    .collect();
                format!(
                    "{}: the provider said when it can take the request again, and a retry before that only adds to its load (and to the account's 429s). Wait at least failure.retry_after",
                    what.join("; ")
                )
            }
            PolicyMistake::CounterInMemory {
                answers,
                first_attempt_max_ms,
            } => format!(
                "asked {REPEATS} times about the SAME first failure of one job (attempt 1, nothing else changed), your policy answered {}; the first failure of {LIVES} other jobs got at most {}. Its answer depends on how many times it was called in this process, not on failure.attempt: a count kept in memory starts from zero in every worker and after every crash. Use failure.attempt and failure.since_first_failure only",
                answers.join(", "),
                human(*first_attempt_max_ms)
            ),
        }
    }
}

/// The case named `name` of the report.
fn case<'a>(report: &'a ProbeReport, name: &str) -> Option<&'a CaseReport> {
    report.cases.iter().find(|c| c.name == name)
}

/// The delays of `attempt` (1: after the first failure) across a case's lives.
fn delays_at(case: &CaseReport, attempt: u32) -> Vec<u64> {
    case.lives
        .iter()
        .filter_map(|l| l.delays_ms.get(attempt as usize - 1).copied())
        .collect()
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// The first panic of any case.
fn panicked(report: &ProbeReport) -> Option<PolicyMistake> {
    report.cases.iter().find_map(|c| {
        c.lives.iter().find_map(|l| match &l.end {
            LifeEnd::Panicked { call, message } => Some(PolicyMistake::Panicked(
                c.name.clone(),
                *call,
                message.clone(),
            )),
            _ => None,
        })
    })
}

/// Judges the probe's report: one check per rule.
pub(crate) fn judge(
    report: &ProbeReport,
    statuses: &[(String, Option<u16>, Option<u64>)],
) -> Vec<Check> {
    let status_of = |name: &str| {
        statuses
            .iter()
            .find(|(n, ..)| n == name)
            .map(|(_, s, ra)| (*s, *ra))
            .unwrap_or((None, None))
    };
    let panic = panicked(report);
    let empty = CaseReport {
        name: String::new(),
        lives: Vec::new(),
    };
    let transient = case(report, TRANSIENT_503).unwrap_or(&empty);
    let mut checks = Vec::new();

    // 1. Permanent answers: dead-lettered at the first call.
    let mut retried = Vec::new();
    for (name, status) in PERMANENT_CASES {
        if let Some(c) = case(report, name)
            && let Some(l) = c
                .lives
                .iter()
                .find(|l| !matches!(l.end, LifeEnd::DeadLettered { call: 1, .. }))
        {
            retried.push((Some(status), l.delays_ms.first().copied().unwrap_or(0)));
        }
    }
    let mistake = if retried.is_empty() {
        None
    } else {
        Some(PolicyMistake::PermanentRetried(retried))
    };
    checks.push(check(
        PERMANENT,
        "400, 402 and 422 at their first failure".to_string(),
        mistake,
        json!({}),
    ));

    // 2. Transient answers: never dead-lettered at the first failure.
    let mut dropped = Vec::new();
    for name in std::iter::once(TRANSIENT_503).chain(OTHER_TRANSIENT.iter().map(|c| c.0)) {
        if let Some(c) = case(report, name)
            && let Some(LifeEnd::DeadLettered { reason, .. }) = c
                .lives
                .iter()
                .map(|l| &l.end)
                .find(|e| matches!(e, LifeEnd::DeadLettered { call: 1, .. }))
        {
            dropped.push((status_of(name).0, reason.clone()));
        }
    }
    let mistake = match (&panic, dropped.is_empty()) {
        (Some(p), _) => Some(p.clone()),
        (None, false) => Some(PolicyMistake::TransientDeadLettered(dropped)),
        (None, true) => None,
    };
    checks.push(check(
        TRANSIENT,
        "429, 409, 503 and no answer at their first failure".to_string(),
        mistake,
        json!({}),
    ));

    // 3. Backoff: not at once, and growing.
    let last = (2..=5u32)
        .rev()
        .find(|&a| !delays_at(transient, a).is_empty());
    let first_max = delays_at(transient, 1).into_iter().max().unwrap_or(0);
    let mut early: Vec<u64> = (1..=3).flat_map(|a| delays_at(transient, a)).collect();
    let early_median = median(&mut early);
    let backs_off = if transient.lives.is_empty() {
        None
    } else if early_median < IMMEDIATE_MS {
        Some(PolicyMistake::Immediate {
            median_ms: early_median,
        })
    } else if let Some(a) = last {
        let later_max = delays_at(transient, a).into_iter().max().unwrap_or(0);
        (later_max * 2 < first_max * 3 && first_max < CAP_LIMIT_MS / 2).then_some(
            PolicyMistake::NoGrowth {
                first_ms: first_max,
                later: (a, later_max),
            },
        )
    } else {
        None
    };
    let numbers = format!(
        "503 without Retry-After, attempts 1 to 5: {}",
        (1..=5)
            .map(|a| delays_at(transient, a)
                .into_iter()
                .max()
                .map_or("-".to_string(), human))
            .collect::<Vec<_>>()
            .join(", ")
    );
    checks.push(check(
        BACKS_OFF,
        format!("{numbers} (longest of {LIVES} jobs)"),
        backs_off.clone(),
        json!({}),
    ));

    // 4. Jitter: some attempt's delays spread.
    let spreads: Vec<(u32, u64, u64)> = (1..=5)
        .map(|a| (a, delays_at(transient, a)))
        .filter(|(_, d)| d.len() >= 2)
        .map(|(a, d)| (a, *d.iter().min().unwrap(), *d.iter().max().unwrap()))
        .collect();
    let jittered = spreads
        .iter()
        .any(|&(_, lo, hi)| hi > 0 && (hi - lo) as f64 >= MIN_SPREAD * hi as f64);
    let jitter_check = check(
        JITTERED,
        format!(
            "{LIVES} jobs after the same 503: {}",
            spreads
                .iter()
                .map(|(a, lo, hi)| format!("attempt {a}: {} to {}", human(*lo), human(*hi)))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        (!jittered && !spreads.is_empty())
            .then(|| PolicyMistake::NoJitter(spreads.iter().take(3).copied().collect())),
        json!({}),
    );
    checks.push(
        if matches!(backs_off, Some(PolicyMistake::Immediate { .. })) {
            jitter_check.same_as(BACKS_OFF)
        } else {
            jitter_check
        },
    );

    // 5. The cap.
    let longest = transient
        .lives
        .iter()
        .map(|l| l.max_delay_ms)
        .max()
        .unwrap_or(0);
    let uncapped = (longest > CAP_LIMIT_MS).then(|| {
        let first_over = transient
            .lives
            .iter()
            .filter_map(|l| {
                l.delays_ms
                    .iter()
                    .position(|&d| d > CAP_LIMIT_MS)
                    .map(|p| p as u32 + 1)
            })
            .min();
        let attempt = transient
            .lives
            .iter()
            .find(|l| l.max_delay_ms == longest)
            .map(|l| {
                l.delays_ms
                    .iter()
                    .position(|&d| d == longest)
                    .map_or(l.calls, |p| p as u32 + 1)
            })
            .unwrap_or(0);
        PolicyMistake::Uncapped {
            attempt,
            delay_ms: longest,
            first_over,
        }
    });
    checks.push(check(
        CAPPED,
        format!("longest delay after a 503: {}", human(longest)),
        uncapped,
        json!({ "longestMs": longest }),
    ));

    // 6. Giving up.
    let still = transient
        .lives
        .iter()
        .find(|l| l.end == LifeEnd::StillRetrying);
    let ended: Vec<String> = transient
        .lives
        .iter()
        .filter_map(|l| match &l.end {
            LifeEnd::DeadLettered { call, .. } => Some(format!("{call}")),
            _ => None,
        })
        .take(1)
        .collect();
    // A life that ran out of time (a day) because its delays grew past the
    // cap: the cap's mistake, not another one.
    let out_of_time = still.is_some_and(|l| {
        l.since_ms > GIVE_UP_WITHIN_MS && l.max_delay_ms > CAP_LIMIT_MS && l.calls < MAX_CALLS
    });
    let too_soon = transient
        .lives
        .iter()
        .filter_map(|l| match l.end {
            LifeEnd::DeadLettered { call, .. } if call > 1 && l.since_ms < KEEP_TRYING_MS => {
                Some((call, l.since_ms))
            }
            _ => None,
        })
        .min_by_key(|&(_, since)| since);
    let gives_up =
        check(
            GIVES_UP,
            match still {
                Some(l) => format!(
                    "still retrying after {} failures over {}",
                    l.calls,
                    human(l.since_ms)
                ),
                None => format!(
                    "dead-lettered at failure {}",
                    ended.first().cloned().unwrap_or("-".into())
                ),
            },
            still
                .map(|l| PolicyMistake::NeverGivesUp {
                    calls: l.calls,
                    since_ms: l.since_ms,
                    max_delay_ms: l.max_delay_ms,
                })
                .or(too_soon
                    .map(|(calls, since_ms)| PolicyMistake::GivesUpTooSoon { calls, since_ms })),
            json!({}),
        );
    // A life that never got anywhere in time because every retry was at once:
    // the backoff's mistake.
    let at_once = matches!(backs_off, Some(PolicyMistake::Immediate { .. }))
        && still.is_some_and(|l| l.max_delay_ms < IMMEDIATE_MS);
    checks.push(if at_once {
        gives_up.same_as(BACKS_OFF)
    } else if out_of_time {
        gives_up.same_as(CAPPED)
    } else {
        gives_up
    });

    // 7. Retry-After.
    let mut early_retries = Vec::new();
    for (name, status, retry_after) in OTHER_TRANSIENT {
        let Some(ra) = retry_after else { continue };
        if let Some(c) = case(report, name) {
            let short = c.lives.iter().find_map(|l| {
                l.delays_ms
                    .iter()
                    .position(|&d| d < ra)
                    .map(|p| (status, ra, l.delays_ms[p], p as u32 + 1))
            });
            early_retries.extend(short);
        }
    }
    checks.push(check(
        RETRY_AFTER,
        "429 with Retry-After 2 s, 503 with Retry-After 3 s".to_string(),
        (!early_retries.is_empty()).then_some(PolicyMistake::RetryAfterIgnored(early_retries)),
        json!({}),
    ));

    // 8. The same first failure, answered alike.
    let repeated = case(report, REPEATED);
    let memory = repeated.and_then(|c| c.lives.first()).and_then(|l| {
        let dead_at = match &l.end {
            LifeEnd::DeadLettered { call, .. } => Some(*call),
            _ => None,
        };
        let first_dead = transient
            .lives
            .iter()
            .any(|l| matches!(l.end, LifeEnd::DeadLettered { call: 1, .. }));
        let too_long = l.delays_ms.iter().position(|&d| d > 2 * first_max + 50);
        if (dead_at.is_some() && !first_dead) || too_long.is_some() {
            let mut answers: Vec<String> = Vec::new();
            let show =
                |i: usize| format!("retry after {} at call {}", human(l.delays_ms[i]), i + 1);
            answers.push(show(0));
            if let Some(i) = too_long {
                answers.push(show(i));
            }
            if let Some(call) = dead_at {
                answers.push(format!("dead-letter at call {call}"));
            }
            Some(PolicyMistake::CounterInMemory {
                answers,
                first_attempt_max_ms: first_max,
            })
        } else {
            None
        }
    });
    checks.push(check(
        FROM_THE_JOB,
        format!("the same first failure asked {REPEATS} times"),
        memory,
        json!({}),
    ));
    checks
}

fn check(
    name: &'static str,
    numbers: String,
    mistake: Option<PolicyMistake>,
    data: Value,
) -> Check {
    Check::judged(
        name,
        numbers,
        mistake.as_ref().map(|m| m as &dyn Mistake),
        data,
    )
}

/// This exercise's row in `verify`'s table ([`super::grader`]).
pub(crate) const GRADER: super::Grader = super::Grader {
    checks: &CHECKS,
    verify: |api, options| Box::pin(verify(api, options)),
};

/// Sends the probe job, waits for its report, judges it.
async fn verify(
    api: &crate::client::Api,
    options: &super::Options,
) -> anyhow::Result<super::Report> {
    let run_id = crate::scenarios::new_run_id("verify-retry-storm");
    let job_id = format!("{run_id}-probe");
    let cases = cases();
    api.submit_to(
        lab_schema::Exercise::RetryStorm,
        &job_id,
        &run_id,
        json!({ lab_schema::probe::PROBE_POLICY: cases }),
    )
    .await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(options.timeout_secs);
    let report = loop {
        if let Some(report) = api.job_probe(&job_id).await? {
            break report;
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the workers did not answer the policy probe within {} s: are they running exercise 5's code (./lab restart worker)?",
                options.timeout_secs
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let statuses: Vec<(String, Option<u16>, Option<u64>)> = cases
        .iter()
        .map(|c| (c.name.clone(), c.status, c.retry_after_ms))
        .collect();
    let mut checks = judge(&report, &statuses);
    let predicted = predicted_lateness_ms(&report, VERIFY_OUTAGE.as_millis() as u64);
    let plan = crate::retry_storm::Plan {
        jobs: VERIFY_JOBS,
        outage: VERIFY_OUTAGE,
        crashes: 0,
        wait: std::time::Duration::from_millis(predicted + LATE_SLACK_MS),
    };
    let storm = plan.run(api, "verify-retry-storm").await?;
    checks.extend(judge_storm(&storm, predicted));
    Ok(super::Report {
        exercise: lab_schema::Exercise::RetryStorm,
        checks,
        all_passed: "the policy backs off with jitter and a cap, honours Retry-After, gives up, and dead-letters what can never succeed",
    })
}

/// How long after an outage of `outage_ms` the policy's own delays say the
/// last job gets through: for each life of the 503 case, the first attempt at
/// or after the outage's end (delays summed, 1 ms per attempt), minus the end.
/// A life whose kept delays end before it (at once, or more than 16 attempts)
/// adds its longest delay.
pub(crate) fn predicted_lateness_ms(report: &ProbeReport, outage_ms: u64) -> u64 {
    let Some(transient) = case(report, TRANSIENT_503) else {
        return 0;
    };
    transient
        .lives
        .iter()
        .map(|life| {
            let mut t = 0u64;
            for &d in &life.delays_ms {
                t = t.saturating_add(d).saturating_add(1);
                if t >= outage_ms {
                    return t - outage_ms;
                }
            }
            life.max_delay_ms
        })
        .max()
        .unwrap_or(0)
        .min(CAP_LIMIT_MS)
}

/// What the real outage showed: the provider's 429s, and one charge per job
/// soon after it (as the policy's own delays predict).
pub(crate) fn judge_storm(storm: &crate::retry_storm::Storm, predicted_ms: u64) -> Vec<Check> {
    let f = &storm.figures;
    let storm_numbers = format!(
        "{} during the {} s outage (up to {} for one job), busiest 100 ms: {}, 429s: {}{}",
        lab_schema::summary::plural(f.requests_in_outage, "request"),
        f.outage_secs,
        f.max_requests_per_job_in_outage,
        f.busiest_100ms,
        f.rate_limited,
        if f.banned { " (account BANNED)" } else { "" }
    );
    let no_storm = Check {
        name: NO_STORM,
        passed: f.rate_limited == 0,
        numbers: storm_numbers,
        diagnosis: (f.rate_limited > 0).then(|| super::Diagnosis {
            code: "observed-429",
            message: format!(
                "the provider rate-limited the account {} times{}: {} jobs' retries went over its budget of requests per second",
                f.rate_limited,
                match storm.banned_after_ms {
                    // Always in seconds: the handout's masked output keeps one shape.
                    Some(ms) => format!(" and banned it {:.1} s into the outage", ms as f64 / 1000.0),
                    None => String::new(),
                },
                storm.jobs.len()
            ),
        }),
        data: json!({
            "requestsInOutage": f.requests_in_outage,
            "maxRequestsPerJobInOutage": f.max_requests_per_job_in_outage,
            "busiest100ms": f.busiest_100ms,
            "rateLimited": f.rate_limited,
            "banned": f.banned,
        }),
        trace: Vec::new(),
    };
    let transient: Vec<(&String, &crate::retry_storm::JobStorm)> =
        storm.jobs.iter().filter(|(_, j)| !j.declined).collect();
    let uncharged = transient.iter().filter(|(_, j)| j.charged == 0).count();
    let twice = transient.iter().filter(|(_, j)| j.charged > 1).count();
    let dead = transient
        .iter()
        .filter(|(_, j)| j.dead_lettered.is_some())
        .count();
    let declined = storm.jobs.values().find(|j| j.declined);
    // Its first requests may meet the outage (503); once the provider says 402,
    // it is declined for good.
    let declined_ok = declined.is_some_and(|j| j.declines == 1 && j.dead_lettered.is_some());
    let allowed = predicted_ms + LATE_SLACK_MS;
    let late = f.last_charge_after_outage_ms.is_some_and(|ms| ms > allowed);
    let passed = uncharged == 0 && twice == 0 && dead == 0 && declined_ok && !late;
    let mut observed = Vec::new();
    if uncharged > 0 {
        observed.push(format!(
            "{uncharged} of {} jobs not charged {} after the outage ended",
            transient.len(),
            human(allowed)
        ));
    }
    if dead > 0 {
        observed.push(format!("{dead} dead-lettered for a transient failure"));
    }
    if twice > 0 {
        observed.push(format!("{twice} charged twice"));
    }
    if late {
        observed.push(format!(
            "the last charge came {} after the outage",
            human(f.last_charge_after_outage_ms.unwrap_or(0))
        ));
    }
    if let Some(j) = declined
        && !declined_ok
    {
        observed.push(format!(
            "the provider declined the card {} and it was {}",
            lab_schema::summary::plural(j.declines, "time"),
            if j.dead_lettered.is_some() {
                "dead-lettered"
            } else {
                "never dead-lettered"
            }
        ));
    }
    let charged = Check {
        name: CHARGED,
        passed,
        numbers: format!(
            "{} of {} jobs charged once, {} (your policy's delays predict {}; allowed {}); declined card: {}",
            transient.iter().filter(|(_, j)| j.charged == 1).count(),
            transient.len(),
            f.last_charge_after_outage_ms.map_or(
                "none after the outage".to_string(),
                |ms| format!("the last {} after the outage", human(ms))
            ),
            human(predicted_ms),
            human(allowed),
            declined.map_or("no request".to_string(), |j| format!(
                "declined {}, {}",
                lab_schema::summary::plural(j.declines, "time"),
                if j.dead_lettered.is_some() {
                    "dead-lettered"
                } else {
                    "not dead-lettered"
                }
            ))
        ),
        diagnosis: (!passed).then(|| super::Diagnosis {
            code: "observed-outcome",
            message: format!("observed: {}", observed.join("; ")),
        }),
        data: json!({
            "uncharged": uncharged, "chargedTwice": twice, "transientDeadLettered": dead,
            "lastChargeAfterOutageMs": f.last_charge_after_outage_ms, "predictedMs": predicted_ms,
        }),
        trace: Vec::new(),
    };
    vec![no_storm, charged]
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_schema::probe::{Answer, Call, live_case};

    /// A small random source for the policies' jitter (xorshift).
    struct Rng(u64);

    impl Rng {
        fn upto(&mut self, max: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            if max == 0 { 0 } else { self.0 % (max + 1) }
        }
    }

    /// The probe's report of `policy`.
    fn report(mut policy: impl FnMut(&Call<'_>) -> Answer) -> ProbeReport {
        ProbeReport {
            code: "test".to_string(),
            cases: cases().iter().map(|c| live_case(c, &mut policy)).collect(),
        }
    }

    fn failed(report: &ProbeReport) -> Vec<(&'static str, &'static str)> {
        let statuses: Vec<_> = cases()
            .iter()
            .map(|c| (c.name.clone(), c.status, c.retry_after_ms))
            .collect();
        judge(report, &statuses)
            .into_iter()
            .filter(|c| !c.passed)
            .map(|c| (c.name, c.diagnosis.map_or("", |d| d.code)))
            .collect()
    }

    fn permanent(status: Option<u16>) -> bool {
        matches!(status, Some(400 | 402 | 404 | 422))
    }

    /// Exponential backoff from `base_ms`, capped at `cap_ms`, full jitter,
    /// Retry-After honoured, dead-lettered after `max` attempts.
    fn good(base_ms: u64, cap_ms: u64, max: u32) -> impl FnMut(&Call<'_>) -> Answer {
        good_seeded(0x9e37_79b9_7f4a_7c15, base_ms, cap_ms, max)
    }

    fn good_seeded(
        seed: u64,
        base_ms: u64,
        cap_ms: u64,
        max: u32,
    ) -> impl FnMut(&Call<'_>) -> Answer {
        let mut rng = Rng(seed);
        move |call| {
            if permanent(call.status) {
                return Answer::DeadLetter("permanent".into());
            }
            if call.attempt >= max {
                return Answer::DeadLetter("gave up".into());
            }
            let exp = base_ms
                .saturating_mul(1 << (call.attempt - 1).min(30))
                .min(cap_ms);
            Answer::Retry(rng.upto(exp).max(call.retry_after_ms.unwrap_or(0)))
        }
    }

    #[test]
    fn correct_policies_pass_every_check() {
        assert_eq!(failed(&report(good(100, 30_000, 20))), []);
        assert_eq!(failed(&report(good(250, 10_000, 30))), []);
        // Equal jitter and a deadline instead of a count.
        let mut rng = Rng(7);
        let equal = report(move |call| {
            if permanent(call.status) {
                return Answer::DeadLetter("permanent".into());
            }
            if call.since_ms > 10 * 60_000 {
                return Answer::DeadLetter("ten minutes".into());
            }
            let exp = 200u64
                .saturating_mul(1 << (call.attempt - 1).min(20))
                .min(20_000);
            Answer::Retry((exp / 2 + rng.upto(exp / 2)).max(call.retry_after_ms.unwrap_or(0)))
        });
        assert_eq!(failed(&equal), []);
    }

    // Jitter is random: the verdicts must not flip from one run to the next.
    // 500 seeds of full jitter (the spread a small base gives is the narrowest).
    #[test]
    fn a_jittered_policy_passes_whatever_the_random_draws() {
        for seed in 1..=500u64 {
            let policy = good_seeded(seed.wrapping_mul(0x2545_f491_4f6c_dd1d), 100, 30_000, 20);
            assert_eq!(failed(&report(policy)), [], "seed {seed}");
        }
    }

    #[test]
    fn the_starter_retries_at_once_forever() {
        let starter = report(|_| Answer::Retry(0));
        assert_eq!(
            failed(&starter),
            [
                (PERMANENT, "permanent-retried"),
                (BACKS_OFF, "immediate-retries"),
                (JITTERED, crate::verify::SAME_MISTAKE),
                (GIVES_UP, crate::verify::SAME_MISTAKE),
                (RETRY_AFTER, "retry-after-ignored"),
            ]
        );
    }

    #[test]
    fn each_mistake_fails_its_own_check() {
        let mut base = good(100, 30_000, 20);
        let no_jitter = report(|call| match base(call) {
            Answer::Retry(_) => Answer::Retry(
                (100u64 << (call.attempt - 1).min(20))
                    .min(30_000)
                    .max(call.retry_after_ms.unwrap_or(0)),
            ),
            other => other,
        });
        assert_eq!(failed(&no_jitter), [(JITTERED, "no-jitter")]);

        let uncapped = report(good(100, u64::MAX, 30));
        assert_eq!(
            failed(&uncapped),
            [
                (CAPPED, "uncapped-growth"),
                (GIVES_UP, crate::verify::SAME_MISTAKE)
            ]
        );

        let never = report(good(100, 30_000, u32::MAX));
        assert_eq!(failed(&never), [(GIVES_UP, "never-gives-up")]);

        let mut base = good(100, 30_000, 20);
        let too_permanent = report(|call| match call.status {
            Some(429 | 409) => Answer::DeadLetter("refused".into()),
            _ => base(call),
        });
        assert_eq!(
            failed(&too_permanent),
            [(TRANSIENT, "transient-dead-lettered")]
        );

        let mut base = good(100, 30_000, 20);
        let ignores = report(|call| {
            base(&Call {
                retry_after_ms: None,
                ..*call
            })
        });
        assert_eq!(failed(&ignores), [(RETRY_AFTER, "retry-after-ignored")]);

        let impatient = report(good(100, 30_000, 6));
        assert_eq!(failed(&impatient), [(GIVES_UP, "gives-up-too-soon")]);

        let mut base = good(100, 30_000, 20);
        let retries_declines = report(|call| {
            if call.status == Some(402) {
                return Answer::Retry(1000);
            }
            base(call)
        });
        assert_eq!(
            failed(&retries_declines),
            [(PERMANENT, "permanent-retried")]
        );

        // A count per job kept in memory, instead of call.attempt.
        let mut counts = std::collections::HashMap::<String, u32>::new();
        let mut base = good(100, 30_000, 20);
        let memory = report(|call| {
            let n = counts.entry(call.job_id.to_string()).or_default();
            *n += 1;
            base(&Call {
                attempt: *n,
                ..*call
            })
        });
        assert_eq!(failed(&memory), [(FROM_THE_JOB, "counter-in-memory")]);
    }

    #[test]
    fn a_panic_is_named() {
        let panics = report(|call| {
            if call.attempt > 3 {
                Answer::Panicked("attempt to multiply with overflow".into())
            } else {
                Answer::Retry(100 << call.attempt)
            }
        });
        assert!(
            failed(&panics).contains(&(TRANSIENT, "policy-panicked"))
                || !failed(&panics).is_empty()
        );
    }
}
