//! Exercise 3's checks (the double charge: an idempotency key for the provider).
//! Students need not edit this file.
//!
//! | check | what it sends | what it catches |
//! |---|---|---|
//! | `crash-after-charge` | 2 jobs whose worker crashes right after the provider charged, before `done` | no key (the retry charges again), a key that changes per attempt (random, the time), a body that changes per attempt (422) |
//! | `dropped-answer` | a job whose first charge is made but its answer never arrives, and a copy the client resubmits | the same mistakes, and a key made from the delivery id (the copy is another delivery) |
//! | `lost-request` | a job whose first request is lost before the provider charged (the connection closes, no answer) | no answer taken for success: the job is marked done and never charged |
//! | `in-flight-conflict` | a charge the provider takes longer than the lease to answer and then fails, and a copy that asks meanwhile (409) | a 409 taken for success: the job is marked done and never charged |
//! | `two-pipelines` | the same jobId for two pipelines (`deposit` and `balance`) | a key without the pipeline: the second pipeline's charge is swallowed as a replay |
//! | exercise 2's checks | (as in exercise 2, with jobs of exercise 3) | what exercise 2 and 1 catch |
//!
//! Charges are counted where they happen: in the provider's request log
//! (`GET /v1/runs/{runId}/requests`), with the key and outcome of every request.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lab_schema::provider::{RequestOutcome, RunRequests, simulate};
use lab_schema::summary::plural;
use lab_schema::{EventKind, Exercise, JobStatus, JobView, payload};
use serde_json::{Value, json};

use super::{Check, Grader, Mistake, Options, Report, chain, crash_window, wait_run};
use crate::client::Api;
use crate::scenarios::new_run_id;
use crate::wait::poll_until;

const CRASH: &str = "crash-after-charge";
const DROPPED: &str = "dropped-answer";
const LOST: &str = "lost-request";
const IN_FLIGHT: &str = "in-flight-conflict";
const PIPELINES: &str = "two-pipelines";

/// The checks, in the order they are printed: this exercise's, then exercise 2's.
pub(super) const CHECKS: [&str; 14] = chain(
    [CRASH, DROPPED, LOST, IN_FLIGHT, PIPELINES],
    crash_window::CHECKS,
);

/// This exercise's row in `verify`'s table ([`super::grader`]).
pub(crate) const GRADER: Grader = Grader {
    checks: &CHECKS,
    verify: |api, options| Box::pin(verify(api, options)),
};

/// Jobs whose worker crashes after their charge.
const CRASHED_JOBS: u32 = 2;

/// The two pipelines of `two-pipelines`.
const FIRST_PIPELINE: &str = "deposit";
const SECOND_PIPELINE: &str = "balance";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ex3Mistake {
    NoKey {
        charges: u64,
    },
    KeyPerAttempt {
        charges: u64,
        keys: Vec<String>,
    },
    BodyChanges {
        key: String,
    },
    KeyWithoutPipeline {
        key: String,
        swallowed: String,
        charged: String,
    },
    InFlightTakenAsDone,
    NoAnswerTakenAsDone,
    ChargedTwice {
        charges: u64,
    },
    Lost,
    NotCompleted {
        status: String,
    },
    NoFault(&'static str),
    /// The job had not ended when the check gave up: what the provider answered.
    Stuck {
        waited_secs: u64,
        answers: String,
    },
}

impl Mistake for Ex3Mistake {
    fn code(&self) -> &'static str {
        use Ex3Mistake::*;
        match self {
            NoKey { .. } => "no-idempotency-key",
            KeyPerAttempt { .. } => "key-per-attempt",
            BodyChanges { .. } => "body-changes",
            KeyWithoutPipeline { .. } => "key-without-pipeline",
            InFlightTakenAsDone => "in-flight-taken-as-done",
            NoAnswerTakenAsDone => "no-answer-taken-as-done",
            ChargedTwice { .. } => "duplicate-charge",
            Lost => "charge-lost",
            NotCompleted { .. } => "job-not-completed",
            NoFault(_) => "inconclusive",
            Stuck { .. } => "job-stuck",
        }
    }

    fn message(&self) -> String {
        use Ex3Mistake::*;
        match self {
            NoKey { charges } => format!(
                "the card was charged {charges} times: the charge was sent without an idempotency key, so the provider could not tell the retry from a new charge. Set charge.idempotency_key to a key made of the pipeline and the job id"
            ),
            KeyPerAttempt { charges, keys } => format!(
                "the card was charged {charges} times, with {} different keys ({}): the key changes between deliveries of the job (a resubmitted copy has another job.delivery_id; a random value or the time changes on every attempt), so the retry is a new charge. Make it from ctx.pipeline and job.job_id only",
                keys.len(),
                keys.join(", ")
            ),
            BodyChanges { key } => format!(
                "the provider refused a retry with 422: key {key} came back with a different body. Something in charge.body changes between deliveries (an attempt number, a timestamp): leave the body as ctx.charge_for builds it, the same every time"
            ),
            KeyWithoutPipeline {
                key,
                swallowed,
                charged,
            } => format!(
                "pipeline {swallowed} was never charged: its charge used the same key as pipeline {charged} ({key}), so the provider answered it as a replay of the other's. Put ctx.pipeline in the key as well as the job id"
            ),
            InFlightTakenAsDone => "the job was never charged: a delivery got 409 (the first request with the key was still running at the provider), took it for success and marked the job done; the first request then failed. 409 means \"not yet\": release the lease and return Err(ctx.retry_later(...))".to_string(),
            NoAnswerTakenAsDone => "the job was never charged: its request got no answer at all (the connection closed before the provider charged), and the delivery took that for success and marked the job done. No answer means \"unknown\": release the lease and return the error, so the delivery comes back and asks again with the same key".to_string(),
            ChargedTwice { charges } => format!(
                "the card was charged {charges} times with the same key: did the key's request go to the provider twice without it (is the key set on every path)?"
            ),
            Lost => "the job ended with no charge at all".to_string(),
            NotCompleted { status } => format!(
                "the job was charged once but ended {status}, not completed: a delivery gave up on it (does the handler return an error after a successful or replayed charge?)"
            ),
            NoFault(what) => format!("inconclusive: {what}"),
            Stuck {
                waited_secs,
                answers,
            } => format!(
                "the job had not ended after {waited_secs} s; the provider answered its requests: {answers}. An answer that can never change (a 422, a 402) needs the job to stop (ctx.dead_letter), not to be asked again; a 409 or no answer needs the same key on the next try"
            ),
        }
    }
}

/// What the provider saw of one job (in one pipeline, or all).
#[derive(Debug, Clone, Default)]
struct Charges {
    charged: u64,
    dropped: u64,
    /// Requests lost before the charge (no answer, nothing charged).
    lost: u64,
    replays: u64,
    in_flight: u64,
    key_reused: u64,
    /// The distinct keys sent (`None`: a request without a key).
    keys: BTreeSet<Option<String>>,
    /// Every answer the provider gave, by status and outcome.
    answers: BTreeMap<(u16, &'static str), u64>,
}

impl Charges {
    fn of(requests: &RunRequests, job_id: &str, pipeline: Option<&str>) -> Charges {
        let mut tally = Charges::default();
        for r in requests
            .requests
            .iter()
            .filter(|r| r.job_id == job_id && pipeline.is_none_or(|p| r.pipeline == p))
        {
            tally.keys.insert(r.idempotency_key.clone());
            *tally
                .answers
                .entry((r.status, r.outcome.as_str()))
                .or_default() += 1;
            match r.outcome {
                RequestOutcome::Charged => tally.charged += 1,
                RequestOutcome::ChargedAnswerDropped => {
                    tally.charged += 1;
                    tally.dropped += 1;
                }
                RequestOutcome::Replayed => tally.replays += 1,
                RequestOutcome::InFlight => tally.in_flight += 1,
                RequestOutcome::KeyReused => tally.key_reused += 1,
                RequestOutcome::DroppedUncharged => tally.lost += 1,
                RequestOutcome::Declined
                | RequestOutcome::Unavailable
                | RequestOutcome::RateLimited
                | RequestOutcome::Banned => {}
            }
        }
        tally
    }

    fn data(&self) -> Value {
        json!({
            "charges": self.charged, "answersDropped": self.dropped, "lostRequests": self.lost, "replays": self.replays,
            "inFlight409": self.in_flight, "keyReused422": self.key_reused,
            "keys": self.keys.iter().map(|k| k.as_deref().unwrap_or("(none)")).collect::<Vec<_>>(),
        })
    }

    /// What the provider answered, e.g. `6 requests: 5 x 422 key-reused, 1 x 201 charged`.
    fn answers_text(&self) -> String {
        let total: u64 = self.answers.values().sum();
        if total == 0 {
            return "none: no request reached the provider".to_string();
        }
        let each: Vec<String> = self
            .answers
            .iter()
            .map(|((status, outcome), n)| format!("{n} x {status} {outcome}"))
            .collect();
        format!("{}: {}", plural(total, "request"), each.join(", "))
    }

    /// [`Charges::judge_once`], or, when the check gave up waiting for the
    /// job after `gave_up`, a double charge if there was one, else what the
    /// provider answered.
    fn judge_ended(&self, job: &JobView, gave_up: Option<Duration>) -> Option<Ex3Mistake> {
        match gave_up {
            None => self.judge_once(job),
            Some(waited) => self.judge_repeats().or(Some(Ex3Mistake::Stuck {
                waited_secs: waited.as_secs(),
                answers: self.answers_text(),
            })),
        }
    }

    fn first_key(&self) -> String {
        self.keys
            .iter()
            .flatten()
            .next()
            .cloned()
            .unwrap_or_else(|| "(none)".to_string())
    }

    /// More than one charge, or a 422: what the keys and answers say.
    fn judge_repeats(&self) -> Option<Ex3Mistake> {
        if self.key_reused > 0 {
            return Some(Ex3Mistake::BodyChanges {
                key: self.first_key(),
            });
        }
        if self.charged < 2 {
            return None;
        }
        let named: Vec<String> = self.keys.iter().flatten().cloned().collect();
        Some(if named.is_empty() {
            Ex3Mistake::NoKey {
                charges: self.charged,
            }
        } else if named.len() > 1 {
            Ex3Mistake::KeyPerAttempt {
                charges: self.charged,
                keys: named,
            }
        } else {
            Ex3Mistake::ChargedTwice {
                charges: self.charged,
            }
        })
    }

    /// [`Charges::judge_once`] for a check whose fault had to happen (`happened`
    /// times): when it never did and the job was charged at most once, the
    /// check cannot tell (`none` says what did not happen).
    fn judge_fault(
        &self,
        job: &JobView,
        happened: u64,
        none: &'static str,
        gave_up: Option<Duration>,
    ) -> Option<Ex3Mistake> {
        if gave_up.is_some() {
            self.judge_ended(job, gave_up)
        } else if happened == 0 && self.charged < 2 {
            Some(Ex3Mistake::NoFault(none))
        } else {
            self.judge_once(job)
        }
    }

    /// One charge, and the job completed.
    fn judge_once(&self, job: &JobView) -> Option<Ex3Mistake> {
        if let Some(mistake) = self.judge_repeats() {
            return Some(mistake);
        }
        if self.charged == 0 {
            return Some(if self.in_flight > 0 {
                Ex3Mistake::InFlightTakenAsDone
            } else if self.lost > 0 {
                Ex3Mistake::NoAnswerTakenAsDone
            } else {
                Ex3Mistake::Lost
            });
        }
        if job.status != JobStatus::Completed.as_str() {
            return Some(Ex3Mistake::NotCompleted {
                status: job.status.clone(),
            });
        }
        None
    }
}

pub(super) async fn verify(api: &Api, options: &Options) -> anyhow::Result<Report> {
    let exercise = Exercise::DoubleCharge;
    let timeout = Duration::from_secs(options.timeout_secs);
    let lease = Duration::from_millis(options.lease_ms);
    // The crashes alone (before exercise 2's): a crash kills every delivery its
    // worker has in flight, which would disturb the other checks' jobs.
    let crashing = crash_after_charge(api, timeout);
    let ours = async {
        tokio::try_join!(
            dropped_answer(api, timeout),
            one_job(
                api,
                "verify-lost",
                // The failed delivery comes back a second later, not after the
                // claim idle time (what it does then is the same).
                json!({ "provider": { simulate::DROP_BEFORE_CHARGE: true }, payload::REDELIVER_AFTER_MS: 1_000 }),
                timeout
            ),
            in_flight_conflict(api, lease, timeout),
            two_pipelines(api, timeout),
        )
    };
    let (ex2_checks, crashed, (dropped, lost, in_flight, pipelines)) =
        crash_window::checks_with(api, options, exercise, crashing, ours).await?;

    let mut checks = vec![
        crashed,
        dropped_check(&dropped),
        lost_check(&lost),
        in_flight,
        pipelines,
    ];
    checks.extend(ex2_checks);
    Ok(Report {
        exercise,
        checks,
        all_passed: "every job was charged once: after a crash, a lost answer, a lost request, a 409, and in each of two pipelines",
    })
}

/// Jobs whose worker crashes right after the provider charged them, one at a time.
async fn crash_after_charge(api: &Api, limit: Duration) -> anyhow::Result<Check> {
    let run_id = new_run_id("verify-charge-crash");
    let mut submitted = 0;
    let mut gave_up = None;
    for n in 1..=CRASHED_JOBS {
        api.submit_to(
            Exercise::DoubleCharge,
            &format!("{run_id}-job-{n}"),
            &run_id,
            json!({ payload::SIMULATE_CRASH: payload::AFTER_EFFECT }),
        )
        .await?;
        submitted = n;
        gave_up = settle(api, &run_id, u64::from(n), limit).await?;
        if gave_up.is_some() {
            break;
        }
    }
    let requests = api.provider_requests(&run_id).await?;
    let crashes = api.events(&run_id).await?.count(EventKind::Crashed);
    let mut mistake = (crashes == 0).then_some(Ex3Mistake::NoFault(
        "no worker crashed (was the charge made?)",
    ));
    let mut per_job = Vec::new();
    let mut once = 0;
    for n in 1..=submitted {
        let job = api.job(&format!("{run_id}-job-{n}")).await?;
        let charges = Charges::of(&requests, &job.job_id, None);
        let judged = charges.judge_ended(&job, gave_up);
        if judged.is_none() {
            once += 1;
        }
        mistake = mistake.or(judged);
        per_job
            .push(json!({ "jobId": job.job_id, "status": job.status, "provider": charges.data() }));
    }
    let replays: u64 = per_job
        .iter()
        .map(|j| j["provider"]["replays"].as_u64().unwrap_or(0))
        .sum();
    Ok(Check::judged(
        CRASH,
        format!(
            "{CRASHED_JOBS} jobs whose worker crashed after the provider charged them ({}): {once} charged once, {}",
            plural(crashes as u64, "crash"),
            plural(replays, "replay")
        ),
        mistake.as_ref().map(|m| m as &dyn Mistake),
        json!({ "crashes": crashes, "jobs": per_job }),
    ))
}

/// One job, its provider tally and its record once the run settled.
struct OneJob {
    job: JobView,
    charges: Charges,
    /// The check gave up waiting for the job after this long.
    gave_up: Option<Duration>,
}

/// A job whose first charge is made but its answer dropped; once that delivery
/// has ended (given up and released its lease, to come back a second later; or,
/// in a handler that retries by itself with the same key, been
/// acknowledged), the client, which got no answer either, submits the job again.
/// The new copy takes the lease first: only a key that names the job, not the
/// delivery, makes its charge a replay.
async fn dropped_answer(api: &Api, limit: Duration) -> anyhow::Result<OneJob> {
    let run_id = new_run_id("verify-dropped");
    let job_id = format!("{run_id}-job-1");
    // The failed delivery comes back a second later, not after the claim idle
    // time; the resubmitted copy is delivered long before.
    let faults =
        json!({ "provider": { simulate::DROP_ANSWER: true }, payload::REDELIVER_AFTER_MS: 1_000 });
    api.submit_to(Exercise::DoubleCharge, &job_id, &run_id, faults.clone())
        .await?;
    let deadline = Instant::now() + limit;
    let (_, ended) = poll_until(
        deadline,
        || async {
            let events = api.events(&run_id).await?;
            let run = api.run(&run_id).await?;
            anyhow::Ok((events, run))
        },
        |(events, run)| {
            events.count(EventKind::AttemptFailed) > 0
                || events.count(EventKind::RetryLater) > 0
                || run.processed_deliveries + run.dead_lettered > 0
        },
    )
    .await?;
    let gave_up = if ended {
        api.submit_to(Exercise::DoubleCharge, &job_id, &run_id, faults)
            .await?;
        settle(api, &run_id, 2, limit).await?
    } else {
        Some(limit)
    };
    let requests = api.provider_requests(&run_id).await?;
    Ok(OneJob {
        job: api.job(&job_id).await?,
        charges: Charges::of(&requests, &job_id, None),
        gave_up,
    })
}

/// Waits until the run has settled with `copies` submissions; `Some(limit)`
/// when it had not within `limit` (the check then says what it saw).
async fn settle(
    api: &Api,
    run_id: &str,
    copies: u64,
    limit: Duration,
) -> anyhow::Result<Option<Duration>> {
    let (_, settled) = wait_run(api, run_id, copies, limit).await?;
    Ok((!settled).then_some(limit))
}

fn dropped_check(one: &OneJob) -> Check {
    let c = &one.charges;
    let mistake = c.judge_fault(
        &one.job,
        c.dropped,
        "the provider dropped no answer (was the job charged?)",
        one.gave_up,
    );
    Check::judged(
        DROPPED,
        format!(
            "a charge made whose answer never arrived, and the job resubmitted: {}, {}, job {}",
            plural(c.charged, "charge"),
            plural(c.replays, "replay"),
            one.job.status
        ),
        mistake.as_ref().map(|m| m as &dyn Mistake),
        json!({ "jobId": one.job.job_id, "status": one.job.status, "provider": c.data() }),
    )
}

/// One job with a payload: its provider tally and record once the run settled.
async fn one_job(
    api: &Api,
    prefix: &str,
    payload: Value,
    limit: Duration,
) -> anyhow::Result<OneJob> {
    let run_id = new_run_id(prefix);
    let job_id = format!("{run_id}-job-1");
    api.submit_to(Exercise::DoubleCharge, &job_id, &run_id, payload)
        .await?;
    let gave_up = settle(api, &run_id, 1, limit).await?;
    let requests = api.provider_requests(&run_id).await?;
    Ok(OneJob {
        job: api.job(&job_id).await?,
        charges: Charges::of(&requests, &job_id, None),
        gave_up,
    })
}

fn lost_check(one: &OneJob) -> Check {
    let c = &one.charges;
    let mistake = c.judge_fault(
        &one.job,
        c.lost,
        "no request was lost (did the job reach the provider?)",
        one.gave_up,
    );
    Check::judged(
        LOST,
        format!(
            "a request lost before the charge (no answer): {}, job {}",
            plural(c.charged, "charge"),
            one.job.status
        ),
        mistake.as_ref().map(|m| m as &dyn Mistake),
        json!({ "jobId": one.job.job_id, "status": one.job.status, "provider": c.data() }),
    )
}

/// A charge the provider works on for a lease and 1.5 s and then fails (nothing
/// charged, its key released), and a copy sent once the first delivery's lease
/// ran out: the copy takes the lease and asks the provider, which answers 409.
/// Only a handler that waits ("not yet") charges the card in the end.
async fn in_flight_conflict(api: &Api, lease: Duration, limit: Duration) -> anyhow::Result<Check> {
    let run_id = new_run_id("verify-in-flight");
    let job_id = format!("{run_id}-job-1");
    let slow_ms = lease.as_millis() as u64 + 1_500;
    if slow_ms > lab_schema::provider::MAX_SIMULATED_MS {
        anyhow::bail!(
            "--lease-ms {} is too long for the in-flight check: the provider simulates at most {} ms, and the check needs the lease plus 1.5 s",
            lease.as_millis(),
            lab_schema::provider::MAX_SIMULATED_MS
        );
    }
    let faults = json!({ "provider": { simulate::FIRST_REQUEST_MS: slow_ms, simulate::FAIL_FIRST: true }, payload::REDELIVER_AFTER_MS: 1_000 });
    let start = Instant::now();
    for at in [Duration::ZERO, lease + Duration::from_millis(500)] {
        tokio::time::sleep_until((start + at).into()).await;
        api.submit_to(Exercise::DoubleCharge, &job_id, &run_id, faults.clone())
            .await?;
    }
    let gave_up = settle(api, &run_id, 2, limit).await?;
    let requests = api.provider_requests(&run_id).await?;
    let job = api.job(&job_id).await?;
    let c = Charges::of(&requests, &job_id, None);
    let mistake = c.judge_ended(&job, gave_up);
    Ok(Check::judged(
        IN_FLIGHT,
        format!(
            "a charge that took {slow_ms} ms and failed, a copy meanwhile ({}): {}, job {}",
            if c.in_flight > 0 {
                "answered 409"
            } else {
                "never answered 409"
            },
            plural(c.charged, "charge"),
            job.status
        ),
        mistake.as_ref().map(|m| m as &dyn Mistake),
        json!({ "jobId": job.job_id, "status": job.status, "provider": c.data() }),
    ))
}

/// The same jobId submitted for two pipelines at once: each must be charged once.
async fn two_pipelines(api: &Api, limit: Duration) -> anyhow::Result<Check> {
    let run_id = new_run_id("verify-pipelines");
    let job_id = format!("{run_id}-job-1");
    let (a, b) = tokio::join!(
        api.submit_for(
            Exercise::DoubleCharge,
            Some(FIRST_PIPELINE),
            &job_id,
            &run_id,
            json!({})
        ),
        api.submit_for(
            Exercise::DoubleCharge,
            Some(SECOND_PIPELINE),
            &job_id,
            &run_id,
            json!({})
        ),
    );
    a?;
    b?;
    let gave_up = settle(api, &run_id, 2, limit).await?;
    let requests = api.provider_requests(&run_id).await?;
    let first = Charges::of(&requests, &job_id, Some(FIRST_PIPELINE));
    let second = Charges::of(&requests, &job_id, Some(SECOND_PIPELINE));
    let mut mistake = first.judge_repeats().or_else(|| second.judge_repeats());
    if let (None, Some(waited)) = (&mistake, gave_up) {
        mistake = Some(Ex3Mistake::Stuck {
            waited_secs: waited.as_secs(),
            answers: Charges::of(&requests, &job_id, None).answers_text(),
        });
    }
    if mistake.is_none() {
        let swallowed = [
            (&first, FIRST_PIPELINE, &second, SECOND_PIPELINE),
            (&second, SECOND_PIPELINE, &first, FIRST_PIPELINE),
        ]
        .into_iter()
        .find(|(own, ..)| own.charged == 0);
        mistake = swallowed.map(|(own, own_name, other, other_name)| {
            let shared = own.keys.intersection(&other.keys).flatten().next().cloned();
            match shared {
                Some(key) => Ex3Mistake::KeyWithoutPipeline {
                    key,
                    swallowed: own_name.to_string(),
                    charged: other_name.to_string(),
                },
                None => Ex3Mistake::Lost,
            }
        });
    }
    Ok(Check::judged(
        PIPELINES,
        format!(
            "one jobId for pipelines {FIRST_PIPELINE} and {SECOND_PIPELINE}: {} and {}",
            plural(first.charged, "charge"),
            plural(second.charged, "charge")
        ),
        mistake.as_ref().map(|m| m as &dyn Mistake),
        json!({ "jobId": job_id, FIRST_PIPELINE: first.data(), SECOND_PIPELINE: second.data() }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: &str) -> JobView {
        serde_json::from_value(json!({
            "jobId": "j", "runId": "r", "status": status, "submissions": 1,
            "processAttempts": 6, "effects": 0, "duplicateSkips": 0,
            "deliveriesDone": 0, "deadLettered": 0,
        }))
        .unwrap()
    }

    fn refused(times: u64) -> Charges {
        let mut charges = Charges::default();
        charges.answers.insert((409, "in-flight"), 1);
        charges.answers.insert((402, "declined"), times);
        charges
    }

    #[test]
    fn a_job_that_never_ends_says_what_the_provider_answered() {
        let mistake = refused(5)
            .judge_ended(&job("processing"), Some(Duration::from_secs(60)))
            .unwrap();
        assert_eq!(mistake.code(), "job-stuck");
        let message = mistake.message();
        assert!(message.contains("after 60 s"), "{message}");
        assert!(
            message.contains("6 requests: 5 x 402 declined, 1 x 409 in-flight"),
            "{message}"
        );
    }

    #[test]
    fn a_double_charge_is_named_even_when_the_job_never_ended() {
        let mut charges = refused(1);
        charges.charged = 2;
        let mistake = charges
            .judge_ended(&job("processing"), Some(Duration::from_secs(60)))
            .unwrap();
        assert_eq!(mistake.code(), "no-idempotency-key");
    }

    /// `charged` charges made with `keys` (`None`: a request without a key).
    fn charged(charged: u64, keys: &[Option<&str>]) -> Charges {
        Charges {
            charged,
            keys: keys.iter().map(|k| k.map(str::to_string)).collect(),
            ..Charges::default()
        }
    }

    #[test]
    fn two_charges_are_named_by_the_keys_they_were_sent_with() {
        let code = |c: Charges| c.judge_once(&job("completed")).map(|m| m.code());
        assert_eq!(code(charged(1, &[Some("charge:email:j")])), None);
        assert_eq!(code(charged(2, &[None])), Some("no-idempotency-key"));
        assert_eq!(
            code(charged(
                2,
                &[Some("charge:email:j:1-0"), Some("charge:email:j:2-0")]
            )),
            Some("key-per-attempt")
        );
        // One key, charged twice: the provider did not dedupe by it (or it
        // expired): named as such, not as a missing key.
        assert_eq!(
            code(charged(2, &[Some("charge:email:j")])),
            Some("duplicate-charge")
        );
        let mut reused = charged(1, &[Some("charge:email:j")]);
        reused.key_reused = 1;
        assert_eq!(code(reused), Some("body-changes"));
    }

    #[test]
    fn a_job_never_charged_is_named_by_what_the_provider_answered_it() {
        let code = |c: Charges| c.judge_once(&job("completed")).map(|m| m.code());
        let mut conflict = charged(0, &[Some("k")]);
        conflict.in_flight = 1;
        assert_eq!(code(conflict), Some("in-flight-taken-as-done"));
        let mut lost = charged(0, &[Some("k")]);
        lost.lost = 1;
        assert_eq!(code(lost), Some("no-answer-taken-as-done"));
        // Charged once, but the delivery gave up afterwards.
        assert_eq!(
            charged(1, &[Some("k")])
                .judge_once(&job("failed"))
                .map(|m| m.code()),
            Some("job-not-completed")
        );
        // A fault that never happened, and nothing wrong: the check cannot tell.
        assert_eq!(
            charged(1, &[Some("k")])
                .judge_fault(&job("completed"), 0, "no answer was dropped", None)
                .map(|m| m.code()),
            Some("inconclusive")
        );
    }

    #[test]
    fn no_request_at_all_is_said_so() {
        assert_eq!(
            Charges::default().answers_text(),
            "none: no request reached the provider"
        );
    }
}
