//! Exercise 2's checks (the crash window: a claim with two states).
//! Students need not edit this file.
//!
//! | check | what it sends | what it catches |
//! |---|---|---|
//! | `crash-before-effect` | 2 jobs whose worker crashes after the claim, before the effect | a claim with one state, `done` before the effect, a live `processing` lease taken for done |
//! | `slow-effect-duplicate` | a job whose effect stalls half a lease, and a copy meanwhile | a lease shorter than the effect (the copy sends while the first still works), no `done` marker (the copy sends once the lease ran out) |
//! | `late-duplicate` | a copy sent after the first copy's lease would have run out | no `done` marker (the lease alone) |
//! | `stale-holder` | a holder paused past its lease whose effect then fails, a copy that takes over, and a third | the end of a claim (release, done) written without checking the token |
//! | exercise 1's checks | (as in exercise 1, with jobs of exercise 2) | what exercise 1 catches |
//!
//! The faults are real and come from the payload (`simulateCrash`, `stallMs`,
//! `simulateEffectFailure`): the worker process dies, the effect stalls. The
//! checks time their copies around the workers' lease (`--lease-ms`, the same
//! `LEASE_MS` the workers read).

use std::time::{Duration, Instant};

use lab_schema::summary::plural;
use lab_schema::trace::{Step, Trace, human_ms};
use lab_schema::{EventKind, Exercise, JobView, RunEvent, RunEvents, payload};
use serde_json::json;

use super::duplicate_delivery::{self, CONCURRENT, EXPIRES, FAILURE, LATE, RECORDED, SEQUENTIAL};
use super::{Check, Grader, Mistake, Options, Report, traces, wait_run};
use crate::client::Api;
use crate::scenarios::new_run_id;

const CRASH: &str = "crash-before-effect";
const SLOW: &str = "slow-effect-duplicate";
const STALE: &str = "stale-holder";

/// The checks, in the order they are printed.
pub(super) const CHECKS: [&str; 9] = [
    CRASH, SLOW, LATE, STALE, SEQUENTIAL, CONCURRENT, RECORDED, EXPIRES, FAILURE,
];

/// This exercise's row in `verify`'s table ([`super::grader`]).
pub(crate) const GRADER: Grader = Grader {
    checks: &CHECKS,
    verify: |api, options| Box::pin(verify(api, options)),
};

/// Jobs whose worker crashes before their effect, one after the other.
const CRASHED_JOBS: u32 = 2;

/// How many of them a later exercise sends: one, beside its own crash check
/// (each crash waits for a restart and a lease, about 1.3 s).
const CRASHED_JOBS_LATER: u32 = 1;

/// The mistakes this exercise's own checks can name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ex2Mistake {
    /// Exercise 1's answer: "claimed" says nothing about whether the email went out.
    OneStateClaim {
        lost: u64,
    },
    DoneBeforeEffect {
        lost: u64,
    },
    ProcessingTakenForDone {
        lost: u64,
    },
    CrashedJobLost {
        lost: u64,
    },
    CrashedJobSentTwice {
        emails: u64,
    },
    NoCrash,
    NoDoneMarker {
        emails: u64,
    },
    /// done was written, with a TTL shorter than the wait before the next copy.
    DoneExpired {
        emails: u64,
        command: String,
        ttl_ms: u64,
        /// From the done write to the next copy's delivery.
        gap_ms: u64,
        lease_ms: u64,
    },
    /// The write of done was refused by Redis (its condition did not hold).
    DoneNotTaken {
        emails: u64,
        command: String,
    },
    /// done was written to another key than the claim the copies read.
    DoneOnAnotherKey {
        emails: u64,
        command: String,
        claim_key: String,
    },
    /// done was written and lived, yet a copy sent again: what that copy did.
    DoneIgnored {
        emails: u64,
        command: String,
        copy: String,
    },
    LeaseShorterThanEffect {
        emails: u64,
    },
    EndWithoutToken {
        emails: u64,
        /// The command the paused holder ended the claim with, from its trace.
        ended_with: Option<String>,
    },
    /// The crashed holder's lease lasts longer than any lease should.
    LeaseTooLong {
        key: String,
        ttl_ms: Option<u64>,
        /// How long it still had to live when the check ended.
        remaining_ms: Option<u64>,
        lease_ms: u64,
    },
    /// Two attempts at the same queue entry wrote the same lease value.
    TokenShared {
        value: String,
    },
    /// A job's copies did not all end: what the check saw while waiting.
    NotEnded {
        waited_secs: u64,
        observed: String,
    },
    /// The crashed job never ended: what the check saw while waiting.
    Stuck {
        waited_secs: u64,
        observed: String,
    },
    Lost,
    SameAs(&'static str),
}

impl Mistake for Ex2Mistake {
    fn code(&self) -> &'static str {
        use Ex2Mistake::*;
        match self {
            OneStateClaim { .. } => "one-state-claim",
            DoneBeforeEffect { .. } => "done-before-effect",
            ProcessingTakenForDone { .. } => "processing-taken-for-done",
            CrashedJobLost { .. } => "crashed-job-lost",
            CrashedJobSentTwice { .. } => "duplicate-effect",
            NoCrash => "inconclusive",
            NoDoneMarker { .. } => "no-done-marker",
            DoneExpired { .. } => "done-expired",
            DoneNotTaken { .. } => "done-not-written",
            DoneOnAnotherKey { .. } => "done-on-another-key",
            DoneIgnored { .. } => "done-ignored",
            LeaseShorterThanEffect { .. } => "lease-shorter-than-effect",
            EndWithoutToken { .. } => "end-without-token",
            LeaseTooLong { .. } => "lease-too-long",
            TokenShared { .. } => "token-shared",
            Stuck { .. } => "crashed-job-stuck",
            NotEnded { .. } => "job-stuck",
            Lost => "effect-lost",
            SameAs(_) => super::SAME_MISTAKE,
        }
    }

    fn message(&self) -> String {
        use Ex2Mistake::*;
        match self {
            OneStateClaim { lost } => format!(
                "{} lost: the worker died between the claim and the email, and the redelivery found the claim and skipped the job. One state (\"claimed\") cannot tell \"sent\" from \"was being sent when the worker died\": claim with a lease (processing:<token>, PX ctx.lease_ms), then mark it done",
                plural(*lost, "email")
            ),
            DoneBeforeEffect { lost } => format!(
                "{} lost: the claim said done before the email was sent, so the crashed job's redelivery skipped it. Write done only AFTER the effect",
                plural(*lost, "email")
            ),
            ProcessingTakenForDone { lost } => format!(
                "{} lost: the crashed job's redelivery found the dead worker's processing lease and skipped the job as if it were done. A live lease means \"not yet\": return Err(ctx.retry_later(...)) and let the lease run out",
                plural(*lost, "email")
            ),
            CrashedJobLost { lost } => format!(
                "{} lost after a crash (no skip named a claim, so the cause could not be read)",
                plural(*lost, "email")
            ),
            CrashedJobSentTwice { emails } => format!(
                "a crashed job got {emails} emails: the crash came before the effect, so one is enough"
            ),
            NoCrash => "inconclusive: no worker crashed (were the jobs delivered?)".to_string(),
            NoDoneMarker { emails } => format!(
                "{emails} emails for one job: a copy sent after the lease had run out found no claim and sent again. Once the effect is done, mark the claim done (compare-and-set to done, with the idempotency TTL), so later copies find it"
            ),
            DoneExpired {
                emails,
                command,
                ttl_ms,
                gap_ms,
                lease_ms,
            } => format!(
                "{emails} emails for one job: after the email your code marked the claim done (`{command}`), with {}; the next copy came {} later, when done had expired, found no claim and sent again. done must outlast every duplicate: keep it for ctx.idempotency_ttl_secs (a day){}",
                traces::ttl_text(Some(*ttl_ms)),
                human_ms(*gap_ms),
                if ttl_ms == lease_ms {
                    " (that is the lease's length: the lease covers the work in progress, done everything after)"
                } else {
                    ""
                }
            ),
            DoneNotTaken { emails, command } => format!(
                "{emails} emails for one job: after the email your code tried to mark the claim done with `{command}`, and Redis did not write it (the key did not hold what the command expected), so a later copy found no done and sent again. Compare with the exact lease value your delivery wrote"
            ),
            DoneOnAnotherKey {
                emails,
                command,
                claim_key,
            } => format!(
                "{emails} emails for one job: after the email your code wrote done with `{command}`, to another key than its claim {claim_key}; a later copy claimed {claim_key} once the lease had run out, found it free and sent again. Mark the claim itself done: compare-and-set {claim_key} from your lease value to done"
            ),
            DoneIgnored {
                emails,
                command,
                copy,
            } => format!(
                "{emails} emails for one job: your code marked the claim done (`{command}`), yet a later copy sent again; that copy did: {copy}. A copy that finds done must skip the job"
            ),
            LeaseShorterThanEffect { emails } => format!(
                "{emails} emails for one job: the lease ran out while the first delivery was still sending, and a copy took the claim. The lease must outlast the effect: use ctx.lease_ms"
            ),
            EndWithoutToken { emails, ended_with } => format!(
                "{emails} emails for one job: a delivery whose lease had already run out (it was paused) {} the claim of the delivery that had taken over, and a third copy sent too. Release and mark done only your own lease: ctx.compare_and_delete / ctx.compare_and_set with your lease value",
                match ended_with {
                    Some(command) => format!("ended with `{command}`, which removed"),
                    None => "released".to_string(),
                }
            ),
            LeaseTooLong {
                key,
                ttl_ms,
                remaining_ms,
                lease_ms,
            } => {
                let left = remaining_ms
                    .map(|ms| {
                        format!(
                            " and still had {} to live when this check ended",
                            human_ms(ms)
                        )
                    })
                    .unwrap_or_default();
                let unit = if *ttl_ms == Some(lease_ms * 1000) {
                    " (EX counts seconds: ctx.lease_ms is milliseconds, so it goes with PX)"
                } else {
                    ""
                };
                format!(
                    "your code wrote the claim {key} with {}; the worker died holding it, so its job waits until that lease ends{left}. A lease should outlast one effect and no more: PX ctx.lease_ms ({lease_ms} ms here){unit}. The lab accepts leases up to {} ms",
                    traces::ttl_text(*ttl_ms),
                    traces::group(lease_bound_ms(*lease_ms))
                )
            }
            TokenShared { value } => format!(
                "the crashed delivery and its redelivery (the same queue entry, another attempt) both wrote the lease {value:?}: a token that two holders share cannot tell one from the other. XAUTOCLAIM hands a paused holder's entry to another worker under the same delivery id, and then the paused holder's compare-and-delete or compare-and-set acts on the new holder's lease. Make the token unique per attempt: ctx.lease_token(job)"
            ),
            NotEnded {
                waited_secs,
                observed,
            } => format!("the job's copies had not all ended after {waited_secs} s: {observed}"),
            Stuck {
                waited_secs,
                observed,
            } => format!("the crashed job was not sent within {waited_secs} s: {observed}"),
            Lost => "the job ended with no effect".to_string(),
            SameAs(check) => format!("the same mistake as {check}"),
        }
    }
}

/// A lease (or a crashed holder's claim) may live at most this many times the
/// workers' lease (`--lease-ms`): long enough for any effect of the lab, short
/// enough that a crashed holder's job is sent again within seconds.
pub(crate) const LEASE_BOUND_FACTOR: u64 = 4;

/// The longest lease the checks accept, in ms.
pub(crate) fn lease_bound_ms(lease_ms: u64) -> u64 {
    lease_ms * LEASE_BOUND_FACTOR
}

/// What the crashed jobs showed.
struct Crashes {
    jobs: Vec<JobView>,
    crashes: usize,
    /// Each job's traced deliveries, oldest first.
    traces: Vec<Vec<Trace>>,
    /// Every crashed job ended (else the check waited `waited` and gave up).
    settled: bool,
    waited: Duration,
    /// When the traces were read (unix ms).
    read_at_ms: u64,
}

/// One job and the copies sent around it: its final record and its events.
struct Copies {
    job: JobView,
    events: RunEvents,
    /// The job's traced deliveries, oldest first.
    traces: Vec<Trace>,
    /// Every copy ended (else the check waited `waited` and gave up).
    settled: bool,
    waited: Duration,
}

impl Copies {
    /// The second effect was applied by an attempt that started before the first
    /// effect was written: two deliveries worked at once.
    fn effects_overlapped(&self) -> bool {
        let effects: Vec<&RunEvent> = self
            .events
            .events
            .iter()
            .filter(|e| e.event == EventKind::Effect)
            .collect();
        let [first, second, ..] = effects.as_slice() else {
            return false;
        };
        let second_started = self
            .events
            .events
            .iter()
            .filter(|e| {
                e.event == EventKind::Delivery
                    && e.delivery_id == second.delivery_id
                    && e.time_ms <= second.time_ms
            })
            .map(|e| e.time_ms)
            .max();
        second_started.is_some_and(|t| t < first.time_ms)
    }
}

pub(super) async fn verify(api: &Api, options: &Options) -> anyhow::Result<Report> {
    let exercise = Exercise::CrashWindow;
    let (checks, (), ()) =
        checks_with(api, options, exercise, async { Ok(()) }, async { Ok(()) }).await?;
    Ok(Report {
        exercise,
        checks,
        all_passed: "every crashed job sent its email once, late and concurrent copies were skipped",
    })
}

/// Runs this exercise's checks with jobs of `exercise` (a later exercise must
/// still pass them), with a later exercise's own checks: `crashing` (checks
/// that crash a worker) alone, before this exercise's crashes, and `also`
/// (checks without crashes) at the same time as the checks that crash nothing.
pub(super) async fn checks_with<C, T>(
    api: &Api,
    options: &Options,
    exercise: Exercise,
    crashing: impl std::future::Future<Output = anyhow::Result<C>>,
    also: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(Vec<Check>, C, T)> {
    let timeout = Duration::from_secs(options.timeout_secs);
    let lease = Duration::from_millis(options.lease_ms);
    // The late copy must come after the first copy's lease would have run out.
    let ex1_options = Options {
        late_secs: options.late_secs.max(lease.as_secs() + 2),
        ..options.clone()
    };
    // The late probe's first copy before the crashes: its wait for the late
    // copy overlaps them (nothing of it is in flight while they run).
    let late = duplicate_delivery::late_start(api, exercise, timeout).await?;
    // The crashes alone: a crash kills every delivery its worker has in flight,
    // which would disturb the other checks' jobs.
    let crashing = crashing.await?;
    let jobs = if exercise == Exercise::CrashWindow {
        CRASHED_JOBS
    } else {
        CRASHED_JOBS_LATER
    };
    let crashes = crash_before_effect(api, exercise, jobs, timeout, lease).await?;
    let (slow, stale, ex1, also) = tokio::try_join!(
        slow_effect_duplicate(api, exercise, lease, timeout),
        stale_holder(api, exercise, lease, timeout),
        duplicate_delivery::gather(api, &ex1_options, exercise, Some(late)),
        also,
    )?;
    let ex1_checks = duplicate_delivery::judge(&ex1);
    let late_check = ex1_checks
        .iter()
        .find(|c| c.name == LATE)
        .cloned()
        .expect("exercise 1 judges a late copy");

    let crash = judge_crashes(&crashes, options.lease_ms);
    // Two emails for the late job: what the first delivery did about done (a
    // lost or stuck job keeps exercise 1's diagnosis).
    let late = (!late_check.passed && ex1.late.job.effects > 1)
        .then(|| second_email(&ex1.late.traces, ex1.late.job.effects, options.lease_ms));
    // Two emails: at once (the lease ran out mid-effect), or one after the other
    // (nothing said done once the first was sent).
    let slow_mistake = judge_copies(&slow, |emails| {
        if slow.effects_overlapped() {
            Ex2Mistake::LeaseShorterThanEffect { emails }
        } else {
            second_email(&slow.traces, emails, options.lease_ms)
        }
    });
    let crash_traces: Vec<Trace> = crashes.traces.iter().flatten().cloned().collect();
    let shared = traces::shared_token(&crash_traces, lease_bound_ms(options.lease_ms));
    let stale_mistake = judge_copies(&stale, |emails| Ex2Mistake::EndWithoutToken {
        emails,
        ended_with: paused_holders_end(&stale.traces),
    })
    .or_else(|| {
        shared
            .as_ref()
            .map(|(value, _, _)| Ex2Mistake::TokenShared {
                value: value.clone(),
            })
    });
    let stale_trace = match (&stale_mistake, &shared) {
        (Some(Ex2Mistake::TokenShared { .. }), Some((_, a, b))) => traces::excerpt(&[a, b], 14),
        _ => traces::excerpt(&stale.traces.iter().collect::<Vec<_>>(), 16),
    };
    // A failure that an earlier check already explains says so.
    let first_failed = [(CRASH, &crash), (SLOW, &slow_mistake), (LATE, &late)]
        .into_iter()
        .find(|(_, m)| m.is_some())
        .map(|(name, _)| name);
    // A shared token is its own mistake, whatever else failed.
    let explained = |m: Option<Ex2Mistake>, own: &'static str| match (m, first_failed) {
        (Some(Ex2Mistake::TokenShared { value }), _) => Some(Ex2Mistake::TokenShared { value }),
        (Some(_), Some(first)) if first != own => Some(Ex2Mistake::SameAs(first)),
        (m, _) => m,
    };
    let late_trace = match &late {
        Some(Ex2Mistake::SameAs(_)) | None => Vec::new(),
        Some(_) => traces::excerpt(&ex1.late.traces.iter().collect::<Vec<_>>(), 14),
    };
    let late = explained(late, LATE);
    let slow_mistake = explained(slow_mistake, SLOW);
    let stale_mistake = explained(stale_mistake, STALE);

    let lost: u64 = crashes.jobs.iter().filter(|j| j.effects == 0).count() as u64;
    let mut checks = vec![
        Check::judged(
            CRASH,
            format!(
                "{} whose worker crashed after the claim, before the effect ({}): {} with one effect, {} lost",
                plural(crashes.jobs.len() as u64, "job"),
                plural(crashes.crashes as u64, "crash"),
                crashes.jobs.iter().filter(|j| j.effects == 1).count(),
                lost
            ),
            crash.as_ref().map(|m| m as &dyn Mistake),
            json!({
                "crashes": crashes.crashes,
                "jobs": crashes.jobs.iter().map(|j| json!({
                    "jobId": j.job_id, "effects": j.effects, "attempts": j.process_attempts,
                    "duplicateSkips": j.duplicate_skips, "claimValue": j.claim_value, "claimTtlSecs": j.claim_ttl_secs,
                })).collect::<Vec<_>>(),
            }),
        )
        .with_trace(crash_trace(&crashes)),
        Check::judged(
            SLOW,
            format!(
                "an effect that stalls {} ms (the lease is {} ms), a copy sent meanwhile: {}, {}",
                lease.as_millis() / 2,
                lease.as_millis(),
                plural(slow.job.effects, "effect"),
                plural(slow.job.duplicate_skips, "duplicate skip")
            ),
            slow_mistake.as_ref().map(|m| m as &dyn Mistake),
            json!({ "jobId": slow.job.job_id, "effects": slow.job.effects, "duplicateSkips": slow.job.duplicate_skips }),
        )
        .with_trace(traces::excerpt(&slow.traces.iter().collect::<Vec<_>>(), 14)),
        Check {
            diagnosis: late.as_ref().map(|m| m.diagnosis()).or(late_check.diagnosis),
            ..late_check
        }
        .with_trace(late_trace),
        Check::judged(
            STALE,
            format!(
                "a holder paused past its lease whose effect then failed, a copy that took over, a third copy: {}, {}",
                plural(stale.job.effects, "effect"),
                plural(stale.job.duplicate_skips, "duplicate skip")
            ),
            stale_mistake.as_ref().map(|m| m as &dyn Mistake),
            json!({ "jobId": stale.job.job_id, "effects": stale.job.effects, "duplicateSkips": stale.job.duplicate_skips }),
        )
        .with_trace(stale_trace),
    ];
    for check in ex1_checks.into_iter().filter(|c| c.name != LATE) {
        checks.push(match first_failed {
            Some(first) => check.same_as(first),
            None => check,
        });
    }
    Ok((checks, crashing, also))
}

/// A job with `emails` emails sent one after the other: what the delivery
/// that sent first did about done, and when the copy that sent again came.
fn second_email(traces: &[Trace], emails: u64, lease_ms: u64) -> Ex2Mistake {
    let mut senders: Vec<&Trace> = traces
        .iter()
        .filter(|t| t.has_step(Step::EffectSent))
        .collect();
    senders.sort_by_key(|t| t.started_ms);
    let mut senders = senders.into_iter();
    let first = senders.next();
    let Some(done) = first.and_then(traces::done_write) else {
        return Ex2Mistake::NoDoneMarker { emails };
    };
    let command = done.command.clone();
    if !done.taken {
        return Ex2Mistake::DoneNotTaken { emails, command };
    }
    if let Some(claim) = first.and_then(traces::claim_write)
        && claim.key != done.key
    {
        return Ex2Mistake::DoneOnAnotherKey {
            emails,
            command,
            claim_key: claim.key,
        };
    }
    let Some(copy) = senders.next() else {
        return Ex2Mistake::NoDoneMarker { emails };
    };
    let gap_ms = copy.started_ms.saturating_sub(done.at_ms);
    match done.ttl_ms {
        Some(Some(ttl_ms)) if ttl_ms <= gap_ms => Ex2Mistake::DoneExpired {
            emails,
            command,
            ttl_ms,
            gap_ms,
            lease_ms,
        },
        _ => Ex2Mistake::DoneIgnored {
            emails,
            command,
            copy: copy
                .lines
                .iter()
                .filter(|l| matches!(l.what, lab_schema::trace::Traced::Command { .. }))
                .take(3)
                .map(|l| format!("`{}`", l.what.render()))
                .collect::<Vec<_>>()
                .join(", "),
        },
    }
}

/// The crash check's verdict: first what the crashed holder's trace shows
/// about its claim (done before the effect; a lease too long for the lab),
/// then the outcome (two effects, a lost email, a job that never ended).
fn judge_crashes(crashes: &Crashes, lease_ms: u64) -> Option<Ex2Mistake> {
    if crashes.crashes == 0 && crashes.settled {
        return Some(Ex2Mistake::NoCrash);
    }
    let bound = lease_bound_ms(lease_ms);
    for traces in &crashes.traces {
        let Some(lease) = crashed_lease(traces) else {
            continue;
        };
        if lease.value.as_deref().is_some_and(is_done) {
            let lost = crashes.jobs.iter().filter(|j| j.effects == 0).count() as u64;
            return Some(Ex2Mistake::DoneBeforeEffect { lost: lost.max(1) });
        }
        // A redelivery that skipped the job lost it through how it read the
        // claim (judged below); one that waits is held up by the lease's length.
        let skipped = traces.iter().any(|t| t.has_step(Step::Skipped));
        if !skipped && lease.past(bound) {
            let remaining_ms = (lease.pttl_ms > 0).then(|| {
                (lease.pttl_ms as u64)
                    .saturating_sub(crashes.read_at_ms.saturating_sub(lease.effect_at_ms))
            });
            return Some(Ex2Mistake::LeaseTooLong {
                key: lease.key,
                ttl_ms: lease.ttl_ms,
                remaining_ms,
                lease_ms,
            });
        }
    }
    if let Some(twice) = crashes.jobs.iter().find(|j| j.effects > 1) {
        return Some(Ex2Mistake::CrashedJobSentTwice {
            emails: twice.effects,
        });
    }
    if !crashes.settled {
        return Some(Ex2Mistake::Stuck {
            waited_secs: crashes.waited.as_secs(),
            observed: stuck_observation(crashes),
        });
    }
    let lost: Vec<&JobView> = crashes.jobs.iter().filter(|j| j.effects == 0).collect();
    let first = lost.first()?;
    let n = lost.len() as u64;
    // What the claim the skip named says now: done (for a day), a lease that ran
    // out or still runs, or exercise 1's one-state claim.
    Some(match (&first.claim_value, first.claim_ttl_secs) {
        (Some(value), _) if is_done(value) => Ex2Mistake::DoneBeforeEffect { lost: n },
        (Some(value), _) if value.to_ascii_lowercase().starts_with("processing") => {
            Ex2Mistake::ProcessingTakenForDone { lost: n }
        }
        (None, Some(-2)) => Ex2Mistake::ProcessingTakenForDone { lost: n },
        (Some(_), _) => Ex2Mistake::OneStateClaim { lost: n },
        _ => Ex2Mistake::CrashedJobLost { lost: n },
    })
}

/// The claim a crashed holder left, as its trace shows it.
struct CrashedLease {
    key: String,
    /// Its value when the effect was about to be sent.
    value: Option<String>,
    /// The TTL its write set (from the command), else its PTTL at the effect.
    ttl_ms: Option<u64>,
    pttl_ms: i64,
    /// When the effect was about to be sent (unix ms).
    effect_at_ms: u64,
}

impl CrashedLease {
    /// It lives longer than `bound_ms`, or for ever.
    fn past(&self, bound_ms: u64) -> bool {
        self.ttl_ms.is_none_or(|ms| ms > bound_ms)
    }
}

/// The claim the crashed holder of these traces held when it died.
fn crashed_lease(traces: &[Trace]) -> Option<CrashedLease> {
    let holder = traces::crashed(traces)?;
    let (key, value, pttl_ms) = traces::at_effect(holder)?;
    let written = traces::claim_write(holder)
        .filter(|c| c.key == key)
        .and_then(|c| c.ttl_ms);
    let ttl_ms = written.unwrap_or(match pttl_ms {
        -1 => None,
        ms => Some(ms.max(0) as u64),
    });
    let effect_at_ms = holder.started_ms
        + holder
            .line_of(Step::Effect)
            .map_or(0, |i| holder.lines[i].at_ms);
    Some(CrashedLease {
        key,
        value,
        ttl_ms,
        pttl_ms,
        effect_at_ms,
    })
}

fn is_done(value: &str) -> bool {
    value.to_ascii_lowercase().contains("done")
}

/// What a crashed job that never ended showed: its deliveries, how the last
/// one returned, and the claim as the crashed holder left it.
fn stuck_observation(crashes: &Crashes) -> String {
    let Some(job) = crashes
        .jobs
        .iter()
        .find(|j| j.deliveries_done == 0 || j.effects == 0)
    else {
        return "no crashed job was recorded (is a worker running?)".to_string();
    };
    let index = crashes
        .jobs
        .iter()
        .position(|j| j.job_id == job.job_id)
        .unwrap_or(0);
    let traces = crashes.traces.get(index).map(Vec::as_slice).unwrap_or(&[]);
    let mut seen = traces::observed(job, traces);
    if let Some((key, value, pttl)) = traces::crashed(traces).and_then(traces::at_effect) {
        seen.push_str(&format!(
            "; when the worker died, {key} held {} with {}",
            value.as_deref().unwrap_or("nothing"),
            if pttl < 0 {
                "no expiry".to_string()
            } else {
                format!("{} to live", human_ms(pttl as u64))
            }
        ));
    } else if crashes.crashes == 0 {
        seen.push_str("; no worker crashed (was the job delivered? is a worker running, and restarted after a crash?)");
    }
    seen
}

/// How the paused holder (the delivery whose effect failed) ended the claim:
/// its first write after the failure, e.g. `DEL processed:email:j -> 1`.
fn paused_holders_end(traces: &[Trace]) -> Option<String> {
    let holder = traces.iter().find(|t| t.has_step(Step::EffectFailed))?;
    let failed_at = holder.line_of(Step::EffectFailed)?;
    holder.lines[failed_at..]
        .iter()
        .find_map(|l| match &l.what {
            lab_schema::trace::Traced::Command { .. } => Some(l.what.render()),
            _ => None,
        })
}

/// The trace lines under a failed crash check: the crashed holder's, then
/// the redelivery's.
fn crash_trace(crashes: &Crashes) -> Vec<String> {
    let Some(traces) = crashes
        .traces
        .iter()
        .find(|t| traces::crashed(t).is_some())
        .or(crashes.traces.first())
    else {
        return Vec::new();
    };
    let shown: Vec<&Trace> = traces.iter().take(3).collect();
    traces::excerpt(&shown, 14)
}

fn judge_copies(copies: &Copies, two: impl Fn(u64) -> Ex2Mistake) -> Option<Ex2Mistake> {
    if !copies.settled && copies.job.effects <= 1 {
        return Some(Ex2Mistake::NotEnded {
            waited_secs: copies.waited.as_secs(),
            observed: traces::observed(&copies.job, &copies.traces),
        });
    }
    match copies.job.effects {
        1 => None,
        0 => Some(Ex2Mistake::Lost),
        n => Some(two(n)),
    }
}

/// Jobs whose worker crashes after the claim, before the effect; waits until
/// the run settles (the worker is restarted and the deliveries come back), or
/// until a lease within the lab's bound would have ended long ago.
async fn crash_before_effect(
    api: &Api,
    exercise: Exercise,
    jobs: u32,
    limit: Duration,
    lease: Duration,
) -> anyhow::Result<Crashes> {
    let run_id = new_run_id("verify-crash");
    // A restart takes a few seconds; a lease within the bound ends after it.
    let bound = lease_bound_ms(lease.as_millis() as u64);
    let limit = limit.min(Duration::from_millis(bound) + Duration::from_secs(20));
    let started = Instant::now();
    let deadline = started + limit;
    let mut settled = true;
    // One at a time: a crash takes down everything its worker has in flight.
    'jobs: for n in 1..=jobs {
        let job_id = format!("{run_id}-job-{n}");
        api.submit_to(
            exercise,
            &job_id,
            &run_id,
            json!({ payload::SIMULATE_CRASH: payload::BEFORE_EFFECT }),
        )
        .await?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (_, done) =
                wait_run(api, &run_id, u64::from(n), left.min(Duration::from_secs(2))).await?;
            if done {
                break;
            }
            // No need to wait out a lease the checks will refuse anyway.
            let past_bound = crashed_lease(&api.job_trace(&job_id).await.unwrap_or_default())
                .is_some_and(|l| l.past(bound));
            if past_bound || Instant::now() >= deadline {
                settled = false;
                break 'jobs;
            }
        }
    }
    let mut views = Vec::new();
    let mut job_traces = Vec::new();
    for n in 1..=jobs {
        let job_id = format!("{run_id}-job-{n}");
        match api.job(&job_id).await {
            Ok(job) => views.push(job),
            Err(_) if !settled => break, // never submitted: the first one hung
            Err(err) => return Err(err),
        }
        job_traces.push(api.job_trace(&job_id).await.unwrap_or_default());
    }
    let events = api.events(&run_id).await?;
    Ok(Crashes {
        jobs: views,
        crashes: events.count(EventKind::Crashed),
        traces: job_traces,
        settled,
        waited: started.elapsed(),
        read_at_ms: lab_schema::now_ms(),
    })
}

/// A job whose first effect attempt stalls half a lease, and a copy sent a
/// quarter of a lease in: the copy must wait for the first, not send too.
async fn slow_effect_duplicate(
    api: &Api,
    exercise: Exercise,
    lease: Duration,
    limit: Duration,
) -> anyhow::Result<Copies> {
    let run_id = new_run_id("verify-slow");
    let job_id = format!("{run_id}-job-1");
    let stall = lease.as_millis() as u64 / 2;
    let faults = json!({ payload::STALL_MS: [stall] });
    send_copies(
        api,
        exercise,
        &run_id,
        &job_id,
        &[(Duration::ZERO, faults.clone()), (lease / 4, faults)],
        limit,
    )
    .await
}

/// The stale-holder check's lease, at least: its timeline needs room for
/// three holders (see [`stale_holder`]).
const STALE_LEASE_MS: u64 = 2_000;

/// A holder (A) that stalls past its lease and whose effect then fails; a copy
/// (B) sent once A's lease ran out, which takes over and stalls for most of its
/// own lease; a third copy (C) sent after A failed and released, while B still
/// holds its lease. With tokens, only B sends; without, A's release removes
/// B's lease and C sends too. Timeline for a lease L of at least 2 s: A wakes
/// at L+800 and fails at L+1000, B holds from L+300 and is done at 2L-200
/// (its lease ends at 2L+300), C comes at L+1400: every step at least 300 ms
/// from the next.
async fn stale_holder(
    api: &Api,
    exercise: Exercise,
    lease: Duration,
    limit: Duration,
) -> anyhow::Result<Copies> {
    let run_id = new_run_id("verify-stale");
    let job_id = format!("{run_id}-job-1");
    let lease_ms = (lease.as_millis() as u64).max(STALE_LEASE_MS);
    let faults = json!({
        payload::LEASE_MS: lease_ms,
        payload::STALL_MS: [lease_ms + 800, lease_ms - 700],
        payload::SIMULATE_EFFECT_FAILURE: payload::ONCE,
        // The paused holder's failed delivery comes back a second later, not
        // after the claim idle time: the run settles 9 s sooner.
        payload::REDELIVER_AFTER_MS: 1_000,
    });
    let lease = Duration::from_millis(lease_ms);
    let copies = [
        (Duration::ZERO, faults.clone()),
        (lease + Duration::from_millis(300), faults.clone()),
        (lease + Duration::from_millis(1400), faults),
    ];
    send_copies(api, exercise, &run_id, &job_id, &copies, limit).await
}

/// Sends copies of one job at the given times after the first, waits until the
/// run settles, and returns the job.
async fn send_copies(
    api: &Api,
    exercise: Exercise,
    run_id: &str,
    job_id: &str,
    copies: &[(Duration, serde_json::Value)],
    limit: Duration,
) -> anyhow::Result<Copies> {
    let start = Instant::now();
    for (at, payload) in copies {
        tokio::time::sleep_until((start + *at).into()).await;
        api.submit_to(exercise, job_id, run_id, payload.clone())
            .await?;
    }
    let (_, settled) = wait_run(api, run_id, copies.len() as u64, limit).await?;
    Ok(Copies {
        job: api.job(job_id).await?,
        events: api.events(run_id).await?,
        traces: api.job_trace(job_id).await.unwrap_or_default(),
        settled,
        waited: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::traces::tests::trace;

    fn job(effects: u64, done: u64) -> JobView {
        serde_json::from_value(json!({
            "jobId": "j", "runId": "r", "status": "completed", "submissions": 1,
            "processAttempts": 2, "effects": effects, "duplicateSkips": 0,
            "deliveriesDone": done, "deadLettered": 0,
        }))
        .unwrap()
    }

    /// One crashed job: the holder wrote `claim` (`> SET ...`), held `value`
    /// with `pttl` at the effect, died; `then` is the redelivery's script.
    fn crashes(
        claim: &str,
        value: &str,
        pttl: i64,
        then: &[&str],
        effects: u64,
        settled: bool,
    ) -> Crashes {
        let holder = trace(
            "w1",
            "1",
            1,
            &[
                claim,
                "! effect",
                &format!("@ k {value} {pttl}"),
                "! crashed before-effect",
            ],
        );
        let again = trace("w1", "2", 2, then);
        Crashes {
            jobs: vec![job(effects, u64::from(settled))],
            crashes: 1,
            traces: vec![vec![holder, again]],
            settled,
            waited: Duration::from_secs(12),
            read_at_ms: 5_000,
        }
    }

    const RETRY: &[&str] = &[
        "> SET k processing:b NX PX 3000 = (nil)",
        "> GET k = \"processing:a\"",
        "! returned Err(retry_later: held)",
    ];

    #[test]
    fn a_lease_of_a_day_is_named_with_its_ttl_and_what_was_left_of_it() {
        let c = crashes(
            "> SET k processing:a NX EX 86400",
            "processing:a",
            86_399_990,
            RETRY,
            0,
            false,
        );
        let mistake = judge_crashes(&c, 3000).unwrap();
        let Ex2Mistake::LeaseTooLong {
            ttl_ms,
            remaining_ms,
            ..
        } = &mistake
        else {
            panic!("{mistake:?}");
        };
        assert_eq!(*ttl_ms, Some(86_400_000));
        assert!(remaining_ms.unwrap() > 86_390_000);
        assert!(
            mistake.message().contains("86,400,000 ms (24 h 0 min)"),
            "{}",
            mistake.message()
        );
        assert_eq!(mistake.code(), "lease-too-long");
    }

    #[test]
    fn a_day_long_claim_whose_redelivery_skipped_the_job_is_exercise_1s_claim() {
        let skipped = &[
            "> SET k 1 NX EX 86400 = (nil)",
            "! skipped k",
            "! returned Ok(())",
        ];
        let mut c = crashes("> SET k 1 NX EX 86400", "1", 86_399_000, skipped, 0, true);
        c.jobs[0].claim_value = Some("1".into());
        assert_eq!(
            judge_crashes(&c, 3000),
            Some(Ex2Mistake::OneStateClaim { lost: 1 })
        );
    }

    #[test]
    fn a_lease_in_seconds_where_milliseconds_were_meant_says_ex_is_seconds() {
        let c = crashes(
            "> SET k processing:a NX EX 3000",
            "processing:a",
            2_999_000,
            RETRY,
            0,
            false,
        );
        let message = judge_crashes(&c, 3000).unwrap().message();
        assert!(message.contains("EX counts seconds"), "{message}");
    }

    #[test]
    fn a_lease_without_expiry_is_too_long_even_when_the_command_shows_none() {
        let c = crashes(
            "> EVALSHA abc 1 k processing:a = 1",
            "processing:a",
            -1,
            RETRY,
            0,
            false,
        );
        assert!(matches!(
            judge_crashes(&c, 3000),
            Some(Ex2Mistake::LeaseTooLong { ttl_ms: None, .. })
        ));
    }

    #[test]
    fn done_at_the_moment_of_the_effect_is_done_before_the_effect() {
        let c = crashes(
            "> SET k done NX EX 86400",
            "done",
            86_399_000,
            &["> SET k done NX EX 86400 = (nil)", "! skipped k"],
            0,
            true,
        );
        assert_eq!(
            judge_crashes(&c, 3000),
            Some(Ex2Mistake::DoneBeforeEffect { lost: 1 })
        );
    }

    #[test]
    fn the_reference_passes_and_a_job_that_never_ends_says_what_it_saw() {
        let ok = crashes(
            "> SET k processing:a NX PX 3000",
            "processing:a",
            2990,
            RETRY,
            1,
            true,
        );
        assert_eq!(judge_crashes(&ok, 3000), None);
        let stuck = crashes(
            "> SET k processing:a NX PX 3000",
            "processing:a",
            2990,
            RETRY,
            0,
            false,
        );
        let mistake = judge_crashes(&stuck, 3000).unwrap();
        assert_eq!(mistake.code(), "crashed-job-stuck");
        let message = mistake.message();
        assert!(
            message.contains("returned Err(retry_later: held)"),
            "{message}"
        );
        assert!(
            message.contains("k held processing:a with 3.0 s to live"),
            "{message}"
        );
    }

    /// The first delivery (claims, sends, then runs `done`) and a copy that
    /// came `gap_ms` after it and sent again.
    fn sent_twice(done: &[&str], gap_ms: u64) -> Vec<Trace> {
        let mut first = vec![
            "> SET k processing:a NX PX 1000",
            "! effect",
            "! effect-sent",
        ];
        first.extend_from_slice(done);
        let first = trace("w1", "1", 1, &first);
        let mut copy = trace(
            "w2",
            "2",
            1,
            &[
                "> SET k processing:b NX PX 1000 = OK",
                "! effect",
                "! effect-sent",
            ],
        );
        copy.started_ms = gap_ms;
        vec![copy, first]
    }

    #[test]
    fn a_second_email_is_judged_by_what_the_first_delivery_did_about_done() {
        // done kept for a second (the lease's length), the copy 5 s later.
        let short = sent_twice(&["> compare_and_set k processing:a done 1 = true"], 5_000);
        let mistake = second_email(&short, 2, 1000);
        assert!(
            matches!(mistake, Ex2Mistake::DoneExpired { ttl_ms: 1000, .. }),
            "{mistake:?}"
        );
        let message = mistake.message();
        assert!(
            message.contains("compare_and_set k processing:a done 1 -> true")
                && message.contains("a TTL of 1,000 ms")
                && message.contains("the lease's length"),
            "{message}"
        );
        assert_eq!(mistake.code(), "done-expired");
        // No done at all: the lease alone.
        let none = sent_twice(&["! returned Ok(())"], 5_000);
        assert_eq!(
            second_email(&none, 2, 1000),
            Ex2Mistake::NoDoneMarker { emails: 2 }
        );
        // Redis refused the write (compared with another value).
        let refused = sent_twice(
            &["> compare_and_set k processing:x done 86400 = false"],
            5_000,
        );
        assert_eq!(second_email(&refused, 2, 1000).code(), "done-not-written");
        // done written beside the claim, not to it.
        let beside = sent_twice(&["> SET k:done done EX 86400 = OK"], 5_000);
        let mistake = second_email(&beside, 2, 1000);
        assert_eq!(mistake.code(), "done-on-another-key");
        assert!(
            mistake.message().contains("another key than its claim k;"),
            "{}",
            mistake.message()
        );
        // done for a day, and the copy sent anyway: say what the copy did.
        let ignored = sent_twice(&["> SET k done EX 86400 = OK"], 5_000);
        let mistake = second_email(&ignored, 2, 1000);
        assert_eq!(mistake.code(), "done-ignored");
        assert!(
            mistake
                .message()
                .contains("`SET k processing:b NX PX 1000 -> OK`"),
            "{}",
            mistake.message()
        );
    }

    #[test]
    fn the_paused_holders_end_is_its_first_command_after_the_failed_effect() {
        let holder = trace(
            "w1",
            "1",
            1,
            &[
                "> SET k processing:a NX PX 3000",
                "! effect",
                "! effect-failed timeout",
                "> DEL k = 1",
            ],
        );
        assert_eq!(paused_holders_end(&[holder]).as_deref(), Some("DEL k -> 1"));
    }
}
