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
use lab_schema::{EventKind, Exercise, JobView, RunEvent, RunEvents, payload};
use serde_json::json;

use super::duplicate_delivery::{self, CONCURRENT, EXPIRES, FAILURE, LATE, RECORDED, SEQUENTIAL};
use super::{Check, Grader, Mistake, Options, Report, wait_run};
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

/// Jobs whose worker crashes before their effect.
const CRASHED_JOBS: u32 = 2;

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
    LeaseShorterThanEffect {
        emails: u64,
    },
    EndWithoutToken {
        emails: u64,
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
            LeaseShorterThanEffect { .. } => "lease-shorter-than-effect",
            EndWithoutToken { .. } => "end-without-token",
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
            LeaseShorterThanEffect { emails } => format!(
                "{emails} emails for one job: the lease ran out while the first delivery was still sending, and a copy took the claim. The lease must outlast the effect: use ctx.lease_ms"
            ),
            EndWithoutToken { emails } => format!(
                "{emails} emails for one job: a delivery whose lease had already run out (it was paused) released the claim of the delivery that had taken over, and a third copy sent too. Release and mark done only your own lease: ctx.compare_and_delete / ctx.compare_and_set with your lease value"
            ),
            Lost => "the job ended with no effect".to_string(),
            SameAs(check) => format!("the same mistake as {check}"),
        }
    }
}

/// What the crashed jobs showed.
struct Crashes {
    jobs: Vec<JobView>,
    crashes: usize,
}

/// One job and the copies sent around it: its final record and its events.
struct Copies {
    job: JobView,
    events: RunEvents,
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
    let (checks, ()) = checks_with(api, options, exercise, async { Ok(()) }).await?;
    Ok(Report {
        exercise,
        checks,
        all_passed: "every crashed job sent its email once, late and concurrent copies were skipped",
    })
}

/// Runs this exercise's checks with jobs of `exercise` (a later exercise must
/// still pass them), and `also` (a later exercise's own checks without crashes)
/// at the same time as the checks that crash nothing.
pub(super) async fn checks_with<T>(
    api: &Api,
    options: &Options,
    exercise: Exercise,
    also: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(Vec<Check>, T)> {
    let timeout = Duration::from_secs(options.timeout_secs);
    let lease = Duration::from_millis(options.lease_ms);
    // The late copy must come after the first copy's lease would have run out.
    let ex1_options = Options {
        late_secs: options.late_secs.max(lease.as_secs() + 2),
        ..options.clone()
    };
    // The crashes first and alone: a crash kills every delivery its worker has in
    // flight, which would disturb the other checks' jobs.
    let crashes = crash_before_effect(api, exercise, timeout).await?;
    let (slow, stale, ex1, also) = tokio::try_join!(
        slow_effect_duplicate(api, exercise, lease, timeout),
        stale_holder(api, exercise, lease, timeout),
        duplicate_delivery::gather(api, &ex1_options, exercise),
        also,
    )?;
    let ex1_checks = duplicate_delivery::judge(&ex1);
    let late_check = ex1_checks
        .iter()
        .find(|c| c.name == LATE)
        .cloned()
        .expect("exercise 1 judges a late copy");

    let crash = judge_crashes(&crashes);
    let late = (!late_check.passed).then(|| Ex2Mistake::NoDoneMarker {
        emails: late_job_effects(&late_check),
    });
    // Two emails: at once (the lease ran out mid-effect), or one after the other
    // (nothing said done once the first was sent).
    let slow_mistake = judge_copies(&slow, |emails| {
        if slow.effects_overlapped() {
            Ex2Mistake::LeaseShorterThanEffect { emails }
        } else {
            Ex2Mistake::NoDoneMarker { emails }
        }
    });
    let stale_mistake = judge_copies(&stale, |emails| Ex2Mistake::EndWithoutToken { emails });
    // A failure that an earlier check already explains says so.
    let first_failed = [(CRASH, &crash), (SLOW, &slow_mistake), (LATE, &late)]
        .into_iter()
        .find(|(_, m)| m.is_some())
        .map(|(name, _)| name);
    let explained = |m: Option<Ex2Mistake>, own: &'static str| match (m, first_failed) {
        (Some(_), Some(first)) if first != own => Some(Ex2Mistake::SameAs(first)),
        (m, _) => m,
    };
    let late = explained(late, LATE);
    let slow_mistake = explained(slow_mistake, SLOW);
    let stale_mistake = explained(stale_mistake, STALE);

    let lost: u64 = crashes.jobs.iter().filter(|j| j.effects == 0).count() as u64;
    let mut checks = vec![
        Check::judged(
            CRASH,
            format!(
                "{} jobs whose worker crashed after the claim, before the effect ({}): {} with one effect, {} lost",
                crashes.jobs.len(),
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
        ),
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
        ),
        Check {
            diagnosis: late.as_ref().map(|m| m.diagnosis()),
            ..late_check
        },
        Check::judged(
            STALE,
            format!(
                "a holder paused past its lease whose effect then failed, a copy that took over, a third copy: {}, {}",
                plural(stale.job.effects, "effect"),
                plural(stale.job.duplicate_skips, "duplicate skip")
            ),
            stale_mistake.as_ref().map(|m| m as &dyn Mistake),
            json!({ "jobId": stale.job.job_id, "effects": stale.job.effects, "duplicateSkips": stale.job.duplicate_skips }),
        ),
    ];
    for check in ex1_checks.into_iter().filter(|c| c.name != LATE) {
        checks.push(match first_failed {
            Some(first) => check.same_as(first),
            None => check,
        });
    }
    Ok((checks, also))
}

/// The late check's second effect, from its numbers (2 when the copy got through).
fn late_job_effects(check: &Check) -> u64 {
    check.data["effects"].as_u64().unwrap_or(2)
}

fn judge_crashes(crashes: &Crashes) -> Option<Ex2Mistake> {
    if crashes.crashes == 0 {
        return Some(Ex2Mistake::NoCrash);
    }
    if let Some(twice) = crashes.jobs.iter().find(|j| j.effects > 1) {
        return Some(Ex2Mistake::CrashedJobSentTwice {
            emails: twice.effects,
        });
    }
    let lost: Vec<&JobView> = crashes.jobs.iter().filter(|j| j.effects == 0).collect();
    let first = lost.first()?;
    let n = lost.len() as u64;
    // What the claim the skip named says now: done (for a day), a lease that ran
    // out or still runs, or exercise 1's one-state claim.
    Some(match (&first.claim_value, first.claim_ttl_secs) {
        (Some(value), _) if value.to_ascii_lowercase().contains("done") => {
            Ex2Mistake::DoneBeforeEffect { lost: n }
        }
        (Some(value), _) if value.to_ascii_lowercase().starts_with("processing") => {
            Ex2Mistake::ProcessingTakenForDone { lost: n }
        }
        (None, Some(-2)) => Ex2Mistake::ProcessingTakenForDone { lost: n },
        (Some(_), _) => Ex2Mistake::OneStateClaim { lost: n },
        _ => Ex2Mistake::CrashedJobLost { lost: n },
    })
}

fn judge_copies(copies: &Copies, two: impl Fn(u64) -> Ex2Mistake) -> Option<Ex2Mistake> {
    match copies.job.effects {
        1 => None,
        0 => Some(Ex2Mistake::Lost),
        n => Some(two(n)),
    }
}

/// Jobs whose worker crashes after the claim, before the effect; waits until
/// the run settles (the worker is restarted and the deliveries come back).
async fn crash_before_effect(
    api: &Api,
    exercise: Exercise,
    limit: Duration,
) -> anyhow::Result<Crashes> {
    let run_id = new_run_id("verify-crash");
    // One at a time: a crash takes down everything its worker has in flight.
    for n in 1..=CRASHED_JOBS {
        api.submit_to(
            exercise,
            &format!("{run_id}-job-{n}"),
            &run_id,
            json!({ payload::SIMULATE_CRASH: payload::BEFORE_EFFECT }),
        )
        .await?;
        let (run, settled) = wait_run(api, &run_id, u64::from(n), limit).await?;
        if !settled {
            anyhow::bail!(
                "the crashed job was not processed within {}s ({} of {n}): is a worker \
                 running, and is it restarted after a crash (./lab restarts it; compose's restart policy)? {}",
                limit.as_secs(),
                run.processed_deliveries,
                crate::STUCK_HINT
            );
        }
    }
    let mut jobs = Vec::new();
    for n in 1..=CRASHED_JOBS {
        jobs.push(api.job(&format!("{run_id}-job-{n}")).await?);
    }
    let events = api.events(&run_id).await?;
    Ok(Crashes {
        jobs,
        crashes: events.count(EventKind::Crashed),
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

/// A holder (A) that stalls a second past its lease and whose effect then
/// fails; a copy (B) sent once A's lease ran out, which takes over and stalls
/// for most of its own lease; a third copy (C) sent after A failed and released,
/// while B still holds its lease. With tokens, only B sends; without, A's
/// release removes B's lease and C sends too. Timeline for a lease L (ms):
/// A wakes at L+1200, B holds from L+300 to 2L+300 and is done at 2L-200, C
/// comes at L+1500: so L must be over 1700 ms (the default is 3000).
async fn stale_holder(
    api: &Api,
    exercise: Exercise,
    lease: Duration,
    limit: Duration,
) -> anyhow::Result<Copies> {
    let run_id = new_run_id("verify-stale");
    let job_id = format!("{run_id}-job-1");
    let lease_ms = lease.as_millis() as u64;
    let faults = json!({
        payload::STALL_MS: [lease_ms + 1000, lease_ms.saturating_sub(700)],
        payload::SIMULATE_EFFECT_FAILURE: payload::ONCE,
    });
    let copies = [
        (Duration::ZERO, faults.clone()),
        (lease + Duration::from_millis(300), faults.clone()),
        (lease + Duration::from_millis(1500), faults),
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
    let (run, settled) = wait_run(api, run_id, copies.len() as u64, limit).await?;
    if !settled {
        anyhow::bail!(
            "job {job_id} was not processed within {}s ({} of {} copies). {}",
            limit.as_secs(),
            run.processed_deliveries,
            copies.len(),
            crate::STUCK_HINT
        );
    }
    Ok(Copies {
        job: api.job(job_id).await?,
        events: api.events(run_id).await?,
    })
}
