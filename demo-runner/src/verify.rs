//! `verify`: runs a battery of checks against the running stack and prints
//! PASS/FAIL per check with the numbers behind it. Students need not edit this file.
//!
//! Each check targets one way a guard can be wrong (the instructor guide's
//! mistakes table):
//!
//! | check | what it sends | what catches |
//! |---|---|---|
//! | `sequential-duplicates` | one job 3 times, each after the previous was processed | no guard, the effect before the claim, a key per delivery |
//! | `concurrent-duplicates` | 2 jobs x 8 copies at once | GET then SET (not atomic) |
//! | `late-duplicate` | one job, then a copy `--late-secs` later | a TTL of a few seconds |
//! | `skip-recorded` | (the sequential job's metadata) | a skip that is not recorded |
//! | `effect-failure-redelivered` | one job whose first effect fails | a claim never released on failure |

use std::time::{Duration, Instant};

use lab_schema::{JobView, RunEvents, payload};
use serde_json::{Value, json};

use crate::client::Api;
use crate::report::plural;
use crate::scenarios::{is_drained, new_run_id};

/// How often the checks poll the API while waiting.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Copies of the sequential job.
const SEQUENTIAL_COPIES: u32 = 3;
/// Jobs and copies of each sent at once: 64 deliveries, four times as many as two
/// workers with the default concurrency (8) run at the same time. A race between
/// two commands (GET, then SET) is only a round trip wide: it shows in most
/// rounds, not in every one, so the check sends up to CONCURRENT_ROUNDS rounds.
const CONCURRENT_JOBS: u32 = 8;
const CONCURRENT_COPIES: u32 = 8;
const CONCURRENT_ROUNDS: u32 = 3;

/// What `verify` can be told.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds between the first delivery and the late copy.
    pub late_secs: u64,
    /// Seconds to wait for the redelivery of the failed effect.
    pub redelivery_wait_secs: u64,
    /// Seconds to wait for any other run to be processed.
    pub timeout_secs: u64,
}

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    /// The numbers behind the outcome, in one line.
    pub numbers: String,
    /// On failure: what the numbers mean and what to change.
    pub meaning: Option<String>,
    /// The same numbers, for `--json`.
    pub data: Value,
}

/// All checks, in order.
#[derive(Debug, Clone)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    pub fn verdict(&self) -> String {
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name)
            .collect();
        let total = self.checks.len();
        if failed.is_empty() {
            format!(
                "verdict: PASS, {total} of {total} checks passed: every duplicate was skipped and recorded, every job has exactly one effect"
            )
        } else {
            format!(
                "verdict: FAIL, {} of {total} checks failed: {}",
                failed.len(),
                failed.join(", ")
            )
        }
    }

    /// One line per check (`PASS name — numbers` / `FAIL name — numbers => meaning`), then the verdict.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let status = if check.passed { "PASS" } else { "FAIL" };
            out.push_str(&format!("{status} {} — {}", check.name, check.numbers));
            if let Some(meaning) = &check.meaning {
                out.push_str(&format!(" => {meaning}"));
            }
            out.push('\n');
        }
        out.push_str(&self.verdict());
        out.push('\n');
        out
    }

    pub fn to_json(&self) -> String {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "passed": c.passed,
                    "numbers": c.numbers,
                    "meaning": c.meaning,
                    "data": c.data,
                })
            })
            .collect();
        json!({
            "passed": self.passed(),
            "checks_passed": self.checks.iter().filter(|c| c.passed).count(),
            "checks_failed": self.checks.iter().filter(|c| !c.passed).count(),
            "verdict": self.verdict(),
            "checks": checks,
        })
        .to_string()
    }
}

/// Runs every check. The late and the failure checks mostly wait, so they run
/// alongside the other three. Errors only when the checks could not run.
pub async fn verify(api: &Api, options: &Options) -> anyhow::Result<Report> {
    let timeout = Duration::from_secs(options.timeout_secs);
    let waiting = async {
        tokio::try_join!(
            late_duplicate(api, options.late_secs, timeout),
            effect_failure(api, options.redelivery_wait_secs, timeout),
        )
    };
    let quick = async {
        let (sequential, recorded) = sequential_duplicates(api, timeout).await?;
        let concurrent = concurrent_duplicates(api, timeout).await?;
        anyhow::Ok((sequential, concurrent, recorded))
    };
    let ((mut late, failure), (sequential, mut concurrent, recorded)) =
        tokio::try_join!(waiting, quick)?;
    // When copies sent one after another already get through, the other checks
    // fail for that same reason, not for theirs: say so instead of guessing.
    if !sequential.passed {
        for check in [&mut concurrent, &mut late] {
            if let Some(meaning) = &mut check.meaning
                && (meaning.contains("GET, then SET") || meaning.contains("claim had expired"))
            {
                *meaning = "the same mistake as sequential-duplicates".to_string();
            }
        }
    }
    Ok(Report {
        checks: vec![sequential, concurrent, late, recorded, failure],
    })
}

/// Polls the job until `done` holds or `limit` passes; returns the last view.
async fn wait_job(
    api: &Api,
    job_id: &str,
    limit: Duration,
    done: impl Fn(&JobView) -> bool,
) -> anyhow::Result<(JobView, bool)> {
    let deadline = Instant::now() + limit;
    loop {
        let job = api.job(job_id).await?;
        if done(&job) {
            return Ok((job, true));
        }
        if Instant::now() >= deadline {
            return Ok((job, false));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Submits one copy and waits until `n` deliveries of the job are acknowledged.
async fn submit_and_wait(
    api: &Api,
    job_id: &str,
    run_id: &str,
    n: u64,
    limit: Duration,
) -> anyhow::Result<JobView> {
    api.submit(job_id, run_id).await?;
    let (job, done) = wait_job(api, job_id, limit, |j| j.deliveries_done >= n).await?;
    if !done {
        anyhow::bail!(
            "job {job_id} was not processed within {}s. {}",
            limit.as_secs(),
            crate::STUCK_HINT
        );
    }
    Ok(job)
}

fn count(events: &RunEvents, kind: &str) -> usize {
    events.events.iter().filter(|e| e.event == kind).count()
}

/// One jobId, 3 copies, each sent after the previous one was processed. Also
/// returns the `skip-recorded` check, which reads the same job's metadata.
async fn sequential_duplicates(api: &Api, limit: Duration) -> anyhow::Result<(Check, Check)> {
    let run_id = new_run_id("verify-seq");
    let job_id = format!("{run_id}-job-1");
    let mut job = None;
    for n in 1..=SEQUENTIAL_COPIES {
        job = Some(submit_and_wait(api, &job_id, &run_id, u64::from(n), limit).await?);
    }
    let job = job.expect("at least one copy");
    let run = api.run(&run_id).await?;
    let idempotency = job.idempotency.clone().unwrap_or_else(|| "null".into());
    let copies = u64::from(SEQUENTIAL_COPIES);
    let numbers = format!(
        "{copies} copies one after another: {} attempts, {}, {} (idempotency={idempotency})",
        job.process_attempts,
        plural(job.effects, "effect"),
        plural(job.duplicate_skips, "duplicate skip")
    );
    let meaning = match job.effects {
        _ if job.process_attempts != copies => Some(format!(
            "{copies} deliveries but {} attempts counted: every delivery must be counted, duplicates too; keep ctx.mark_processing(job) as the first step of process_job",
            job.process_attempts
        )),
        1 => None,
        0 => Some("no copy applied the effect: the job was lost".to_string()),
        n if idempotency == "not-implemented" => Some(format!(
            "{n} emails for one job: the guard is missing (idempotency=not-implemented: worker/src/job.rs still has the TODO)"
        )),
        n if job.duplicate_skips > 0 => Some(format!(
            "{n} emails for one job although {} copies were recorded as skipped: the effect runs BEFORE the claim; claim first, then run the effect",
            job.duplicate_skips
        )),
        n => Some(format!(
            "{n} emails for one job: every copy won its claim, so the key differs per delivery (the delivery id?); build it from jobId: processed:<pipeline>:<jobId>"
        )),
    };
    let sequential = Check {
        name: "sequential-duplicates",
        passed: meaning.is_none(),
        numbers,
        meaning,
        data: json!({
            "jobId": job.job_id, "copies": copies, "attempts": job.process_attempts,
            "effects": job.effects, "duplicateSkips": job.duplicate_skips, "idempotency": job.idempotency,
        }),
    };

    let skips = copies - 1;
    let recorded_ok = job.idempotency.as_deref() == Some("duplicate-skipped")
        && job.duplicate_skips == skips
        && run.duplicate_skips == skips;
    let numbers = format!(
        "job idempotency={idempotency}, duplicateSkips={}, run duplicate_skips={} (expected duplicate-skipped, {skips}, {skips})",
        job.duplicate_skips, run.duplicate_skips
    );
    let meaning = if recorded_ok {
        None
    } else if job.effects == 1 && job.duplicate_skips == 0 {
        Some(
            "the duplicates were skipped but nothing recorded it: call ctx.record_duplicate_skip(job, &key) before returning"
                .to_string(),
        )
    } else if job.effects > 1 {
        Some("no duplicate was skipped, so there is nothing to record yet".to_string())
    } else {
        Some("the job's metadata does not match what happened to it".to_string())
    };
    let recorded = Check {
        name: "skip-recorded",
        passed: recorded_ok,
        numbers,
        meaning,
        data: json!({
            "jobId": job.job_id, "idempotency": job.idempotency,
            "duplicateSkips": job.duplicate_skips, "runDuplicateSkips": run.duplicate_skips,
            "expectedSkips": skips,
        }),
    };
    Ok((sequential, recorded))
}

/// 2 jobs x 8 copies sent at once, so copies of a job are in the worker at the same moment.
/// Up to [`CONCURRENT_ROUNDS`] rounds of copies sent at once; the first round
/// that goes wrong is the answer, otherwise the last one.
async fn concurrent_duplicates(api: &Api, limit: Duration) -> anyhow::Result<Check> {
    let mut round = 1;
    loop {
        let mut check = concurrent_round(api, limit).await?;
        if !check.passed || round == CONCURRENT_ROUNDS {
            check.numbers = format!("round {round} of {CONCURRENT_ROUNDS}: {}", check.numbers);
            return Ok(check);
        }
        round += 1;
    }
}

async fn concurrent_round(api: &Api, limit: Duration) -> anyhow::Result<Check> {
    let run_id = new_run_id("verify-conc");
    let expected = u64::from(CONCURRENT_JOBS * CONCURRENT_COPIES);
    let mut sends = tokio::task::JoinSet::new();
    for _copy in 0..CONCURRENT_COPIES {
        for n in 1..=CONCURRENT_JOBS {
            let (api, job_id, run_id) = (api.clone(), format!("{run_id}-job-{n}"), run_id.clone());
            sends.spawn(async move { api.submit(&job_id, &run_id).await });
        }
    }
    while let Some(sent) = sends.join_next().await {
        sent??;
    }
    let deadline = Instant::now() + limit;
    let run = loop {
        let run = api.run(&run_id).await?;
        if is_drained(&run, expected) {
            break run;
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the concurrent run was not processed within {}s ({} of {expected}). {}",
                limit.as_secs(),
                run.processed_deliveries,
                crate::STUCK_HINT
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    // How many copies of a job had been delivered before its first effect was
    // written: that many were in flight together (the overlap the check needs).
    let events = api.events(&run_id).await?;
    let mut overlap = 0;
    for n in 1..=CONCURRENT_JOBS {
        let job_id = format!("{run_id}-job-{n}");
        let delivered_before_effect = events
            .events
            .iter()
            .filter(|e| e.job_id == job_id)
            .take_while(|e| e.event != "effect")
            .filter(|e| e.event == "delivery")
            .count();
        overlap = overlap.max(delivered_before_effect);
    }
    let jobs = u64::from(CONCURRENT_JOBS);
    let first_job = api.job(&format!("{run_id}-job-1")).await?;
    let numbers = format!(
        "{expected} deliveries ({jobs} jobs x {CONCURRENT_COPIES} copies, up to {overlap} copies of a job in flight together): {}, {}",
        plural(run.observed_effects_total, "effect"),
        plural(run.duplicate_skips, "duplicate skip"),
    );
    let meaning = if run.observed_effects_total > jobs
        && first_job.idempotency.as_deref() == Some("not-implemented")
    {
        Some(format!(
            "{} duplicate emails: the guard is missing (idempotency=not-implemented)",
            run.duplicate_effects
        ))
    } else if run.observed_effects_total > jobs {
        Some(format!(
            "{} duplicate emails while copies overlapped: checking and claiming are two steps (GET, then SET?), so copies that arrive together all pass the check; claim with ONE atomic SET ... NX",
            run.duplicate_effects
        ))
    } else if run.lost_effects > 0 {
        Some(format!("{} jobs got no effect at all", run.lost_effects))
    } else if overlap < 2 {
        Some(
            "inconclusive: no two copies of a job were in the workers at the same time (is WORKER_CONCURRENCY 1, or only one slot free?)"
                .to_string(),
        )
    } else {
        None
    };
    Ok(Check {
        name: "concurrent-duplicates",
        passed: meaning.is_none(),
        numbers,
        meaning,
        data: json!({
            "runId": run_id, "deliveries": expected, "jobs": jobs, "effects": run.observed_effects_total,
            "duplicateEffects": run.duplicate_effects, "duplicateSkips": run.duplicate_skips,
            "lostEffects": run.lost_effects, "inFlightTogether": overlap,
        }),
    })
}

/// One job, then a second copy `late_secs` after the first was processed.
async fn late_duplicate(api: &Api, late_secs: u64, limit: Duration) -> anyhow::Result<Check> {
    let run_id = new_run_id("verify-late");
    let job_id = format!("{run_id}-job-1");
    submit_and_wait(api, &job_id, &run_id, 1, limit).await?;
    tokio::time::sleep(Duration::from_secs(late_secs)).await;
    let job = submit_and_wait(api, &job_id, &run_id, 2, limit).await?;
    let numbers = format!(
        "a copy sent {late_secs}s after the first was processed: {} attempts, {}, {}",
        job.process_attempts,
        plural(job.effects, "effect"),
        plural(job.duplicate_skips, "duplicate skip")
    );
    let meaning = match job.effects {
        1 => None,
        0 => Some("no copy applied the effect: the job was lost".to_string()),
        _ if job.duplicate_skips == 0 && job.idempotency.as_deref() != Some("not-implemented") => {
            Some(format!(
                "the late copy applied the effect again: its claim had expired within {late_secs}s. The TTL must outlast the time in which duplicates arrive (retries, redeliveries): use ctx.idempotency_ttl_secs (a day by default)"
            ))
        }
        n if job.idempotency.as_deref() == Some("not-implemented") => Some(format!(
            "{n} emails for one job: the guard is missing (idempotency=not-implemented)"
        )),
        n => Some(format!(
            "{n} emails for one job with {} recorded: the effect runs BEFORE the claim",
            plural(job.duplicate_skips, "duplicate skip")
        )),
    };
    Ok(Check {
        name: "late-duplicate",
        passed: meaning.is_none(),
        numbers,
        meaning,
        data: json!({
            "jobId": job.job_id, "lateSecs": late_secs, "attempts": job.process_attempts,
            "effects": job.effects, "duplicateSkips": job.duplicate_skips,
        }),
    })
}

/// One job whose first effect attempt fails: its redelivery must apply the effect.
async fn effect_failure(api: &Api, wait_secs: u64, limit: Duration) -> anyhow::Result<Check> {
    let run_id = new_run_id("verify-fail");
    let job_id = format!("{run_id}-job-1");
    api.submit_with(
        &job_id,
        &run_id,
        json!({ payload::SIMULATE_EFFECT_FAILURE: payload::ONCE }),
    )
    .await?;
    // First the failing attempt (its effect-failed event), then the redelivery.
    let (_, started) = wait_job(api, &job_id, limit, |j| j.process_attempts >= 1).await?;
    if !started {
        anyhow::bail!(
            "job {job_id} was not picked up within {}s. {}",
            limit.as_secs(),
            crate::STUCK_HINT
        );
    }
    let (job, done) = wait_job(api, &job_id, Duration::from_secs(wait_secs), |j| {
        j.deliveries_done >= 1
    })
    .await?;
    let events = api.events(&run_id).await?;
    let failures = count(&events, "effect-failed");
    let numbers = format!(
        "the first effect failed ({}), {} attempts, {}, {}{}",
        plural(failures as u64, "failure"),
        job.process_attempts,
        plural(job.effects, "effect"),
        plural(job.duplicate_skips, "duplicate skip"),
        if done { "" } else { ", not yet acknowledged" }
    );
    let meaning = if !done {
        Some(format!(
            "no redelivery was acknowledged within {wait_secs}s: wait longer than the workers' claim idle time (CLAIM_IDLE_MS, 10 s by default) with --redelivery-wait"
        ))
    } else if job.effects == 1 {
        None
    } else if job.effects == 0 && job.duplicate_skips > 0 {
        Some(
            "the effect failed, and its redelivery was skipped as a duplicate: the job never got its email. Release the claim (DEL the key) when the effect fails"
                .to_string(),
        )
    } else if job.effects == 0 {
        Some("the job finished without its effect".to_string())
    } else {
        Some(format!("{} emails for one job", job.effects))
    };
    Ok(Check {
        name: "effect-failure-redelivered",
        passed: meaning.is_none(),
        numbers,
        meaning,
        data: json!({
            "jobId": job.job_id, "failures": failures, "attempts": job.process_attempts,
            "effects": job.effects, "duplicateSkips": job.duplicate_skips, "acknowledged": done,
        }),
    })
}
