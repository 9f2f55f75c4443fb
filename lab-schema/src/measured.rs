//! What a scenario measures besides the run's totals: one type per kind of
//! scenario, so that the verdict, `compare`, `evidence` and the dashboard read
//! what was measured instead of guessing from which numbers are present.
//! Students need not edit this file.
//!
//! A scenario builds the kind it measures (the demo-runner's `ScenarioRun::new`).
//! A summary read back from its flat form (`--json`, a saved file) is of the
//! kind its scenario's name has here: in the exercise registry
//! (`Info::measures`) for the exercises' scenarios, in [`OTHER_SCENARIOS`] for
//! the others. The tests that save every scenario and `compare` the files
//! hold the two to agree.

use crate::Exercise;

/// The kinds of measurement, as the registry names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measures {
    /// Jobs sent through `POST /jobs`: [`Measured::Jobs`].
    Jobs,
    /// Jobs, some of which crash their worker: [`Measured::Crashes`].
    Crashes,
    /// Jobs charged at the provider: [`Measured::Charges`].
    Charges,
    /// Orders sent to `POST /orders`: [`Measured::Orders`].
    Orders,
    /// Jobs charged through a provider outage: [`Measured::Storm`].
    Storm,
    /// Order emails per (order, action): [`Measured::Emails`].
    Emails,
    /// A benchmark's load: [`Measured::Load`].
    Load,
    /// A load with faults fired during it: [`Measured::Chaos`].
    Chaos,
}

/// The scenarios that belong to no exercise, and what each measures.
pub const OTHER_SCENARIOS: &[(&str, Measures)] =
    &[("load", Measures::Load), ("chaos", Measures::Chaos)];

/// What the scenario `name` measures (`None`: no such scenario).
pub fn measures_of(name: &str) -> Option<Measures> {
    Exercise::of_scenario(name)
        .map(|e| e.info().measures)
        .or_else(|| {
            OTHER_SCENARIOS
                .iter()
                .find(|(other, _)| *other == name)
                .map(|(_, measures)| *measures)
        })
}

/// Jobs a scenario sent through `POST /jobs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Submitted {
    /// The observed job (duplicate-observe only).
    pub job_id: Option<String>,
    /// Submissions the API answered 202.
    pub accepted: u64,
    /// Submissions repeated after a 5xx or a refused connection.
    pub submit_retries: u64,
}

/// `retried-post`: orders per logical order, and how the clients were answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderCounts {
    /// Answers that never came (`simulate.dropAnswer`), the order made all the same.
    pub answers_dropped: u64,
    /// The orders a correct API creates for the scenario's clients.
    pub expected_orders: u64,
    /// The orders the API created.
    pub orders_created: u64,
    /// Orders beyond the expected ones, client story by client story.
    pub extra_orders: u64,
    /// Expected orders never created.
    pub missing_orders: u64,
    /// Clients whose story ended with another answer than a correct API gives.
    pub wrong_answers: u64,
    /// Answers sent again from the stored answer (`Idempotent-Replayed: true`).
    pub replays: u64,
    /// Requests sent, retries included.
    pub requests: u64,
    /// How many answers of each status, e.g. `201:9,400:1,none:1`.
    pub statuses: String,
}

/// `retry-storm`: what the provider saw of the run's charges through its
/// outage, from its own request log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StormFigures {
    pub submitted: Submitted,
    /// How long the provider's outage lasted.
    pub outage_secs: u64,
    /// Charge requests the provider received, in all.
    pub requests: u64,
    /// Charge requests received during the outage.
    pub requests_in_outage: u64,
    /// The most requests one job sent during the outage.
    pub max_requests_per_job_in_outage: u64,
    /// The most requests received in any 100 ms.
    pub busiest_100ms: u64,
    /// Requests answered 429 (over the account's budget, or banned).
    pub rate_limited: u64,
    /// Whether the account was banned.
    pub banned: bool,
    /// From the end of the outage to the last charge, in ms (`None`: nothing charged after it).
    pub last_charge_after_outage_ms: Option<u64>,
    /// Jobs with a permanent refusal (a declined card) moved to the dead letters,
    /// and how many times the provider declined them (402).
    pub declined_dead_lettered: u64,
    pub declines: u64,
    /// Jobs with only transient failures moved to the dead letters (should be none).
    pub transient_dead_lettered: u64,
}

/// `new-jobid`: emails per (order, action), the business identity of an
/// email, whatever `jobId` each request of it came with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmailFigures {
    pub submitted: Submitted,
    /// The distinct (order, action) pairs the run asked for: one email each.
    pub order_emails: u64,
    /// Emails sent (the run's ledger).
    pub emails_sent: u64,
    /// Emails beyond one per (order, action).
    pub duplicate_emails: u64,
    /// (order, action) pairs that got no email at all.
    pub suppressed_emails: u64,
    /// Submissions that were a client's retry under a NEW `jobId`.
    pub new_jobid_retries: u64,
    /// Submissions that repeated a `jobId` (plain redeliveries).
    pub same_jobid_copies: u64,
}

/// `load` and `chaos`: what the clients sent and how fast it was answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadFigures {
    pub submitted: Submitted,
    /// Clients submitting at the same time.
    pub clients: u64,
    pub duration_secs: u64,
    /// Requests sent, retries included.
    pub requests: u64,
    pub requests_per_sec: u64,
    /// The median and the 99th percentile of the time one POST /jobs took, in
    /// microseconds (`None`: no request was answered).
    pub latency_p50_us: Option<u64>,
    pub latency_p99_us: Option<u64>,
    pub connection_errors: u64,
    /// How many answers of each status, e.g. `202:9120,503:14`.
    pub statuses: String,
}

/// What one scenario measured besides the run's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Measured {
    /// The run's totals only: `GET /runs/{runId}`, or a summary that names no
    /// scenario this lab knows.
    #[default]
    Totals,
    /// Jobs sent through `POST /jobs` (`duplicate-observe`, `duplicate-load`).
    Jobs(Submitted),
    /// `crash-window`: jobs sent, some of which crash their worker. The run's
    /// crashes ([`RunSummary::crashes`](crate::RunSummary::crashes)) are shown
    /// even when there were none.
    Crashes(Submitted),
    /// `double-charge`: jobs sent, some of which crash their worker after the
    /// charge (the crashes are shown as for [`Measured::Crashes`]), and what
    /// the provider answered their charges.
    Charges {
        submitted: Submitted,
        /// Charges whose answer the provider dropped on purpose.
        answers_dropped: u64,
        /// Charge requests answered with the stored answer of an earlier one.
        provider_replays: u64,
    },
    /// `retried-post`.
    Orders(OrderCounts),
    /// `retry-storm`.
    Storm(StormFigures),
    /// `new-jobid`.
    Emails(EmailFigures),
    /// `load`.
    Load(LoadFigures),
    /// `chaos`: a load, and whether each fault it was given ran (`None`: not given).
    Chaos {
        load: LoadFigures,
        worker_killed: Option<bool>,
        redis_restarted: Option<bool>,
    },
}

impl Measured {
    /// The jobs the scenario sent through `POST /jobs`, if it sent any.
    pub fn submitted(&self) -> Option<&Submitted> {
        match self {
            Measured::Jobs(submitted)
            | Measured::Crashes(submitted)
            | Measured::Charges { submitted, .. } => Some(submitted),
            Measured::Storm(storm) => Some(&storm.submitted),
            Measured::Emails(emails) => Some(&emails.submitted),
            Measured::Load(load) | Measured::Chaos { load, .. } => Some(&load.submitted),
            Measured::Totals | Measured::Orders(_) => None,
        }
    }

    /// The observed job (`duplicate-observe`).
    pub fn job_id(&self) -> Option<&str> {
        self.submitted()?.job_id.as_deref()
    }
}
