//! The run summary: ONE type for `GET /runs/{runId}`, the demo-runner's
//! `key=value` and `--json` output, and the files `--save` writes and `compare`
//! and `evidence` read. Students need not edit this file.
//!
//! [`RunSummary`] is typed: the run's totals, and what its scenario measured
//! as a [`Measured`] of the scenario's kind (the registry says which). On the
//! wire (`key=value`, JSON, saved files) it is one flat object: the documented
//! keys, in the documented order ([`Wire`] keeps the order of its fields).
//! Keys a run does not have (the API knows no scenario; only `load` has
//! `clients`) are left out, not null.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Exercise;
use crate::exercise::RECORD_SKIP;
use crate::measured::{
    EmailFigures, LoadFigures, Measured, Measures, OrderCounts, StormFigures, Submitted,
    measures_of,
};

fn yes() -> bool {
    true
}

/// The totals of one run, and what the scenario that made it measured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Wire", from = "Wire")]
pub struct RunSummary {
    /// The demo-runner scenario (absent in `GET /runs/{runId}`).
    pub scenario: Option<String>,
    pub run_id: String,
    pub unique_jobs: u64,
    pub total_submissions: u64,
    pub observed_attempts_total: u64,
    /// Counted from the effect ledger (`ledger:<runId>`), one entry per applied effect.
    pub observed_effects_total: u64,
    /// Effects beyond one per job.
    pub duplicate_effects: u64,
    /// Jobs whose every submission was processed, with no attempt still out,
    /// that had no effect at all.
    pub lost_effects: u64,
    pub duplicate_skips: u64,
    /// Queue entries of the run that a worker acknowledged.
    pub processed_deliveries: u64,
    /// Queue entries of the run that failed `--max-deliveries` times and were
    /// moved to `jobs:dead` (not processed; they never block a run).
    pub dead_lettered: u64,
    /// Every submission of the run has been acknowledged once, or dead-lettered.
    pub drained: bool,
    /// Drained, and every delivery attempt that started has returned: the
    /// numbers are final. (A worker paused or stuck mid-attempt can still apply
    /// an effect after its delivery was acknowledged by another worker.)
    pub settled: bool,
    /// Delivery attempts of the run that started and have not returned yet.
    pub attempts_in_flight: u64,
    /// How long the scenario took (scenarios only).
    pub elapsed_ms: Option<u64>,
    /// Worker crashes the run's jobs caused (`simulateCrash`). Shown when there
    /// were any, and always by the scenarios that make them ([`Measured::Crashes`],
    /// [`Measured::Charges`]).
    pub crashes: u64,
    /// What the scenario measured besides the totals.
    pub measured: Measured,
    /// Scenarios: the exercise's student file and the fingerprint of the code
    /// the workers ran (`job.rs#3fa9c1`), when they all ran the same.
    pub worker_code: Option<String>,
}

/// [`RunSummary`] as it is written and read: one flat object, its keys in the
/// documented order. Only the conversions below read or write it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Wire {
    /// The demo-runner scenario (absent in `GET /runs/{runId}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    pub run_id: String,
    /// The observed job (duplicate-observe only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub unique_jobs: u64,
    pub total_submissions: u64,
    pub observed_attempts_total: u64,
    /// Counted from the effect ledger (`ledger:<runId>`), one entry per applied effect.
    pub observed_effects_total: u64,
    /// Effects beyond one per job.
    pub duplicate_effects: u64,
    /// Jobs whose every submission was processed, with no attempt still out,
    /// that had no effect at all.
    pub lost_effects: u64,
    pub duplicate_skips: u64,
    /// Queue entries of the run that a worker acknowledged.
    #[serde(default)]
    pub processed_deliveries: u64,
    /// Queue entries of the run that failed `--max-deliveries` times and were
    /// moved to `jobs:dead` (not processed; they never block a run).
    #[serde(default)]
    pub dead_lettered: u64,
    /// Every submission of the run has been acknowledged once, or dead-lettered.
    pub drained: bool,
    /// Drained, and every delivery attempt that started has returned: the
    /// numbers are final. (A worker paused or stuck mid-attempt can still apply
    /// an effect after its delivery was acknowledged by another worker.)
    #[serde(default = "yes")]
    pub settled: bool,
    /// Delivery attempts of the run that started and have not returned yet.
    #[serde(default)]
    pub attempts_in_flight: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// Worker crashes the run's jobs caused (`simulateCrash`): when there were
    /// any, and always in `crash-window` and `double-charge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crashes: Option<u64>,
    /// `double-charge`: charges whose answer the provider dropped on purpose
    /// (the caller could not know they were made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers_dropped: Option<u64>,
    /// `double-charge`: charge requests the provider answered with the stored
    /// answer of an earlier request with the same idempotency key (no new charge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_replays: Option<u64>,
    /// `retried-post`: the orders a correct API creates for the scenario's clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_orders: Option<u64>,
    /// `retried-post`: the orders the API created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orders_created: Option<u64>,
    /// `retried-post`: orders beyond the expected ones, client story by client
    /// story (a retry or a reused key that became a new order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_orders: Option<u64>,
    /// `retried-post`: expected orders never created (a retry refused for good).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_orders: Option<u64>,
    /// `retried-post`: clients whose story ended with another answer than a
    /// correct API gives (another caller's order, a refusal of their own retry,
    /// an order where 400 or 422 was due).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrong_answers: Option<u64>,
    /// `retried-post`: answers sent again from the stored answer (`Idempotent-Replayed: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replays: Option<u64>,
    /// `retry-storm`: how long the provider's outage lasted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage_secs: Option<u64>,
    /// `retry-storm`: charge requests received during the outage, and the
    /// most one job sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_in_outage: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_job_in_outage: Option<u64>,
    /// `retry-storm`: the most charge requests the provider received in any 100 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busiest_100ms: Option<u64>,
    /// `retry-storm`: requests the provider answered 429, and whether it banned the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banned: Option<bool>,
    /// `retry-storm`: from the end of the outage to the last charge, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_charge_after_outage_ms: Option<u64>,
    /// `retry-storm`: declined jobs moved to the dead letters, and how many times they were declined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declined_dead_lettered: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declines: Option<u64>,
    /// `retry-storm`: jobs with only transient failures moved to the dead letters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transient_dead_lettered: Option<u64>,
    /// `new-jobid`: the (order, action) pairs asked for, the emails sent, those
    /// beyond one per pair, and the pairs that got none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_emails: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emails_sent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_emails: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed_emails: Option<u64>,
    /// `new-jobid`: retries sent under a new `jobId`, and copies of a `jobId` sent again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_jobid_retries: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_jobid_copies: Option<u64>,
    /// Submissions the API answered 202.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<u64>,
    /// Submissions repeated after a 5xx or a refused connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_retries: Option<u64>,
    /// `load` and `chaos`: clients submitting at the same time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    /// `load` and `chaos`: requests sent, retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_sec: Option<u64>,
    /// `load` and `chaos`: the median and the 99th percentile of the time one
    /// POST /jobs took, as its client saw it, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p50_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_errors: Option<u64>,
    /// `load` and `chaos`: how many answers of each status, e.g. `202:9120,503:14`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statuses: Option<String>,
    /// `chaos`: the worker kill ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_killed: Option<bool>,
    /// `chaos`: the Redis restart ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_restarted: Option<bool>,
    /// Scenarios: the exercise's student file and the fingerprint of the code
    /// the workers ran (`job.rs#3fa9c1`), when they all ran the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_code: Option<String>,
}

impl From<RunSummary> for Wire {
    fn from(run: RunSummary) -> Wire {
        let mut wire = Wire {
            scenario: run.scenario,
            run_id: run.run_id,
            job_id: None,
            unique_jobs: run.unique_jobs,
            total_submissions: run.total_submissions,
            observed_attempts_total: run.observed_attempts_total,
            observed_effects_total: run.observed_effects_total,
            duplicate_effects: run.duplicate_effects,
            lost_effects: run.lost_effects,
            duplicate_skips: run.duplicate_skips,
            processed_deliveries: run.processed_deliveries,
            dead_lettered: run.dead_lettered,
            drained: run.drained,
            settled: run.settled,
            attempts_in_flight: run.attempts_in_flight,
            elapsed_ms: run.elapsed_ms,
            crashes: (run.crashes > 0).then_some(run.crashes),
            worker_code: run.worker_code,
            ..Wire::default()
        };
        let submitted = |wire: &mut Wire, s: Submitted| {
            wire.job_id = s.job_id;
            wire.accepted = Some(s.accepted);
            wire.submit_retries = Some(s.submit_retries);
        };
        let load = |wire: &mut Wire, l: LoadFigures| {
            submitted(wire, l.submitted);
            wire.clients = Some(l.clients);
            wire.duration_secs = Some(l.duration_secs);
            wire.requests = Some(l.requests);
            wire.requests_per_sec = Some(l.requests_per_sec);
            wire.latency_p50_us = l.latency_p50_us;
            wire.latency_p99_us = l.latency_p99_us;
            wire.connection_errors = Some(l.connection_errors);
            wire.statuses = Some(l.statuses);
        };
        match run.measured {
            Measured::Totals => {}
            Measured::Jobs(s) => submitted(&mut wire, s),
            Measured::Crashes(s) => {
                wire.crashes = Some(run.crashes);
                submitted(&mut wire, s);
            }
            Measured::Charges {
                submitted: s,
                answers_dropped,
                provider_replays,
            } => {
                wire.crashes = Some(run.crashes);
                submitted(&mut wire, s);
                wire.answers_dropped = Some(answers_dropped);
                wire.provider_replays = Some(provider_replays);
            }
            Measured::Orders(o) => {
                wire.answers_dropped = Some(o.answers_dropped);
                wire.expected_orders = Some(o.expected_orders);
                wire.orders_created = Some(o.orders_created);
                wire.extra_orders = Some(o.extra_orders);
                wire.missing_orders = Some(o.missing_orders);
                wire.wrong_answers = Some(o.wrong_answers);
                wire.replays = Some(o.replays);
                wire.requests = Some(o.requests);
                wire.statuses = Some(o.statuses);
            }
            Measured::Storm(storm) => {
                wire.crashes = Some(run.crashes);
                submitted(&mut wire, storm.submitted);
                wire.outage_secs = Some(storm.outage_secs);
                wire.requests = Some(storm.requests);
                wire.requests_in_outage = Some(storm.requests_in_outage);
                wire.max_requests_per_job_in_outage = Some(storm.max_requests_per_job_in_outage);
                wire.busiest_100ms = Some(storm.busiest_100ms);
                wire.rate_limited = Some(storm.rate_limited);
                wire.banned = Some(storm.banned);
                wire.last_charge_after_outage_ms = storm.last_charge_after_outage_ms;
                wire.declined_dead_lettered = Some(storm.declined_dead_lettered);
                wire.declines = Some(storm.declines);
                wire.transient_dead_lettered = Some(storm.transient_dead_lettered);
            }
            Measured::Emails(e) => {
                submitted(&mut wire, e.submitted);
                wire.order_emails = Some(e.order_emails);
                wire.emails_sent = Some(e.emails_sent);
                wire.duplicate_emails = Some(e.duplicate_emails);
                wire.suppressed_emails = Some(e.suppressed_emails);
                wire.new_jobid_retries = Some(e.new_jobid_retries);
                wire.same_jobid_copies = Some(e.same_jobid_copies);
            }
            Measured::Load(l) => load(&mut wire, l),
            Measured::Chaos {
                load: l,
                worker_killed,
                redis_restarted,
            } => {
                load(&mut wire, l);
                wire.worker_killed = worker_killed;
                wire.redis_restarted = redis_restarted;
            }
        }
        wire
    }
}

impl From<Wire> for RunSummary {
    /// The scenario's name says what it measured (the registry knows each
    /// one's kind); a summary without a known scenario is the totals only.
    fn from(wire: Wire) -> RunSummary {
        let submitted = Submitted {
            job_id: wire.job_id.clone(),
            accepted: wire.accepted.unwrap_or(0),
            submit_retries: wire.submit_retries.unwrap_or(0),
        };
        let load = || LoadFigures {
            submitted: submitted.clone(),
            clients: wire.clients.unwrap_or(0),
            duration_secs: wire.duration_secs.unwrap_or(0),
            requests: wire.requests.unwrap_or(0),
            requests_per_sec: wire.requests_per_sec.unwrap_or(0),
            latency_p50_us: wire.latency_p50_us,
            latency_p99_us: wire.latency_p99_us,
            connection_errors: wire.connection_errors.unwrap_or(0),
            statuses: wire.statuses.clone().unwrap_or_default(),
        };
        let measured = match wire.scenario.as_deref().and_then(measures_of) {
            None => Measured::Totals,
            Some(Measures::Jobs) => Measured::Jobs(submitted.clone()),
            Some(Measures::Crashes) => Measured::Crashes(submitted.clone()),
            Some(Measures::Charges) => Measured::Charges {
                submitted: submitted.clone(),
                answers_dropped: wire.answers_dropped.unwrap_or(0),
                provider_replays: wire.provider_replays.unwrap_or(0),
            },
            Some(Measures::Orders) => Measured::Orders(OrderCounts {
                answers_dropped: wire.answers_dropped.unwrap_or(0),
                expected_orders: wire.expected_orders.unwrap_or(0),
                orders_created: wire.orders_created.unwrap_or(0),
                extra_orders: wire.extra_orders.unwrap_or(0),
                missing_orders: wire.missing_orders.unwrap_or(0),
                wrong_answers: wire.wrong_answers.unwrap_or(0),
                replays: wire.replays.unwrap_or(0),
                requests: wire.requests.unwrap_or(0),
                statuses: wire.statuses.clone().unwrap_or_default(),
            }),
            Some(Measures::Storm) => Measured::Storm(StormFigures {
                submitted: submitted.clone(),
                outage_secs: wire.outage_secs.unwrap_or(0),
                requests: wire.requests.unwrap_or(0),
                requests_in_outage: wire.requests_in_outage.unwrap_or(0),
                max_requests_per_job_in_outage: wire.max_requests_per_job_in_outage.unwrap_or(0),
                busiest_100ms: wire.busiest_100ms.unwrap_or(0),
                rate_limited: wire.rate_limited.unwrap_or(0),
                banned: wire.banned.unwrap_or(false),
                last_charge_after_outage_ms: wire.last_charge_after_outage_ms,
                declined_dead_lettered: wire.declined_dead_lettered.unwrap_or(0),
                declines: wire.declines.unwrap_or(0),
                transient_dead_lettered: wire.transient_dead_lettered.unwrap_or(0),
            }),
            Some(Measures::Emails) => Measured::Emails(EmailFigures {
                submitted: submitted.clone(),
                order_emails: wire.order_emails.unwrap_or(0),
                emails_sent: wire.emails_sent.unwrap_or(0),
                duplicate_emails: wire.duplicate_emails.unwrap_or(0),
                suppressed_emails: wire.suppressed_emails.unwrap_or(0),
                new_jobid_retries: wire.new_jobid_retries.unwrap_or(0),
                same_jobid_copies: wire.same_jobid_copies.unwrap_or(0),
            }),
            Some(Measures::Load) => Measured::Load(load()),
            Some(Measures::Chaos) => Measured::Chaos {
                load: load(),
                worker_killed: wire.worker_killed,
                redis_restarted: wire.redis_restarted,
            },
        };
        RunSummary {
            scenario: wire.scenario,
            run_id: wire.run_id,
            unique_jobs: wire.unique_jobs,
            total_submissions: wire.total_submissions,
            observed_attempts_total: wire.observed_attempts_total,
            observed_effects_total: wire.observed_effects_total,
            duplicate_effects: wire.duplicate_effects,
            lost_effects: wire.lost_effects,
            duplicate_skips: wire.duplicate_skips,
            processed_deliveries: wire.processed_deliveries,
            dead_lettered: wire.dead_lettered,
            drained: wire.drained,
            settled: wire.settled,
            attempts_in_flight: wire.attempts_in_flight,
            elapsed_ms: wire.elapsed_ms,
            crashes: wire.crashes.unwrap_or(0),
            measured,
            worker_code: wire.worker_code,
        }
    }
}

impl RunSummary {
    /// The keys and values, in the documented order.
    pub fn fields(&self) -> Vec<(String, Value)> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map.into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `key=value` lines, then one `#` line that says what the numbers mean.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (key, value) in self.fields() {
            out.push_str(&format!("{key}={}\n", show(&value)));
        }
        out.push_str(&format!("# {}\n", self.verdict()));
        out
    }

    /// The exercise the run's scenario belongs to, if any.
    pub fn exercise(&self) -> Option<Exercise> {
        self.scenario.as_deref().and_then(Exercise::of_scenario)
    }

    /// What the run's exercise calls to record a skipped duplicate (quoted in hints).
    pub fn record_skip_call(&self) -> &'static str {
        match self.exercise() {
            Some(_) => RECORD_SKIP,
            None => "the guard's skip recorder",
        }
    }

    /// Duplicate deliveries the run had: submissions beyond one per job.
    pub fn duplicate_deliveries(&self) -> u64 {
        self.total_submissions.saturating_sub(self.unique_jobs)
    }

    /// `8 x 2` (jobs x copies).
    pub fn shape(&self) -> String {
        let copies = self
            .total_submissions
            .checked_div(self.unique_jobs)
            .unwrap_or(0);
        format!("{} x {copies}", self.unique_jobs)
    }

    /// The numbers in one sentence (no `=` in it, so `key=value` parsers skip it).
    pub fn verdict(&self) -> String {
        // A storm's numbers are its verdict, settled or not (its scenario stops
        // waiting a while after the outage).
        if let Measured::Storm(storm) = &self.measured {
            return storm_verdict(self, storm);
        }
        if !self.drained {
            return format!(
                "not drained: {} of {} submissions processed so far",
                self.processed_deliveries, self.total_submissions
            );
        }
        if !self.settled {
            return format!(
                "not settled: {} still out, so the numbers are not final",
                plural(self.attempts_in_flight, "delivery attempt")
            );
        }
        if let Measured::Orders(orders) = &self.measured {
            return orders_verdict(orders);
        }
        if let Measured::Emails(emails) = &self.measured {
            return emails_verdict(emails);
        }
        if self.lost_effects > 0 {
            if self.crashes > 0 {
                return format!(
                    "{} finished with NO effect after {}: the worker died between the claim and \
                     the effect, and the redelivery was skipped as a duplicate (the email is lost)",
                    plural(self.lost_effects, "job"),
                    plural(self.crashes, "crash")
                );
            }
            return format!(
                "{} finished with NO effect: a guard that skips too much loses work",
                plural(self.lost_effects, "job")
            );
        }
        if self.dead_lettered > 0 {
            return format!(
                "{} dead-lettered: the handler failed on every delivery of them (see the worker log)",
                plural(self.dead_lettered, "submission")
            );
        }
        let effects = plural(self.observed_effects_total, "effect");
        let jobs = plural(self.unique_jobs, "unique job");
        if self.duplicate_effects > 0 {
            return format!(
                "{effects} for {jobs}: {} (the bug)",
                plural(self.duplicate_effects, "duplicate side effect")
            );
        }
        let duplicates = self.duplicate_deliveries();
        if self.duplicate_skips < duplicates {
            return format!(
                "{effects} for {jobs}, but only {} of {duplicates} duplicate deliveries recorded as \
                 skipped: call {} when the claim fails",
                self.duplicate_skips,
                self.record_skip_call()
            );
        }
        let crashes = match self.crashes {
            0 => String::new(),
            n => format!(", {} survived", plural(n, "crash")),
        };
        format!(
            "{effects} for {jobs}, {} skipped{crashes}: exactly one effect per job",
            plural(self.duplicate_skips, "duplicate delivery")
        )
    }
}

/// The verdict of `new-jobid`: one email per (order, action), whatever the
/// `jobId`s. (Per `jobId` the numbers mislead here: a retry under a new
/// `jobId` is a job of its own, whose right outcome is no email.)
fn emails_verdict(e: &EmailFigures) -> String {
    let sent = format!(
        "{} for {} (order, action) pairs",
        plural(e.emails_sent, "email"),
        e.order_emails
    );
    let mut wrong = Vec::new();
    if e.duplicate_emails > 0 {
        wrong.push(format!(
            "{} (a retry under a new jobId sent it again)",
            plural(e.duplicate_emails, "duplicate email")
        ));
    }
    if e.suppressed_emails > 0 {
        wrong.push(format!(
            "{} never sent (a different email of the order, or of another order, was taken for a duplicate)",
            plural(e.suppressed_emails, "email")
        ));
    }
    if wrong.is_empty() {
        format!(
            "{sent}, {} under a new jobId and {} of a jobId skipped: exactly one email per (order, action)",
            plural(e.new_jobid_retries, "retry"),
            plural(e.same_jobid_copies, "copy")
        )
    } else {
        format!("{sent}: {} (the bug)", wrong.join(", "))
    }
}

/// The verdict of `retry-storm`: the storm, the dead letters, one charge per job.
fn storm_verdict(run: &RunSummary, storm: &StormFigures) -> String {
    let storm_text = format!(
        "{} during the {} s outage (up to {} for one job; {} in the busiest 100 ms)",
        plural(storm.requests_in_outage, "request"),
        storm.outage_secs,
        storm.max_requests_per_job_in_outage,
        storm.busiest_100ms
    );
    if storm.rate_limited > 0 {
        return format!(
            "the retry storm: {storm_text}; the provider answered 429 {} time{}{} (the bug: retries at once, or together)",
            storm.rate_limited,
            if storm.rate_limited == 1 { "" } else { "s" },
            if storm.banned {
                " and BANNED the account"
            } else {
                ""
            }
        );
    }
    if storm.transient_dead_lettered > 0 {
        return format!(
            "{} dead-lettered for a failure that was only transient (a 429, a 409, an outage): they are never charged",
            plural(storm.transient_dead_lettered, "job")
        );
    }
    if storm.declines > storm.declined_dead_lettered {
        return format!(
            "a declined card was declined {} (the bug: a permanent refusal retried)",
            plural(storm.declines, "time")
        );
    }
    if !run.drained {
        return format!(
            "{}: {} of {} jobs charged or dead-lettered when the scenario stopped waiting",
            storm_text,
            run.processed_deliveries + run.dead_lettered,
            run.total_submissions
        );
    }
    if run.duplicate_effects > 0 || run.lost_effects > 0 {
        return format!(
            "{} charged twice, {} never: retries must keep exercise 3's key",
            plural(run.duplicate_effects, "job"),
            plural(run.lost_effects, "job")
        );
    }
    let after = storm
        .last_charge_after_outage_ms
        .map(|ms| format!(", the last {:.1} s after it ended", ms as f64 / 1000.0))
        .unwrap_or_default();
    format!(
        "no 429: every job charged once{after}; the declined card dead-lettered at its first decline; {storm_text}"
    )
}

/// The verdict of `retried-post`: orders per logical order.
fn orders_verdict(counts: &OrderCounts) -> String {
    {
        let (created, expected) = (counts.orders_created, counts.expected_orders);
        let orders = format!("{} for {expected} expected", plural(created, "order"));
        let extra = counts.extra_orders;
        let missing = counts.missing_orders;
        if extra > 0 {
            return format!(
                "{orders}: {} (the bug: a retry, a double click or a reused request became a new order)",
                plural(extra, "extra order")
            );
        }
        if missing > 0 {
            return format!(
                "{orders}: {} never created (a request refused, or answered with another order's answer)",
                plural(missing, "expected order")
            );
        }
        let wrong = counts.wrong_answers;
        if wrong > 0 {
            return format!(
                "{orders}, but {} (a replay of another order, a retry refused, or an order where 400 or 422 was due)",
                plural(wrong, "wrong final answer")
            );
        }
        format!(
            "{orders}, {}: exactly one order per logical order",
            plural(counts.replays, "replayed answer")
        )
    }
}

/// A summary saved with `--save FILE`: the summary, its verdict, and the whole
/// text the scenario printed, so `compare` and `evidence` show what the student saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSummary {
    #[serde(flatten)]
    pub summary: RunSummary,
    /// The summary's `#` line (absent from `--json` output saved by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// What the scenario printed (absent from `--json` output saved by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// A value as a `key=value` line shows it: text without quotes.
pub fn show(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// `1 effect`, `2 effects`, `2 duplicate deliveries`.
pub fn plural(n: u64, noun: &str) -> String {
    match (n, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) if !stem.ends_with(['a', 'e', 'o', 'u']) => format!("{n} {stem}ies"),
        _ if noun.ends_with("sh") || noun.ends_with("ch") || noun.ends_with(['s', 'x']) => {
            format!("{n} {noun}es")
        }
        _ => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_run() -> RunSummary {
        RunSummary {
            scenario: Some("duplicate-load".into()),
            run_id: "load-1".into(),
            unique_jobs: 8,
            total_submissions: 16,
            observed_attempts_total: 16,
            observed_effects_total: 16,
            duplicate_effects: 8,
            processed_deliveries: 16,
            drained: true,
            settled: true,
            elapsed_ms: Some(219),
            measured: Measured::Jobs(Submitted {
                job_id: None,
                accepted: 16,
                submit_retries: 0,
            }),
            ..RunSummary::default()
        }
    }

    // One test per kind of measurement. Each expected line is what the flat
    // summary (one struct of optional keys, before the measurement types)
    // printed for the same run: the wire form has not changed, and files saved
    // in it read back as the same kind.

    /// The totals the samples share, as `GET /runs/{runId}` gives them.
    fn totals() -> RunSummary {
        RunSummary {
            run_id: "run-1".into(),
            unique_jobs: 6,
            total_submissions: 12,
            observed_attempts_total: 14,
            observed_effects_total: 6,
            duplicate_skips: 6,
            processed_deliveries: 12,
            drained: true,
            settled: true,
            ..RunSummary::default()
        }
    }

    /// A run of `scenario` that measured `measured`, as a scenario builds it.
    fn run_of(scenario: &str, measured: Measured) -> RunSummary {
        RunSummary {
            scenario: Some(scenario.into()),
            run_id: format!("{scenario}-1"),
            elapsed_ms: Some(1234),
            measured,
            worker_code: Some("job.rs#3fa9c1".into()),
            ..totals()
        }
    }

    fn submitted(accepted: u64, submit_retries: u64) -> Submitted {
        Submitted {
            job_id: None,
            accepted,
            submit_retries,
        }
    }

    /// `run` prints exactly `json` (its keys in the documented order, absent
    /// ones left out), the same keys as `key=value` lines and then `# verdict`;
    /// `json` reads back as `run`, and so does a file `--save` writes.
    fn assert_wire(run: &RunSummary, json: &str, verdict: &str) {
        assert_eq!(run.to_json(), json);
        let back: RunSummary = serde_json::from_str(json).unwrap();
        assert_eq!(&back, run);
        let Value::Object(keys) = serde_json::from_str(json).unwrap() else {
            panic!("not an object: {json}");
        };
        let lines: String = keys
            .iter()
            .map(|(key, value)| format!("{key}={}\n", show(value)))
            .collect();
        assert_eq!(run.to_text(), format!("{lines}# {verdict}\n"));
        let saved = SavedSummary {
            summary: run.clone(),
            verdict: Some(run.verdict()),
            output: Some(run.to_text()),
        };
        let file = serde_json::to_string_pretty(&saved).unwrap();
        assert_eq!(serde_json::from_str::<SavedSummary>(&file).unwrap(), saved);
    }

    #[test]
    fn totals_only_as_get_runs_gives_them() {
        assert_wire(
            &totals(),
            r#"{"run_id":"run-1","unique_jobs":6,"total_submissions":12,"observed_attempts_total":14,"observed_effects_total":6,"duplicate_effects":0,"lost_effects":0,"duplicate_skips":6,"processed_deliveries":12,"dead_lettered":0,"drained":true,"settled":true,"attempts_in_flight":0}"#,
            "6 effects for 6 unique jobs, 6 duplicate deliveries skipped: exactly one effect per job",
        );
        // The crashes a run's jobs caused are a total: the API counts them, for any run.
        let crashed = RunSummary {
            crashes: 2,
            lost_effects: 2,
            observed_effects_total: 4,
            ..totals()
        };
        assert_wire(
            &crashed,
            r#"{"run_id":"run-1","unique_jobs":6,"total_submissions":12,"observed_attempts_total":14,"observed_effects_total":4,"duplicate_effects":0,"lost_effects":2,"duplicate_skips":6,"processed_deliveries":12,"dead_lettered":0,"drained":true,"settled":true,"attempts_in_flight":0,"crashes":2}"#,
            "2 jobs finished with NO effect after 2 crashes: the worker died between the claim and the effect, and the redelivery was skipped as a duplicate (the email is lost)",
        );
        // A summary that names a scenario this lab does not know keeps its totals.
        let other = run_of("no-such-scenario", Measured::Totals);
        let back: RunSummary = serde_json::from_str(&other.to_json()).unwrap();
        assert_eq!(back, other);
    }

    #[test]
    fn jobs_sent_by_duplicate_observe_and_duplicate_load() {
        let observe = RunSummary {
            unique_jobs: 1,
            total_submissions: 3,
            observed_attempts_total: 3,
            observed_effects_total: 3,
            duplicate_effects: 2,
            duplicate_skips: 0,
            processed_deliveries: 3,
            ..run_of(
                "duplicate-observe",
                Measured::Jobs(Submitted {
                    job_id: Some("observe-1-job-1".into()),
                    ..submitted(3, 0)
                }),
            )
        };
        assert_wire(
            &observe,
            r#"{"scenario":"duplicate-observe","run_id":"duplicate-observe-1","job_id":"observe-1-job-1","unique_jobs":1,"total_submissions":3,"observed_attempts_total":3,"observed_effects_total":3,"duplicate_effects":2,"lost_effects":0,"duplicate_skips":0,"processed_deliveries":3,"dead_lettered":0,"drained":true,"settled":true,"attempts_in_flight":0,"elapsed_ms":1234,"accepted":3,"submit_retries":0,"worker_code":"job.rs#3fa9c1"}"#,
            "3 effects for 1 unique job: 2 duplicate side effects (the bug)",
        );
        assert_wire(
            &run_of("duplicate-load", Measured::Jobs(submitted(12, 1))),
            r#"{"scenario":"duplicate-load","run_id":"duplicate-load-1","unique_jobs":6,"total_submissions":12,"observed_attempts_total":14,"observed_effects_total":6,"duplicate_effects":0,"lost_effects":0,"duplicate_skips":6,"processed_deliveries":12,"dead_lettered":0,"drained":true,"settled":true,"attempts_in_flight":0,"elapsed_ms":1234,"accepted":12,"submit_retries":1,"worker_code":"job.rs#3fa9c1"}"#,
            "6 effects for 6 unique jobs, 6 duplicate deliveries skipped: exactly one effect per job",
        );
    }

    #[test]
    fn crash_window_shows_its_crashes_even_when_none_happened() {
        let none = run_of("crash-window", Measured::Crashes(submitted(12, 0)));
        assert_wire(
            &none,
            r#"{"scenario":"crash-window","run_id":"crash-window-1","unique_jobs":6,"total_submissions":12,"observed_attempts_total":14,"observed_effects_total":6,"duplicate_effects":0,"lost_effects":0,"duplicate_skips":6,"processed_deliveries":12,"dead_lettered":0,"drained":true,"settled":true,"attempts_in_flight":0,"elapsed_ms":1234,"crashes":0,"accepted":12,"submit_retries":0,"worker_code":"job.rs#3fa9c1"}"#,
            "6 effects for 6 unique jobs, 6 duplicate deliveries skipped: exactly one effect per job",
        );
        let lost = RunSummary {
            crashes: 2,
            lost_effects: 2,
            observed_effects_total: 4,
            ..none
        };
        assert_wire(
            &lost,
            r#"{"scenario":"crash-window","run_id":"crash-window-1","unique_jobs":6,"total_submissions":12,"observed_attempts_total":14,"observed_effects_total":4,"duplicate_effects":0,"lost_effects":2,"duplicate_skips":6,"processed_deliveries":12,"dead_lettered":0,"drained":true,"settled":true,"attempts_in_flight":0,"elapsed_ms":1234,"crashes":2,"accepted":12,"submit_retries":0,"worker_code":"job.rs#3fa9c1"}"#,
            "2 jobs finished with NO effect after 2 crashes: the worker died between the claim and the effect, and the redelivery was skipped as a duplicate (the email is lost)",
        );
    }

    #[test]
    fn charges_of_double_charge_come_before_the_jobs_sent() {
        let charges = RunSummary {
            crashes: 2,
            ..run_of(
                "double-charge",
                Measured::Charges {
                    submitted: submitted(12, 0),
                    answers_dropped: 2,
                    provider_replays: 3,
                },
            )
        };
        assert_wire(
            &charges,
            r#"{"scenario":"double-charge","run_id":"double-charge-1","unique_jobs":6,"total_submissions":12,"observed_attempts_total":14,"observed_effects_total":6,"duplicate_effects":0,"lost_effects":0,"duplicate_skips":6,"processed_deliveries":12,"dead_lettered":0,"drained":true,"settled":true,"attempts_in_flight":0,"elapsed_ms":1234,"crashes":2,"answers_dropped":2,"provider_replays":3,"accepted":12,"submit_retries":0,"worker_code":"job.rs#3fa9c1"}"#,
            "6 effects for 6 unique jobs, 6 duplicate deliveries skipped, 2 crashes survived: exactly one effect per job",
        );
        // Its crashes are shown even when none happened, as in `crash-window`.
        let calm = RunSummary {
            crashes: 0,
            ..charges
        };
        assert!(
            calm.to_json()
                .contains(r#""elapsed_ms":1234,"crashes":0,"answers_dropped":2,"#)
        );
        assert_eq!(
            serde_json::from_str::<RunSummary>(&calm.to_json()).unwrap(),
            calm
        );
    }

    #[test]
    fn orders_of_retried_post_are_judged_per_logical_order() {
        let broken = RunSummary {
            unique_jobs: 13,
            total_submissions: 13,
            observed_attempts_total: 13,
            observed_effects_total: 13,
            duplicate_skips: 0,
            processed_deliveries: 13,
            worker_code: Some("idempotency.rs#77aa01".into()),
            ..run_of(
                "retried-post",
                Measured::Orders(OrderCounts {
                    answers_dropped: 2,
                    expected_orders: 7,
                    orders_created: 13,
                    extra_orders: 6,
                    missing_orders: 0,
                    wrong_answers: 2,
                    replays: 0,
                    requests: 14,
                    statuses: "201:11,503:1,none:2".into(),
                }),
            )
        };
        assert_wire(
            &broken,
            r#"{"scenario":"retried-post","run_id":"retried-post-1","unique_jobs":13,"total_submissions":13,"observed_attempts_total":13,"observed_effects_total":13,"duplicate_effects":0,"lost_effects":0,"duplicate_skips":0,"processed_deliveries":13,"dead_lettered":0,"drained":true,"settled":true,"attempts_in_flight":0,"elapsed_ms":1234,"answers_dropped":2,"expected_orders":7,"orders_created":13,"extra_orders":6,"missing_orders":0,"wrong_answers":2,"replays":0,"requests":14,"statuses":"201:11,503:1,none:2","worker_code":"idempotency.rs#77aa01"}"#,
            "13 orders for 7 expected: 6 extra orders (the bug: a retry, a double click or a reused request became a new order)",
        );
        let fixed = RunSummary {
            unique_jobs: 7,
            total_submissions: 7,
            observed_attempts_total: 7,
            observed_effects_total: 7,
            duplicate_skips: 0,
            processed_deliveries: 7,
            ..run_of(
                "retried-post",
                Measured::Orders(OrderCounts {
                    answers_dropped: 2,
                    expected_orders: 7,
                    orders_created: 7,
                    extra_orders: 0,
                    missing_orders: 0,
                    wrong_answers: 0,
                    replays: 5,
                    requests: 15,
                    statuses: "201:9,400:1,409:1,422:1,none:2".into(),
                }),
            )
        };
        assert_wire(
            &fixed,
            r#"{"scenario":"retried-post","run_id":"retried-post-1","unique_jobs":7,"total_submissions":7,"observed_attempts_total":7,"observed_effects_total":7,"duplicate_effects":0,"lost_effects":0,"duplicate_skips":0,"processed_deliveries":7,"dead_lettered":0,"drained":true,"settled":true,"attempts_in_flight":0,"elapsed_ms":1234,"answers_dropped":2,"expected_orders":7,"orders_created":7,"extra_orders":0,"missing_orders":0,"wrong_answers":0,"replays":5,"requests":15,"statuses":"201:9,400:1,409:1,422:1,none:2","worker_code":"job.rs#3fa9c1"}"#,
            "7 orders for 7 expected, 5 replayed answers: exactly one order per logical order",
        );
    }

    fn load_figures(submitted: Submitted, requests: u64, statuses: &str) -> LoadFigures {
        LoadFigures {
            submitted,
            clients: 4,
            duration_secs: 12,
            requests,
            requests_per_sec: 34,
            latency_p50_us: Some(700),
            latency_p99_us: Some(2000),
            connection_errors: 0,
            statuses: statuses.into(),
        }
    }

    #[test]
    fn load_figures_follow_the_jobs_sent() {
        let load = RunSummary {
            worker_code: None,
            ..run_of(
                "load",
                Measured::Load(LoadFigures {
                    clients: 100,
                    duration_secs: 30,
                    requests_per_sec: 304,
                    latency_p50_us: Some(900),
                    latency_p99_us: Some(4100),
                    ..load_figures(submitted(9120, 14), 9134, "202:9120,503:14")
                }),
            )
        };
        assert_wire(
            &load,
            r#"{"scenario":"load","run_id":"load-1","unique_jobs":6,"total_submissions":12,"observed_attempts_total":14,"observed_effects_total":6,"duplicate_effects":0,"lost_effects":0,"duplicate_skips":6,"processed_deliveries":12,"dead_lettered":0,"drained":true,"settled":true,"attempts_in_flight":0,"elapsed_ms":1234,"accepted":9120,"submit_retries":14,"clients":100,"duration_secs":30,"requests":9134,"requests_per_sec":304,"latency_p50_us":900,"latency_p99_us":4100,"connection_errors":0,"statuses":"202:9120,503:14"}"#,
            "6 effects for 6 unique jobs, 6 duplicate deliveries skipped: exactly one effect per job",
        );
    }

    #[test]
    fn chaos_says_which_of_its_faults_ran() {
        // No request answered: no latency. The worker kill ran, the Redis restart did not.
        let faults = run_of(
            "chaos",
            Measured::Chaos {
                load: LoadFigures {
                    latency_p50_us: None,
                    latency_p99_us: None,
                    connection_errors: 3,
                    ..load_figures(submitted(400, 9), 412, "202:400,503:9")
                },
                worker_killed: Some(true),
                redis_restarted: Some(false),
            },
        );
        assert_wire(
            &faults,
            r#"{"scenario":"chaos","run_id":"chaos-1","unique_jobs":6,"total_submissions":12,"observed_attempts_total":14,"observed_effects_total":6,"duplicate_effects":0,"lost_effects":0,"duplicate_skips":6,"processed_deliveries":12,"dead_lettered":0,"drained":true,"settled":true,"attempts_in_flight":0,"elapsed_ms":1234,"accepted":400,"submit_retries":9,"clients":4,"duration_secs":12,"requests":412,"requests_per_sec":34,"connection_errors":3,"statuses":"202:400,503:9","worker_killed":true,"redis_restarted":false,"worker_code":"job.rs#3fa9c1"}"#,
            "6 effects for 6 unique jobs, 6 duplicate deliveries skipped: exactly one effect per job",
        );
        // A chaos given no fault names none.
        let calm = run_of(
            "chaos",
            Measured::Chaos {
                load: LoadFigures {
                    requests_per_sec: 33,
                    ..load_figures(submitted(400, 0), 400, "202:400")
                },
                worker_killed: None,
                redis_restarted: None,
            },
        );
        assert_wire(
            &calm,
            r#"{"scenario":"chaos","run_id":"chaos-1","unique_jobs":6,"total_submissions":12,"observed_attempts_total":14,"observed_effects_total":6,"duplicate_effects":0,"lost_effects":0,"duplicate_skips":6,"processed_deliveries":12,"dead_lettered":0,"drained":true,"settled":true,"attempts_in_flight":0,"elapsed_ms":1234,"accepted":400,"submit_retries":0,"clients":4,"duration_secs":12,"requests":400,"requests_per_sec":33,"latency_p50_us":700,"latency_p99_us":2000,"connection_errors":0,"statuses":"202:400","worker_code":"job.rs#3fa9c1"}"#,
            "6 effects for 6 unique jobs, 6 duplicate deliveries skipped: exactly one effect per job",
        );
    }

    #[test]
    fn a_file_from_before_settled_existed_reads_as_settled() {
        let old = r#"{"run_id":"r","unique_jobs":1,"total_submissions":1,"observed_attempts_total":1,
            "observed_effects_total":1,"duplicate_effects":0,"lost_effects":0,"duplicate_skips":0,"drained":true}"#;
        assert!(serde_json::from_str::<RunSummary>(old).unwrap().settled);
    }

    #[test]
    fn the_verdict_names_what_is_wrong_first() {
        let mut run = load_run();
        run.settled = false;
        run.attempts_in_flight = 8;
        assert_eq!(
            run.verdict(),
            "not settled: 8 delivery attempts still out, so the numbers are not final"
        );
        let mut run = load_run();
        run.observed_effects_total = 8;
        run.duplicate_effects = 0;
        run.duplicate_skips = 3;
        assert!(run.verdict().contains("call ctx.record_duplicate_skip"));
        run.duplicate_skips = 8;
        assert_eq!(
            run.verdict(),
            "8 effects for 8 unique jobs, 8 duplicate deliveries skipped: exactly one effect per job"
        );
        assert_eq!(plural(2, "key"), "2 keys");
        assert_eq!(plural(2, "delivery"), "2 deliveries");
        assert_eq!(plural(2, "crash"), "2 crashes");
    }
}
