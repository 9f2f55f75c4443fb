//! `new-jobid` (exercise 6): order emails sent as a web frontend sends them.
//! Every email is tried several times, each retry under a NEW `jobId` (with a
//! new request id, a new time and a higher retry counter); some orders get a
//! second, different email ("shipped" after "confirmation"); every customer
//! has two orders; and some requests reach the queue twice under one `jobId`
//! (plain redeliveries). The numbers that matter are per (order, action):
//! one email each. Students need not edit this file.

use std::collections::BTreeMap;
use std::time::Instant;

use lab_schema::measured::{EmailFigures, Submitted};
use lab_schema::order_email::OrderEmail;
use lab_schema::{Exercise, Measured, RunSummary, now_ms};
use tokio::task::JoinSet;

use crate::client::Api;
use crate::registry::{Run, RunScenario};
use crate::report::ScenarioRun;
use crate::scenarios::{new_run_id, random};
use crate::wait::wait_settled;

/// The actions the scenario sends: every order's first, and the second of
/// every other order.
pub(crate) const CONFIRMATION: &str = "confirmation";
pub(crate) const SHIPPED: &str = "shipped";

/// `new-jobid`'s command line.
#[derive(clap::Args, Debug, Clone)]
pub struct NewJobId {
    /// Orders: each gets its confirmation, every other one its shipped email
    /// too, and every two orders belong to one customer.
    #[arg(default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub orders: u32,
    /// Retries of each email under a new jobId (the frontend's, after a timeout).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub retries: u32,
}

impl RunScenario for NewJobId {
    async fn run(&self, run: &Run<'_>) -> anyhow::Result<ScenarioRun> {
        let run_id = new_run_id(run.name);
        let started = Instant::now();
        let deadline = started + run.timeout;
        let waves = plan(&run_id, self.orders, self.retries);
        let say = |line: String| run.say(line);
        let mut narration = vec![say(intro(self.orders, self.retries, &waves))];
        let (mut submitted, mut retries) = (0, 0);
        for wave in &waves {
            let (more, more_retries) = submit_all(run.api, &run_id, wave).await?;
            submitted += more;
            retries += more_retries;
            // The frontend retries after a timeout: the try before has been processed.
            wait_settled(run.api, &run_id, submitted, deadline).await?;
        }
        let summary = wait_settled(run.api, &run_id, submitted, deadline).await?;
        let requests: Vec<&Request> = waves.iter().flatten().collect();
        let tally = Tally::read(run.api, &requests).await?;
        narration.extend(tally.lines().into_iter().map(say));
        let submitted = Submitted {
            job_id: None,
            accepted: submitted,
            submit_retries: u64::from(retries),
        };
        let measured = Measured::Emails(tally.figures(submitted, &summary));
        let mut result = ScenarioRun::new(run.name, summary, started, measured);
        result.narration = narration;
        Ok(result)
    }
}

/// One request of the frontend: a job of its own, sent `copies` times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub job_id: String,
    pub email: OrderEmail,
    /// Submissions of this jobId (more than one: plain redeliveries).
    pub copies: u32,
}

impl Request {
    /// Try `retry` (0: the first) of `order`'s `action` email, as job `job_id`.
    pub(crate) fn new(
        job_id: String,
        order_id: &str,
        action: &str,
        customer: &str,
        retry: u32,
    ) -> Request {
        Request {
            job_id,
            email: OrderEmail {
                order_id: order_id.to_string(),
                action: action.to_string(),
                customer: customer.to_string(),
                request_id: format!("req-{:08x}", random() & 0xffff_ffff),
                requested_at_ms: now_ms(),
                retry,
            },
            copies: 1,
        }
    }
}

/// The scenario's requests, wave by wave: in wave `w`, try `w` of every
/// confirmation and try `w - 1` of every shipped email, so that an order's
/// shipped email always comes after its confirmation was sent. The first try
/// of every third order's emails is submitted twice under one jobId.
pub(crate) fn plan(run_id: &str, orders: u32, retries: u32) -> Vec<Vec<Request>> {
    // Order ids unique to the run (claims outlive runs), in digits of a fixed
    // width: the handout's outputs mask digits.
    let token = run_token(run_id);
    let mut job = 0u32;
    let mut next_job_id = || {
        job += 1;
        format!("{run_id}-job-{job}")
    };
    (0..=retries + 1)
        .map(|wave| {
            let mut requests = Vec::new();
            for n in 1..=orders {
                let order = format!("ord-{token}-{n}");
                let customer = format!("cus-{token}-{}", n.div_ceil(2));
                let mut tries = Vec::new();
                if wave <= retries {
                    tries.push((CONFIRMATION, wave));
                }
                if n % 2 == 1 && wave >= 1 {
                    tries.push((SHIPPED, wave - 1));
                }
                for (action, retry) in tries {
                    let mut request = Request::new(next_job_id(), &order, action, &customer, retry);
                    if retry == 0 && n % 3 == 0 {
                        request.copies = 2;
                    }
                    requests.push(request);
                }
            }
            requests
        })
        .collect()
}

/// Eight digits that make a run's order ids its own: from its run id's random
/// part (`new_run_id`).
pub(crate) fn run_token(run_id: &str) -> String {
    let random = run_id
        .rsplit('-')
        .next()
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or_else(random);
    format!("{:08}", random % 100_000_000)
}

/// What the scenario says it sends.
fn intro(orders: u32, retries: u32, waves: &[Vec<Request>]) -> String {
    let requests: Vec<&Request> = waves.iter().flatten().collect();
    let copies = requests.iter().filter(|r| r.copies > 1).count();
    format!(
        "sending {orders} orders' emails as the web frontend does: every confirmation (and every \
         other order's shipped email) tried {} times, each retry under a NEW jobId; two orders per \
         customer; {copies} requests delivered twice under one jobId ({} jobIds in all)",
        retries + 1,
        requests.len()
    )
}

/// Submits every request of a wave (each `copies` times), concurrently, as
/// jobs of exercise 6. Returns the submissions accepted and the retries it took.
pub(crate) async fn submit_all(
    api: &Api,
    run_id: &str,
    requests: &[Request],
) -> anyhow::Result<(u64, u32)> {
    let mut in_flight = JoinSet::new();
    for request in requests {
        for _ in 0..request.copies {
            let (api, run_id, job_id) = (api.clone(), run_id.to_string(), request.job_id.clone());
            let payload = request.email.to_payload();
            in_flight.spawn(async move {
                api.submit_to(Exercise::NewJobId, &job_id, &run_id, payload)
                    .await
            });
        }
    }
    let (mut submitted, mut retries) = (0, 0);
    while let Some(result) = in_flight.join_next().await {
        retries += result??;
        submitted += 1;
    }
    Ok((submitted, retries))
}

/// One email's requests and what came of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EmailTally {
    /// Its jobIds (one per try), and the submissions in all.
    pub job_ids: u64,
    pub submissions: u64,
    /// Emails sent for it (the effects of all its jobs).
    pub emails: u64,
    /// Duplicate deliveries skipped (all its jobs).
    pub skips: u64,
}

/// Emails per (order, action).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Keyed by `OrderEmail::identity`, in the order first sent.
    pub per_email: BTreeMap<(usize, String), EmailTally>,
}

impl Tally {
    /// Reads every request's job (`GET /jobs/{jobId}`) and adds it to its email.
    pub(crate) async fn read(api: &Api, requests: &[&Request]) -> anyhow::Result<Tally> {
        let mut views = Vec::new();
        for request in requests {
            views.push((request, api.job(&request.job_id).await?));
        }
        Ok(Tally::of(
            views
                .iter()
                .map(|(r, v)| (**r, v.effects, v.duplicate_skips)),
        ))
    }

    /// The tally of (request, its job's effects, its job's skips).
    pub(crate) fn of<'a>(jobs: impl Iterator<Item = (&'a Request, u64, u64)>) -> Tally {
        let mut order: Vec<String> = Vec::new();
        let mut per_email: BTreeMap<(usize, String), EmailTally> = BTreeMap::new();
        for (request, effects, skips) in jobs {
            let identity = request.email.identity();
            let rank = order
                .iter()
                .position(|i| *i == identity)
                .unwrap_or_else(|| {
                    order.push(identity.clone());
                    order.len() - 1
                });
            let tally = per_email.entry((rank, identity)).or_default();
            tally.job_ids += 1;
            tally.submissions += u64::from(request.copies);
            tally.emails += effects;
            tally.skips += skips;
        }
        Tally { per_email }
    }

    /// The figures of the run (`summary`: its totals; `submitted`: what was sent).
    pub(crate) fn figures(&self, submitted: Submitted, summary: &RunSummary) -> EmailFigures {
        let emails = self.per_email.values();
        EmailFigures {
            submitted,
            order_emails: self.per_email.len() as u64,
            emails_sent: summary.observed_effects_total,
            duplicate_emails: emails.clone().map(|t| t.emails.saturating_sub(1)).sum(),
            suppressed_emails: emails.clone().filter(|t| t.emails == 0).count() as u64,
            new_jobid_retries: emails.clone().map(|t| t.job_ids - 1).sum(),
            same_jobid_copies: emails.map(|t| t.submissions - t.job_ids).sum(),
        }
    }

    /// One line per email (only the wrong ones when there are many).
    pub(crate) fn lines(&self) -> Vec<String> {
        const ALL_UP_TO: usize = 30;
        let width = self
            .per_email
            .keys()
            .map(|(_, id)| id.len())
            .max()
            .unwrap_or(0);
        let many = self.per_email.len() > ALL_UP_TO;
        let mut lines: Vec<String> = self
            .per_email
            .iter()
            .filter(|(_, t)| !many || t.emails != 1)
            .map(|((_, identity), t)| {
                let outcome = match t.emails {
                    0 => "NEVER SENT".to_string(),
                    1 => "1 email".to_string(),
                    n => format!("{n} emails: {} duplicate", n - 1),
                };
                format!(
                    "  {identity:<width$}  {} jobIds, {} submissions -> {outcome}",
                    t.job_ids, t.submissions
                )
            })
            .collect();
        if many {
            lines.insert(
                0,
                format!(
                    "  ({} emails; showing those not sent exactly once)",
                    self.per_email.len()
                ),
            );
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shipped_email_comes_after_its_confirmation_and_every_retry_has_a_new_job_id() {
        let waves = plan("new-jobid-1-00abc1", 4, 2);
        assert_eq!(waves.len(), 4);
        let all: Vec<&Request> = waves.iter().flatten().collect();
        // 4 confirmations x 3 tries, 2 shipped x 3 tries.
        assert_eq!(all.len(), 18);
        let mut ids: Vec<&str> = all.iter().map(|r| r.job_id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 18, "a new jobId per try");
        for (w, wave) in waves.iter().enumerate() {
            for r in wave {
                let expected = if r.email.action == SHIPPED { w - 1 } else { w };
                assert_eq!(r.email.retry as usize, expected, "{r:?}");
                assert!(OrderEmail::from_payload(&r.email.to_payload()).is_ok());
            }
        }
        assert!(waves[0].iter().all(|r| r.email.action == CONFIRMATION));
        // Order 3's first try is sent twice; two orders per customer.
        let copied: Vec<_> = all.iter().filter(|r| r.copies == 2).collect();
        assert_eq!(copied.len(), 2, "order 3's confirmation and shipped email");
        assert!(
            copied
                .iter()
                .all(|r| r.email.order_id == "ord-00043969-3" && r.email.retry == 0)
        );
        assert_eq!(waves[0][0].email.customer, waves[0][1].email.customer);
        assert_ne!(waves[0][1].email.customer, waves[0][2].email.customer);
    }

    #[test]
    fn the_tally_counts_emails_per_order_and_action() {
        let waves = plan("r-1-ff", 2, 1);
        let all: Vec<&Request> = waves.iter().flatten().collect();
        // What the starter does: every jobId sends its email once.
        let starter = Tally::of(all.iter().map(|r| (*r, 1, 0)));
        let summary = RunSummary {
            observed_effects_total: all.len() as u64,
            ..RunSummary::default()
        };
        let f = starter.figures(Submitted::default(), &summary);
        assert_eq!((f.order_emails, f.emails_sent), (3, 6));
        assert_eq!((f.duplicate_emails, f.suppressed_emails), (3, 0));
        assert_eq!((f.new_jobid_retries, f.same_jobid_copies), (3, 0));
        // A key of the order alone: the shipped email never goes out.
        let order_only = Tally::of(all.iter().map(|r| {
            let first = r.email.retry == 0 && r.email.action == CONFIRMATION;
            (*r, u64::from(first), u64::from(!first))
        }));
        let f = order_only.figures(Submitted::default(), &summary);
        assert_eq!((f.duplicate_emails, f.suppressed_emails), (0, 1));
        let lines = order_only.lines();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[2].contains("shipped") && lines[2].ends_with("NEVER SENT"),
            "{lines:?}"
        );
    }
}
