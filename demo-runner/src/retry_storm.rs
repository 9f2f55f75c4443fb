//! `retry-storm` (exercise 5): jobs charged at the provider while it is down.
//! The scenario starts an outage, sends the jobs (one with a declined card, one
//! whose worker crashes mid-outage), lets the outage end by itself, waits until
//! every job is charged or dead-lettered, and reads the provider's request log:
//! how hard the retries hit the provider, whether it rate-limited or banned the
//! account, and how soon after the outage every job went through. Students
//! need not edit this file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lab_schema::measured::{StormFigures, Submitted};
use lab_schema::provider::{DECLINED_CUSTOMER, Faults, LoggedRequest, RequestOutcome, body};
use lab_schema::{EventKind, Exercise, Measured, RunSummary, now_ms, payload};
use serde_json::json;

use crate::client::Api;
use crate::registry::{Run, RunScenario};
use crate::report::ScenarioRun;
use crate::scenarios::new_run_id;
use crate::wait::wait_settled;

/// `retry-storm`: JOBS jobs charged through an outage of OUTAGE seconds.
#[derive(clap::Args, Debug, Clone)]
pub struct RetryStorm {
    /// Jobs to charge (one of them with a declined card, one crashing its worker).
    #[arg(default_value_t = 40, value_parser = clap::value_parser!(u32).range(3..=1000))]
    pub jobs: u32,
    /// How long the provider is down, from just before the first job (seconds).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub outage_secs: u64,
    /// How long to wait, once the outage is over, for every job to be charged or dead-lettered (seconds).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub wait_secs: u64,
}

impl RunScenario for RetryStorm {
    async fn run(&self, run: &Run<'_>) -> anyhow::Result<ScenarioRun> {
        let plan = Plan {
            jobs: self.jobs,
            outage: Duration::from_secs(self.outage_secs),
            crashes: 1,
            wait: Duration::from_secs(self.wait_secs),
        };
        let storm = plan.run(run.api, run.name).await?;
        let mut result = storm.scenario_run(run.name);
        result.narration = storm.narration();
        let to = |line: &String| {
            if run.narrate_to_stdout {
                println!("{line}");
            } else {
                eprintln!("{line}");
            }
        };
        result.narration.iter().for_each(to);
        Ok(result)
    }
}

/// What a storm is made of.
pub(crate) struct Plan {
    pub(crate) jobs: u32,
    pub(crate) outage: Duration,
    /// Jobs (after the declined one) whose worker crashes right after their
    /// first retry is scheduled.
    pub(crate) crashes: u32,
    /// How long after the outage the jobs have to be charged or dead-lettered.
    pub(crate) wait: Duration,
}

/// One job's part of the storm, from the provider's log and the run's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JobStorm {
    pub(crate) requests: u64,
    pub(crate) requests_in_outage: u64,
    pub(crate) charged: u64,
    /// Whether its card is declined, and how many times the provider said so (402).
    pub(crate) declined: bool,
    pub(crate) declines: u64,
    pub(crate) crashes: bool,
    /// The dead letter's reason, when the job went to the dead letters.
    pub(crate) dead_lettered: Option<String>,
}

/// A storm that ran: its totals, figures, and each job's part.
pub(crate) struct Storm {
    pub(crate) run: RunSummary,
    pub(crate) started: Instant,
    pub(crate) figures: StormFigures,
    pub(crate) jobs: BTreeMap<String, JobStorm>,
    /// When the provider first banned the account, in ms after the outage started.
    pub(crate) banned_after_ms: Option<u64>,
}

impl Plan {
    /// Starts the outage, sends the jobs, waits until the run settles (or the
    /// wait after the outage is over), and reads what happened.
    pub(crate) async fn run(&self, api: &Api, scenario: &str) -> anyhow::Result<Storm> {
        let run_id = new_run_id(scenario);
        // The run's own account: its rate limit and ban are its own.
        let account = format!("storm-{run_id}");
        let started = Instant::now();
        let faults = Faults {
            outage_secs: self.outage.as_secs().max(1),
            slow_ms: 0,
        };
        api.provider_faults(Some(&faults)).await?;
        let outage_start = now_ms();
        let outage_end = outage_start + faults.outage_secs * 1000;
        let mut retries = 0;
        for n in 1..=self.jobs {
            let mut payload = json!({
                body::ACCOUNT: account,
                body::CUSTOMER: format!("cus_{n}"),
                body::AMOUNT_CENTS: 1000 + n,
            });
            if n == 1 {
                payload[body::CUSTOMER] = json!(DECLINED_CUSTOMER);
            }
            if (2..2 + self.crashes).contains(&n) {
                payload[payload::SIMULATE_CRASH] = json!(payload::AFTER_SCHEDULE);
            }
            let job_id = format!("{run_id}-job-{n}");
            retries += api
                .submit_to(Exercise::RetryStorm, &job_id, &run_id, payload)
                .await?;
        }
        let expected = u64::from(self.jobs);
        let deadline = started + self.outage + self.wait;
        let run = wait_settled(api, &run_id, expected, deadline).await?;
        let requests = api.provider_requests(&run_id).await?.requests;
        let events = api.events(&run_id).await?.events;
        let submitted = Submitted {
            job_id: None,
            accepted: expected,
            submit_retries: u64::from(retries),
        };
        Ok(measure(
            run,
            started,
            submitted,
            (outage_start, outage_end),
            &format!("{run_id}-job-1"),
            &requests,
            &events,
        ))
    }
}

/// The storm's figures, from the provider's log and the run's events.
fn measure(
    run: RunSummary,
    started: Instant,
    submitted: Submitted,
    (outage_start, outage_end): (u64, u64),
    declined_job: &str,
    requests: &[LoggedRequest],
    events: &[lab_schema::RunEvent],
) -> Storm {
    let mut jobs: BTreeMap<String, JobStorm> = BTreeMap::new();
    jobs.entry(declined_job.to_string()).or_default().declined = true;
    for r in requests {
        let job = jobs.entry(r.job_id.clone()).or_default();
        job.requests += 1;
        if (outage_start..outage_end).contains(&r.at_ms) {
            job.requests_in_outage += 1;
        }
        match r.outcome {
            RequestOutcome::Charged | RequestOutcome::ChargedAnswerDropped => job.charged += 1,
            // Declined, or the stored 402 replayed to a retry with the same key.
            _ if r.status == 402 => job.declines += 1,
            _ => {}
        }
    }
    for e in events {
        let job = jobs.entry(e.job_id.clone()).or_default();
        match e.event {
            EventKind::DeadLettered => job.dead_lettered = Some(e.detail.clone()),
            EventKind::Crashed => job.crashes = true,
            _ => {}
        }
    }
    let mut times: Vec<u64> = requests.iter().map(|r| r.at_ms).collect();
    times.sort_unstable();
    let mut busiest = 0;
    let mut from = 0;
    for (to, &t) in times.iter().enumerate() {
        while times[from] + 100 <= t {
            from += 1;
        }
        busiest = busiest.max(to + 1 - from);
    }
    let limited = |r: &&LoggedRequest| {
        matches!(
            r.outcome,
            RequestOutcome::RateLimited | RequestOutcome::Banned
        )
    };
    let banned_at = requests
        .iter()
        .filter(|r| r.outcome == RequestOutcome::Banned)
        .map(|r| r.at_ms)
        .min();
    let last_charge = requests
        .iter()
        .filter(|r| matches!(r.outcome, RequestOutcome::Charged))
        .map(|r| r.at_ms)
        .max();
    let figures = StormFigures {
        submitted,
        outage_secs: (outage_end - outage_start) / 1000,
        requests: requests.len() as u64,
        requests_in_outage: jobs.values().map(|j| j.requests_in_outage).sum(),
        max_requests_per_job_in_outage: jobs
            .values()
            .map(|j| j.requests_in_outage)
            .max()
            .unwrap_or(0),
        busiest_100ms: busiest as u64,
        rate_limited: requests.iter().filter(limited).count() as u64,
        banned: banned_at.is_some(),
        last_charge_after_outage_ms: last_charge.map(|t| t.saturating_sub(outage_end)),
        declined_dead_lettered: jobs
            .values()
            .filter(|j| j.declined && j.dead_lettered.is_some())
            .count() as u64,
        declines: jobs.values().map(|j| j.declines).sum(),
        transient_dead_lettered: jobs
            .values()
            .filter(|j| !j.declined && j.dead_lettered.is_some())
            .count() as u64,
    };
    Storm {
        run,
        started,
        figures,
        jobs,
        banned_after_ms: banned_at.map(|t| t.saturating_sub(outage_start)),
    }
}

impl Storm {
    pub(crate) fn scenario_run(&self, scenario: &str) -> ScenarioRun {
        ScenarioRun::new(
            scenario,
            self.run.clone(),
            self.started,
            Measured::Storm(self.figures.clone()),
        )
    }

    /// What the class sees before the summary: the outage, the storm, the dead letters.
    pub(crate) fn narration(&self) -> Vec<String> {
        let f = &self.figures;
        let jobs = self.jobs.len().max(1) as u64;
        let mut lines = vec![
            format!(
                "outage: the provider answered 503 for {} s; {} jobs, one with a declined card, one crashing its worker mid-outage",
                f.outage_secs,
                self.jobs.len()
            ),
            format!(
                "during the outage: {} requests, {:.1} per job on average, {} at most; busiest 100 ms: {} requests",
                f.requests_in_outage,
                f.requests_in_outage as f64 / jobs as f64,
                f.max_requests_per_job_in_outage,
                f.busiest_100ms
            ),
        ];
        lines.push(match (f.rate_limited, self.banned_after_ms) {
            (0, _) => "rate limit: no 429 (the account stayed within its budget)".to_string(),
            (n, None) => format!("rate limit: {n} requests answered 429 rate_limited"),
            (n, Some(ms)) => format!(
                "rate limit: {n} requests answered 429; the account was BANNED {:.1} s into the outage",
                ms as f64 / 1000.0
            ),
        });
        let transient = self.jobs.values().filter(|j| !j.declined).count();
        let charged = self
            .jobs
            .values()
            .filter(|j| !j.declined && j.charged > 0)
            .count();
        lines.push(match f.last_charge_after_outage_ms {
            Some(ms) if charged == transient => format!(
                "after the outage: every job charged, the last {:.1} s after it ended",
                ms as f64 / 1000.0
            ),
            _ => format!(
                "after the outage: {charged} of {transient} jobs charged when the scenario stopped waiting"
            ),
        });
        let declined = self.jobs.values().find(|j| j.declined);
        lines.push(match declined {
            Some(j) => match &j.dead_lettered {
                Some(reason) => format!(
                    "declined card: declined {}, then dead-lettered: {reason}",
                    lab_schema::summary::plural(j.declines, "time")
                ),
                None if j.declines == 0 => format!(
                    "declined card: {} sent, none reached the card check (refused first: 503 or 429)",
                    lab_schema::summary::plural(j.requests, "request")
                ),
                None => format!(
                    "declined card: declined {}, never dead-lettered",
                    lab_schema::summary::plural(j.declines, "time")
                ),
            },
            None => "declined card: no request".to_string(),
        });
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_schema::provider::RequestOutcome as O;

    fn request(job: &str, outcome: O, at_ms: u64) -> LoggedRequest {
        let status = match (job, outcome) {
            ("d", _) => 402,
            (_, O::Charged) => 201,
            (_, O::RateLimited | O::Banned) => 429,
            _ => 503,
        };
        LoggedRequest {
            outcome,
            status,
            job_id: job.to_string(),
            pipeline: "p".to_string(),
            delivery_id: "1-0".to_string(),
            idempotency_key: None,
            fingerprint: String::new(),
            charge_id: None,
            at_ms,
        }
    }

    #[test]
    fn the_figures_come_from_the_log() {
        let log = vec![
            request("a", O::Unavailable, 1000),
            request("b", O::Unavailable, 1010),
            request("a", O::RateLimited, 1050),
            request("a", O::Banned, 1090),
            request("b", O::Unavailable, 2500),
            request("a", O::Charged, 4200),
            request("b", O::Charged, 4700),
            request("d", O::Declined, 1001),
            request("d", O::Replayed, 1003),
        ];
        let events = vec![lab_schema::RunEvent {
            id: "1-0".into(),
            time_ms: 1002,
            event: EventKind::DeadLettered,
            job_id: "d".into(),
            delivery_id: "1-0".into(),
            consumer: "w".into(),
            detail: "declined".into(),
        }];
        let storm = measure(
            RunSummary::default(),
            Instant::now(),
            Submitted::default(),
            (1000, 4000),
            "d",
            &log,
            &events,
        );
        let f = &storm.figures;
        assert_eq!(f.outage_secs, 3);
        assert_eq!(f.requests, 9);
        assert_eq!(f.requests_in_outage, 7);
        assert_eq!(f.max_requests_per_job_in_outage, 3);
        assert_eq!(f.busiest_100ms, 6, "1000 to 1090");
        assert_eq!(f.rate_limited, 2);
        assert!(f.banned);
        assert_eq!(storm.banned_after_ms, Some(90));
        assert_eq!(f.last_charge_after_outage_ms, Some(700));
        assert_eq!(
            (f.declined_dead_lettered, f.declines),
            (1, 2),
            "a replayed 402 counts"
        );
        assert_eq!(f.transient_dead_lettered, 0);
    }
}
