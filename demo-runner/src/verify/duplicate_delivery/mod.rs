//! Exercise 1's checks (duplicate delivery, the `SET ... NX EX` claim).
//! Students need not edit this file.
//!
//! | check | what it sends | what it catches |
//! |---|---|---|
//! | `sequential-duplicates` | one job 3 times, each after the previous was processed | no guard, the effect before the claim, a key per delivery, a claim released after the effect, a claim kept in one process's memory |
//! | `concurrent-duplicates` | 8 jobs x 8 copies at once, up to 3 rounds | GET then SET (not atomic) |
//! | `late-duplicate` | one job, then a copy `--late-secs` later | a TTL of a few seconds |
//! | `skip-recorded` | (the sequential job's metadata) | a skip that is not recorded |
//! | `claim-expires` | (the claim key a skip named: `GET /jobs/{jobId}` reports its TTL) | a claim with no expiry (`SET NX` without `EX`), a claim not kept in Redis, a claim that lives under ten minutes (`PX` where `EX` was meant) |
//! | `effect-failure-redelivered` | one job whose first effect fails | a claim never released on failure |
//!
//! The diagnoses read the run's event log: which delivery applied an effect,
//! which skipped, on which worker. A delivery that both applied the effect and
//! recorded a skip ran the effect before its claim; duplicate effects spread
//! one per worker, with skips whose claim key does not exist in Redis, come
//! from a guard kept in one process's memory.

mod probes;

use std::collections::HashMap;

use lab_schema::summary::plural;
use lab_schema::{EventKind, Exercise, Idempotency, RunEvents};
use serde_json::json;

use probes::{Concurrent, Failure, Late, Sequential};
pub(crate) use probes::{Evidence, gather, late_start};

use super::{Check, Grader, Mistake, Options, Report};
use crate::client::Api;

pub(super) const SEQUENTIAL: &str = "sequential-duplicates";
pub(super) const CONCURRENT: &str = "concurrent-duplicates";
pub(crate) const LATE: &str = "late-duplicate";
pub(super) const RECORDED: &str = "skip-recorded";
pub(super) const EXPIRES: &str = "claim-expires";
pub(super) const FAILURE: &str = "effect-failure-redelivered";

/// The least a claim may live: shorter, a duplicate that comes after a long outage
/// or a client's late retry finds no claim. The handout asks for
/// `ctx.idempotency_ttl_secs` (a day); between this and a day is the debrief's TTL
/// question, not a FAIL.
const MIN_CLAIM_TTL_SECS: i64 = 600;

/// The claim's TTL is read a moment after the claim (right after a skip, a second or
/// two later): this much may have passed, so a claim of exactly [`MIN_CLAIM_TTL_SECS`]
/// still passes.
const READ_SLACK_SECS: i64 = 15;

/// The checks, in the order they are printed.
pub(super) const CHECKS: [&str; 6] = [SEQUENTIAL, CONCURRENT, LATE, RECORDED, EXPIRES, FAILURE];

/// This exercise's row in `verify`'s table ([`super::grader`]).
pub(crate) const GRADER: Grader = Grader {
    checks: &CHECKS,
    verify: |api, options| Box::pin(verify(api, options)),
};

/// Copies of the sequential job.
pub(super) const SEQUENTIAL_COPIES: u32 = 3;
/// Jobs and copies of each sent at once: 64 deliveries, four times as many as two
/// workers with the default concurrency (8) run at the same time. A race between
/// two commands (GET, then SET) is only a round trip wide: it shows in most
/// rounds, not in every one, so the check sends up to CONCURRENT_ROUNDS rounds.
pub(super) const CONCURRENT_JOBS: u32 = 8;
pub(super) const CONCURRENT_COPIES: u32 = 8;
pub(super) const CONCURRENT_ROUNDS: u32 = 3;

/// The mistakes this exercise's checks can name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ex1Mistake {
    /// A copy was not processed in time: what the check saw.
    Stuck(crate::verify::Stuck),
    AttemptsNotCounted {
        delivered: u64,
        counted: u64,
    },
    JobLost,
    JobsLost(u64),
    /// Deliveries of different jobs claimed one key.
    KeyNotPerJob {
        key: String,
        jobs: usize,
        lost: u64,
    },
    GuardMissing {
        emails: u64,
    },
    EffectBeforeClaim {
        emails: u64,
        skips: u64,
    },
    ClaimInMemory {
        emails: u64,
    },
    KeyPerDelivery {
        emails: u64,
    },
    ClaimReleasedAfterEffect {
        emails: u64,
    },
    NotAtomic {
        duplicates: u64,
    },
    TtlTooShort {
        late_secs: u64,
    },
    ClaimRanOut {
        emails: u64,
    },
    NoSkipToRecord,
    SkipNotRecorded,
    RecordsDisagree,
    ClaimNeverExpires {
        key: String,
    },
    /// The claim a skip named lives less than [`MIN_CLAIM_TTL_SECS`] (its TTL when read).
    ClaimLivesShort {
        key: String,
        ttl_secs: i64,
    },
    ClaimNotInRedis {
        key: String,
    },
    ClaimNotChecked,
    ClaimNotReleasedOnFailure,
    NoRedelivery {
        wait_secs: u64,
    },
    EffectMissingAfterFailure,
    ManyEmails(u64),
    NoOverlap,
    /// The check fails for the reason another check already names.
    SameAs(&'static str),
}

impl Mistake for Ex1Mistake {
    fn code(&self) -> &'static str {
        use Ex1Mistake::*;
        match self {
            AttemptsNotCounted { .. } => "attempts-not-counted",
            JobLost | JobsLost(_) => "effect-lost",
            KeyNotPerJob { .. } => "key-not-per-job",
            GuardMissing { .. } => "guard-missing",
            EffectBeforeClaim { .. } => "effect-before-claim",
            ClaimInMemory { .. } => "claim-in-process-memory",
            KeyPerDelivery { .. } => "key-per-delivery",
            ClaimReleasedAfterEffect { .. } => "claim-released-after-effect",
            NotAtomic { .. } => "check-then-set",
            TtlTooShort { .. } | ClaimRanOut { .. } | ClaimLivesShort { .. } => "ttl-too-short",
            NoSkipToRecord => "no-skip-to-record",
            SkipNotRecorded => "skip-not-recorded",
            RecordsDisagree => "records-disagree",
            ClaimNeverExpires { .. } => "claim-never-expires",
            ClaimNotInRedis { .. } => "claim-not-in-redis",
            ClaimNotChecked => "claim-not-checked",
            ClaimNotReleasedOnFailure => "claim-not-released-on-failure",
            NoRedelivery { .. } => "no-redelivery",
            EffectMissingAfterFailure => "effect-missing-after-failure",
            ManyEmails(_) => "duplicate-effect",
            NoOverlap => "inconclusive",
            Stuck(_) => "job-stuck",
            SameAs(_) => super::SAME_MISTAKE,
        }
    }

    fn message(&self) -> String {
        use Ex1Mistake::*;
        match self {
            Stuck(stuck) => format!(
                "the job had not ended after {} s: {}. Does process_job return on every path (Ok, or an error), and not wait for ever?",
                stuck.waited_secs, stuck.observed
            ),
            AttemptsNotCounted { delivered, counted } => format!(
                "{delivered} deliveries but {counted} attempts counted: every delivery must be counted, duplicates too; keep ctx.mark_processing(job) as the first step of process_job"
            ),
            JobLost => "no copy applied the effect: the job was lost".to_string(),
            JobsLost(n) => format!("{} got no effect at all", plural(*n, "job")),
            KeyNotPerJob { key, jobs, lost } => format!(
                "{} got no effect at all: {jobs} different jobs claimed the same key {key}, so the first job's claim made the others look like duplicates. The key must name the job (processed:<pipeline>:<jobId>): one claim per job",
                plural(*lost, "job")
            ),
            GuardMissing { emails } => format!(
                "{emails} emails for one job: the guard is missing (idempotency=not-implemented: worker/src/job.rs still has the TODO)"
            ),
            EffectBeforeClaim { emails, skips } => format!(
                "{emails} emails for one job although {} recorded: each of those deliveries sent the email and THEN found the claim taken. The effect runs before the claim; claim first, then run the effect",
                plural(*skips, "duplicate skip")
            ),
            ClaimInMemory { emails } => format!(
                "{emails} emails for one job, one per worker process: each worker skipped only the copies it had seen itself, and the claim key its skips name is not in Redis. The claim is kept in one process's memory; the two workers are separate processes, so claim in Redis with SET ... NX"
            ),
            KeyPerDelivery { emails } => format!(
                "{emails} emails for one job: every copy won its claim, even copies sent together, so the key differs per delivery (the delivery id?); build it from jobId: processed:<pipeline>:<jobId>"
            ),
            ClaimReleasedAfterEffect { emails } => format!(
                "{emails} emails for one job: copies that arrived while the first was running were skipped, but each later copy claimed again, and the claim key is gone from Redis. The claim is deleted after the effect; keep it (release it only when the effect FAILED)"
            ),
            NotAtomic { duplicates } => format!(
                "{duplicates} duplicate emails while copies overlapped: checking and claiming are two steps (GET, then SET?), so copies that arrive together all pass the check; claim with ONE atomic SET ... NX"
            ),
            TtlTooShort { late_secs } => format!(
                "the late copy applied the effect again: its claim had expired within {late_secs}s. The TTL must outlast the time in which duplicates arrive (retries, redeliveries): use ctx.idempotency_ttl_secs (a day by default)"
            ),
            ClaimRanOut { emails } => format!(
                "{emails} emails for one job: the first copies were skipped, a later one was not, and the claim was in Redis: it ran out between copies sent a fraction of a second apart. Use ctx.idempotency_ttl_secs (a day by default) as the TTL"
            ),
            NoSkipToRecord => {
                "no duplicate was skipped, so there is nothing to record yet".to_string()
            }
            SkipNotRecorded => "the duplicates were skipped but nothing recorded it: call ctx.record_duplicate_skip(job, &key) before returning".to_string(),
            RecordsDisagree => "the job's metadata does not match what happened to it".to_string(),
            ClaimNeverExpires { key } => format!(
                "the claim {key} never expires (TTL -1): SET ... NX without EX leaves one key per job in Redis forever; add EX with ctx.idempotency_ttl_secs"
            ),
            ClaimLivesShort { key, ttl_secs } => format!(
                "the claim {key} expires in {ttl_secs} s (read right after a skip): duplicates arrive for hours (a client retrying, a redelivery after a crash), and a copy after the claim expired sends the email again. Keep it for ctx.idempotency_ttl_secs (a day by default), with EX (seconds){}",
                if (80..=87).contains(ttl_secs) {
                    ". About 86 s is a day's 86 400 read as milliseconds: did you write PX (milliseconds) for EX (seconds)?"
                } else {
                    ""
                }
            ),
            ClaimNotInRedis { key } => format!(
                "the skip named the claim key {key}, which does not exist in Redis: claim in Redis (not in process memory), keep the claim after the effect, and pass the key you claimed to ctx.record_duplicate_skip"
            ),
            ClaimNotChecked => "no duplicate skip named its claim key, so the claim's expiry could not be checked: call ctx.record_duplicate_skip(job, &key) with the key you claimed".to_string(),
            ClaimNotReleasedOnFailure => "the effect failed, and its redelivery was skipped as a duplicate: the job never got its email. Release the claim (DEL the key) when the effect fails".to_string(),
            NoRedelivery { wait_secs } => format!(
                "no redelivery was acknowledged within {wait_secs}s: wait longer than the workers' claim idle time (CLAIM_IDLE_MS, 10 s by default) with --redelivery-wait"
            ),
            EffectMissingAfterFailure => "the job finished without its effect".to_string(),
            ManyEmails(n) => format!("{n} emails for one job"),
            NoOverlap => "inconclusive: no two copies of a job were in the workers at the same time (is WORKER_CONCURRENCY 1, or only one slot free?)".to_string(),
            SameAs(check) => format!("the same mistake as {check}"),
        }
    }
}

pub(super) async fn verify(api: &Api, options: &Options) -> anyhow::Result<Report> {
    let evidence = gather(api, options, Exercise::DuplicateDelivery, None).await?;
    Ok(Report {
        exercise: Exercise::DuplicateDelivery,
        checks: judge(&evidence),
        all_passed: "every duplicate was skipped and recorded, every job has exactly one effect",
    })
}

/// Turns the evidence into the six checks.
pub(super) fn judge(evidence: &Evidence) -> Vec<Check> {
    let (seq, conc, late, failure) = (
        &evidence.seq,
        &evidence.conc,
        &evidence.late,
        &evidence.failure,
    );
    let sequential = judge_sequential(seq, conc);
    let seq_failed = sequential.is_some();
    let concurrent = judge_concurrent(conc).map(|m| same_if(seq_failed, m));
    let claim_missing = claim_seen(seq, conc).is_some_and(|(_, ttl)| ttl == -2);
    // A late copy that gets through when copies one after another already do says nothing new.
    let late_mistake = judge_late(late, claim_missing).map(|m| {
        if seq_failed && m != Ex1Mistake::JobLost {
            Ex1Mistake::SameAs(SEQUENTIAL)
        } else {
            m
        }
    });
    let recorded = judge_recorded(seq).map(|m| match m {
        // Copies already get through one after another: that is why.
        Ex1Mistake::NoSkipToRecord if seq_failed => Ex1Mistake::SameAs(SEQUENTIAL),
        other => other,
    });
    let expires = judge_expires(seq, conc, &sequential);
    let failed = judge_failure(failure);

    let job = &seq.job;
    let idempotency = job.idempotency.clone().unwrap_or_else(|| "null".into());
    let copies = u64::from(SEQUENTIAL_COPIES);
    let skips = copies - 1;
    let claim = claim_seen(seq, conc);
    vec![
        Check::judged(
            SEQUENTIAL,
            format!(
                "{copies} copies one after another: {} attempts, {}, {} (idempotency={idempotency})",
                job.process_attempts,
                plural(job.effects, "effect"),
                plural(job.duplicate_skips, "duplicate skip")
            ),
            sequential.as_ref().map(|m| m as &dyn Mistake),
            json!({
                "jobId": job.job_id, "copies": copies, "attempts": job.process_attempts,
                "effects": job.effects, "duplicateSkips": job.duplicate_skips,
                "idempotency": job.idempotency, "effectsByWorker": effects_by_worker(&seq.events, &job.job_id),
            }),
        ),
        Check::judged(
            CONCURRENT,
            format!(
                "round {} of {CONCURRENT_ROUNDS}: {} deliveries ({CONCURRENT_JOBS} jobs x {CONCURRENT_COPIES} copies, up to {} copies of a job in flight together): {}, {}",
                conc.round,
                CONCURRENT_JOBS * CONCURRENT_COPIES,
                conc.overlap,
                plural(conc.run.observed_effects_total, "effect"),
                plural(conc.run.duplicate_skips, "duplicate skip"),
            ),
            concurrent.as_ref().map(|m| m as &dyn Mistake),
            json!({
                "runId": conc.run_id, "deliveries": CONCURRENT_JOBS * CONCURRENT_COPIES,
                "jobs": CONCURRENT_JOBS, "effects": conc.run.observed_effects_total,
                "duplicateEffects": conc.run.duplicate_effects, "duplicateSkips": conc.run.duplicate_skips,
                "lostEffects": conc.run.lost_effects, "inFlightTogether": conc.overlap,
            }),
        ),
        Check::judged(
            LATE,
            format!(
                "a copy sent {}s after the first was processed: {} attempts, {}, {}",
                late.late_secs,
                late.job.process_attempts,
                plural(late.job.effects, "effect"),
                plural(late.job.duplicate_skips, "duplicate skip")
            ),
            late_mistake.as_ref().map(|m| m as &dyn Mistake),
            json!({
                "jobId": late.job.job_id, "lateSecs": late.late_secs, "attempts": late.job.process_attempts,
                "effects": late.job.effects, "duplicateSkips": late.job.duplicate_skips,
            }),
        ),
        Check::judged(
            RECORDED,
            format!(
                "job idempotency={idempotency}, duplicateSkips={}, run duplicate_skips={} (expected duplicate-skipped, {skips}, {skips})",
                job.duplicate_skips, seq.run.duplicate_skips
            ),
            recorded.as_ref().map(|m| m as &dyn Mistake),
            json!({
                "jobId": job.job_id, "idempotency": job.idempotency,
                "duplicateSkips": job.duplicate_skips, "runDuplicateSkips": seq.run.duplicate_skips,
                "expectedSkips": skips,
            }),
        ),
        Check::judged(
            EXPIRES,
            match &claim {
                Some((key, ttl)) => format!("the claim {key} named by a skip: {}", ttl_words(*ttl)),
                None => "no duplicate skip named a claim key".to_string(),
            },
            expires.as_ref().map(|m| m as &dyn Mistake),
            json!({
                "claimKey": claim.as_ref().map(|c| c.0.clone()),
                "ttlSecs": claim.as_ref().map(|c| c.1),
            }),
        ),
        Check::judged(
            FAILURE,
            format!(
                "the first effect failed ({}), {} attempts, {}, {}{}",
                plural(failure.failures as u64, "failure"),
                failure.job.process_attempts,
                plural(failure.job.effects, "effect"),
                plural(failure.job.duplicate_skips, "duplicate skip"),
                if failure.acknowledged {
                    ""
                } else {
                    ", not yet acknowledged"
                }
            ),
            failed.as_ref().map(|m| m as &dyn Mistake),
            json!({
                "jobId": failure.job.job_id, "failures": failure.failures,
                "attempts": failure.job.process_attempts, "effects": failure.job.effects,
                "duplicateSkips": failure.job.duplicate_skips, "acknowledged": failure.acknowledged,
            }),
        ),
    ]
}

/// When the sequential copies already fail, another check that fails for the
/// same cause says so instead of guessing a cause of its own.
fn same_if(sequential_failed: bool, mistake: Ex1Mistake) -> Ex1Mistake {
    match mistake {
        Ex1Mistake::NotAtomic { .. }
        | Ex1Mistake::TtlTooShort { .. }
        | Ex1Mistake::ClaimInMemory { .. }
        | Ex1Mistake::EffectBeforeClaim { .. }
        | Ex1Mistake::GuardMissing { .. }
            if sequential_failed =>
        {
            Ex1Mistake::SameAs(SEQUENTIAL)
        }
        other => other,
    }
}

/// `expires in about 24 h`, `never expires (TTL -1)`, `does not exist in Redis`
/// (rounded, so the line reads the same a second later).
fn ttl_words(ttl: i64) -> String {
    match ttl {
        -1 => "exists, never expires (TTL -1)".to_string(),
        -2 => "does not exist in Redis".to_string(),
        secs if secs >= 3600 => format!("exists, expires in about {} h", (secs + 1800) / 3600),
        secs if secs >= 60 => format!("exists, expires in about {} min", (secs + 30) / 60),
        secs => format!("exists, expires in {secs} s"),
    }
}

/// The claim key a skip named, and its TTL when it was read: the sequential
/// job's right after its first skip, else one from the concurrent run.
fn claim_seen(seq: &Sequential, conc: &Concurrent) -> Option<(String, i64)> {
    seq.first_skip
        .as_ref()
        .and_then(|j| Some((j.claim_key.clone()?, j.claim_ttl_secs?)))
        .or_else(|| conc.skipped_claims.first().cloned())
}

/// How many effects each worker applied to `job_id`.
fn effects_by_worker(events: &RunEvents, job_id: &str) -> HashMap<String, u64> {
    let mut by_worker = HashMap::new();
    for event in &events.events {
        if event.job_id == job_id && event.event == EventKind::Effect {
            *by_worker.entry(event.consumer.clone()).or_insert(0) += 1;
        }
    }
    by_worker
}

/// Some delivery both applied the effect and recorded a skip: it ran the effect
/// before it tried its claim.
fn effect_then_skip_in_one_delivery(events: &RunEvents) -> bool {
    let effects: Vec<&str> = events
        .events
        .iter()
        .filter(|e| e.event == EventKind::Effect)
        .map(|e| e.delivery_id.as_str())
        .collect();
    events
        .events
        .iter()
        .any(|e| e.event == EventKind::DuplicateSkip && effects.contains(&e.delivery_id.as_str()))
}

/// Every job's effects came from different workers, one each: what a guard in
/// one process's memory gives.
fn at_most_one_effect_per_worker(events: &RunEvents) -> bool {
    let mut per: HashMap<(&str, &str), u64> = HashMap::new();
    for event in &events.events {
        if event.event == EventKind::Effect {
            *per.entry((&event.job_id, &event.consumer)).or_insert(0) += 1;
        }
    }
    per.values().all(|n| *n <= 1)
}

fn judge_sequential(seq: &Sequential, conc: &Concurrent) -> Option<Ex1Mistake> {
    let job = &seq.job;
    let copies = u64::from(SEQUENTIAL_COPIES);
    let emails = job.effects;
    if let Some(stuck) = &seq.stuck
        && emails <= 1
    {
        return Some(Ex1Mistake::Stuck(stuck.clone()));
    }
    if job.process_attempts != copies {
        return Some(Ex1Mistake::AttemptsNotCounted {
            delivered: copies,
            counted: job.process_attempts,
        });
    }
    match emails {
        1 => return None,
        0 => return Some(Ex1Mistake::JobLost),
        _ => {}
    }
    if job.idempotency() == Some(Idempotency::NotImplemented) {
        return Some(Ex1Mistake::GuardMissing { emails });
    }
    if effect_then_skip_in_one_delivery(&seq.events) {
        return Some(Ex1Mistake::EffectBeforeClaim {
            emails,
            skips: job.duplicate_skips,
        });
    }
    if job.duplicate_skips > 0 {
        // Some copies were skipped, others were not, one after another: the
        // claim did not hold from one worker to the other, or it ran out.
        let first_ttl = seq.first_skip.as_ref().and_then(|j| j.claim_ttl_secs);
        return Some(
            if first_ttl == Some(-2) || at_most_one_effect_per_worker(&seq.events) {
                Ex1Mistake::ClaimInMemory { emails }
            } else {
                Ex1Mistake::ClaimRanOut { emails }
            },
        );
    }
    // Every copy won its claim. Copies in flight together tell the two causes
    // apart: a key per delivery never skips, a claim deleted after the effect
    // skips the copies that arrived while it was held.
    if conc.run.duplicate_skips > 0 {
        Some(Ex1Mistake::ClaimReleasedAfterEffect { emails })
    } else {
        Some(Ex1Mistake::KeyPerDelivery { emails })
    }
}

/// A claim key that deliveries of more than one job wrote, and how many jobs
/// wrote it (from the jobs' traces).
fn shared_claim_key(traces: &[(String, Vec<lab_schema::trace::Trace>)]) -> Option<(String, usize)> {
    let mut jobs_of: std::collections::BTreeMap<String, std::collections::BTreeSet<&str>> =
        Default::default();
    for (job_id, traces) in traces {
        for claim in traces.iter().filter_map(crate::verify::traces::claim_write) {
            jobs_of.entry(claim.key).or_default().insert(job_id);
        }
    }
    jobs_of
        .into_iter()
        .filter(|(_, jobs)| jobs.len() > 1)
        .max_by_key(|(_, jobs)| jobs.len())
        .map(|(key, jobs)| (key, jobs.len()))
}

fn judge_concurrent(conc: &Concurrent) -> Option<Ex1Mistake> {
    let jobs = u64::from(CONCURRENT_JOBS);
    let run = &conc.run;
    if let Some(stuck) = &conc.stuck
        && run.observed_effects_total <= jobs
    {
        return Some(Ex1Mistake::Stuck(stuck.clone()));
    }
    if run.observed_effects_total > jobs {
        if conc.first_job.idempotency() == Some(Idempotency::NotImplemented) {
            return Some(Ex1Mistake::GuardMissing {
                emails: run.observed_effects_total,
            });
        }
        if effect_then_skip_in_one_delivery(&conc.events) {
            return Some(Ex1Mistake::EffectBeforeClaim {
                emails: run.observed_effects_total,
                skips: run.duplicate_skips,
            });
        }
        let claims_missing = conc.skipped_claims.iter().any(|(_, ttl)| *ttl == -2);
        if claims_missing && at_most_one_effect_per_worker(&conc.events) {
            return Some(Ex1Mistake::ClaimInMemory {
                emails: run.observed_effects_total,
            });
        }
        return Some(Ex1Mistake::NotAtomic {
            duplicates: run.duplicate_effects,
        });
    }
    if run.lost_effects > 0 {
        return Some(match shared_claim_key(&conc.traces) {
            Some((key, jobs)) => Ex1Mistake::KeyNotPerJob {
                key,
                jobs,
                lost: run.lost_effects,
            },
            None => Ex1Mistake::JobsLost(run.lost_effects),
        });
    }
    if conc.overlap < 2 {
        return Some(Ex1Mistake::NoOverlap);
    }
    None
}

/// `claim_missing`: the claim key a skip named is not in Redis, so a late copy
/// that gets through says nothing about the TTL.
fn judge_late(late: &Late, claim_missing: bool) -> Option<Ex1Mistake> {
    let job = &late.job;
    if let Some(stuck) = &late.stuck
        && job.effects <= 1
    {
        return Some(Ex1Mistake::Stuck(stuck.clone()));
    }
    match job.effects {
        1 => None,
        0 => Some(Ex1Mistake::JobLost),
        n if job.idempotency() == Some(Idempotency::NotImplemented) => {
            Some(Ex1Mistake::GuardMissing { emails: n })
        }
        _ if claim_missing => Some(Ex1Mistake::SameAs(EXPIRES)),
        _ if job.duplicate_skips == 0 => Some(Ex1Mistake::TtlTooShort {
            late_secs: late.late_secs,
        }),
        n => Some(Ex1Mistake::EffectBeforeClaim {
            emails: n,
            skips: job.duplicate_skips,
        }),
    }
}

fn judge_recorded(seq: &Sequential) -> Option<Ex1Mistake> {
    let job = &seq.job;
    let skips = u64::from(SEQUENTIAL_COPIES) - 1;
    let recorded_ok = job.idempotency() == Some(Idempotency::DuplicateSkipped)
        && job.duplicate_skips == skips
        && seq.run.duplicate_skips == skips;
    if recorded_ok {
        None
    } else if job.effects == 1 && job.duplicate_skips == 0 {
        Some(Ex1Mistake::SkipNotRecorded)
    } else if job.effects > 1 {
        Some(Ex1Mistake::NoSkipToRecord)
    } else {
        Some(Ex1Mistake::RecordsDisagree)
    }
}

fn judge_expires(
    seq: &Sequential,
    conc: &Concurrent,
    sequential: &Option<Ex1Mistake>,
) -> Option<Ex1Mistake> {
    let Some((key, ttl)) = claim_seen(seq, conc) else {
        // No skip named a key: when copies already get through, that is why.
        return Some(if sequential.is_some() {
            Ex1Mistake::SameAs(SEQUENTIAL)
        } else {
            Ex1Mistake::ClaimNotChecked
        });
    };
    match ttl {
        -1 => Some(Ex1Mistake::ClaimNeverExpires { key }),
        ttl_secs if (0..MIN_CLAIM_TTL_SECS - READ_SLACK_SECS).contains(&ttl_secs) => {
            Some(Ex1Mistake::ClaimLivesShort { key, ttl_secs })
        }
        -2 => Some(match sequential {
            Some(
                Ex1Mistake::ClaimInMemory { .. } | Ex1Mistake::ClaimReleasedAfterEffect { .. },
            ) => Ex1Mistake::SameAs(SEQUENTIAL),
            _ => Ex1Mistake::ClaimNotInRedis { key },
        }),
        _ => None,
    }
}

fn judge_failure(failure: &Failure) -> Option<Ex1Mistake> {
    let job = &failure.job;
    if !failure.acknowledged {
        Some(Ex1Mistake::NoRedelivery {
            wait_secs: failure.wait_secs,
        })
    } else if job.effects == 1 {
        None
    } else if job.effects == 0 && job.duplicate_skips > 0 {
        Some(Ex1Mistake::ClaimNotReleasedOnFailure)
    } else if job.effects == 0 {
        Some(Ex1Mistake::EffectMissingAfterFailure)
    } else {
        Some(Ex1Mistake::ManyEmails(job.effects))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::traces::tests::trace;
    use lab_schema::{JobView, RunSummary};

    /// A job's record: `effects` emails, `skips` recorded skips, the claim a
    /// skip named with its TTL now.
    fn job(effects: u64, skips: u64, idempotency: &str, claim_ttl: Option<i64>) -> JobView {
        let mut view = serde_json::json!({
            "jobId": "j", "runId": "r", "status": "completed", "submissions": 3,
            "processAttempts": 3, "effects": effects, "duplicateSkips": skips,
            "deliveriesDone": 3, "deadLettered": 0, "idempotency": idempotency,
        });
        if let Some(ttl) = claim_ttl {
            view["claimKey"] = serde_json::json!("processed:email:j");
            view["claimTtlSecs"] = serde_json::json!(ttl);
        }
        serde_json::from_value(view).unwrap()
    }

    fn run(skips: u64) -> RunSummary {
        RunSummary {
            duplicate_skips: skips,
            ..RunSummary::default()
        }
    }

    fn no_events() -> RunEvents {
        serde_json::from_value(serde_json::json!({ "runId": "r", "events": [] })).unwrap()
    }

    fn sequential(job: JobView, run_skips: u64) -> Sequential {
        Sequential {
            first_skip: Some(job.clone()),
            job,
            run: run(run_skips),
            events: no_events(),
            stuck: None,
        }
    }

    #[test]
    fn a_late_copy_that_got_through_is_named_by_what_the_claim_showed() {
        let late = |job: JobView| Late {
            job,
            traces: Vec::new(),
            late_secs: 5,
            stuck: None,
        };
        assert_eq!(
            judge_late(&late(job(1, 1, "duplicate-skipped", None)), false),
            None
        );
        // No skip at all, the claim was in Redis for the first copies: it ran out.
        assert_eq!(
            judge_late(&late(job(2, 0, "claimed", None)), false),
            Some(Ex1Mistake::TtlTooShort { late_secs: 5 })
        );
        // The claim a skip named is gone from Redis: the expiry check says why.
        assert_eq!(
            judge_late(&late(job(2, 0, "claimed", None)), true),
            Some(Ex1Mistake::SameAs(EXPIRES))
        );
        // Skipped, and sent anyway: the effect came before the claim.
        assert!(matches!(
            judge_late(&late(job(2, 1, "duplicate-skipped", None)), false),
            Some(Ex1Mistake::EffectBeforeClaim {
                emails: 2,
                skips: 1
            })
        ));
        assert_eq!(
            judge_late(&late(job(0, 1, "duplicate-skipped", None)), false),
            Some(Ex1Mistake::JobLost)
        );
    }

    #[test]
    fn a_failed_effect_is_judged_by_what_its_redelivery_did() {
        let failure = |job: JobView, acknowledged: bool| Failure {
            job,
            failures: 1,
            acknowledged,
            wait_secs: 30,
        };
        assert_eq!(
            judge_failure(&failure(job(1, 0, "claimed", None), true)),
            None
        );
        // The redelivery found the claim and skipped: it was never released.
        assert_eq!(
            judge_failure(&failure(job(0, 1, "duplicate-skipped", None), true)),
            Some(Ex1Mistake::ClaimNotReleasedOnFailure)
        );
        assert_eq!(
            judge_failure(&failure(job(0, 0, "claimed", None), true)),
            Some(Ex1Mistake::EffectMissingAfterFailure)
        );
        assert_eq!(
            judge_failure(&failure(job(0, 0, "claimed", None), false)),
            Some(Ex1Mistake::NoRedelivery { wait_secs: 30 })
        );
        assert_eq!(
            judge_failure(&failure(job(2, 0, "claimed", None), true)),
            Some(Ex1Mistake::ManyEmails(2))
        );
    }

    #[test]
    fn a_skip_counts_as_recorded_only_when_the_job_and_the_run_both_say_so() {
        assert_eq!(
            judge_recorded(&sequential(job(1, 2, "duplicate-skipped", Some(86_399)), 2)),
            None
        );
        // One email, no skip written: the guard skipped without saying so.
        assert_eq!(
            judge_recorded(&sequential(job(1, 0, "claimed", None), 0)),
            Some(Ex1Mistake::SkipNotRecorded)
        );
        assert_eq!(
            judge_recorded(&sequential(job(3, 0, "claimed", None), 0)),
            Some(Ex1Mistake::NoSkipToRecord)
        );
        // The job says two skips, the run's totals another number.
        assert_eq!(
            judge_recorded(&sequential(job(1, 2, "duplicate-skipped", Some(86_399)), 1)),
            Some(Ex1Mistake::RecordsDisagree)
        );
    }

    #[test]
    fn the_claims_expiry_is_read_from_the_key_a_skip_named() {
        let conc = |skipped: Vec<(String, i64)>| Concurrent {
            round: 1,
            run_id: "r".into(),
            run: run(0),
            events: no_events(),
            overlap: 8,
            first_job: job(1, 7, "duplicate-skipped", None),
            skipped_claims: skipped,
            stuck: None,
            traces: Vec::new(),
        };
        let seq = |ttl: i64| sequential(job(1, 2, "duplicate-skipped", Some(ttl)), 2);
        assert_eq!(judge_expires(&seq(86_399), &conc(Vec::new()), &None), None);
        assert!(matches!(
            judge_expires(&seq(-1), &conc(Vec::new()), &None),
            Some(Ex1Mistake::ClaimNeverExpires { .. })
        ));
        assert!(matches!(
            judge_expires(&seq(-2), &conc(Vec::new()), &None),
            Some(Ex1Mistake::ClaimNotInRedis { .. })
        ));
        // A claim of exactly ten minutes, read a few seconds later, passes.
        assert_eq!(judge_expires(&seq(595), &conc(Vec::new()), &None), None);
        // One that lives less: said with its TTL, and, at about 86 s, a day's seconds
        // taken for milliseconds (PX where EX was meant) named as the likely cause.
        for (ttl, px) in [(86, true), (2, false), (584, false)] {
            let mistake = judge_expires(&seq(ttl), &conc(Vec::new()), &None);
            assert_eq!(
                mistake,
                Some(Ex1Mistake::ClaimLivesShort {
                    key: "processed:email:j".into(),
                    ttl_secs: ttl
                })
            );
            let mistake = mistake.unwrap();
            let said = mistake.message();
            assert!(said.contains(&format!("expires in {ttl} s")), "{said}");
            assert_eq!(said.contains("did you write PX"), px, "{said}");
            assert_eq!(mistake.code(), "ttl-too-short");
        }
        // No skip named a key while copies got through: the sequential check's mistake.
        let unnamed = sequential(job(3, 0, "claimed", None), 0);
        let mistake = Some(Ex1Mistake::KeyPerDelivery { emails: 3 });
        assert_eq!(
            judge_expires(&unnamed, &conc(Vec::new()), &mistake),
            Some(Ex1Mistake::SameAs(SEQUENTIAL))
        );
    }

    #[test]
    fn jobs_that_claimed_one_key_are_found_by_their_traces() {
        let job = |id: &str, key: &str| {
            (
                id.to_string(),
                vec![trace(
                    "w1",
                    "1",
                    1,
                    &[&format!("> SET {key} 1 NX EX 86400")],
                )],
            )
        };
        let shared = [
            job("r-job-1", "processed:email:r"),
            job("r-job-2", "processed:email:r"),
            job("r-job-3", "processed:email:r"),
        ];
        assert_eq!(
            shared_claim_key(&shared),
            Some(("processed:email:r".to_string(), 3))
        );
        let own = [
            job("r-job-1", "processed:email:r-job-1"),
            job("r-job-2", "processed:email:r-job-2"),
        ];
        assert_eq!(shared_claim_key(&own), None);
    }
}
