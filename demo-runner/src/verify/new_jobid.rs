//! Exercise 6's checks (the new jobId: a claim keyed on the business identity
//! of the email, the order and the action). Students need not edit this file.
//!
//! | check | what it sends | what it catches |
//! |---|---|---|
//! | `retry-new-jobid` | one email 5 times, in turn, each under a new jobId: first the jobId alone new, then the jobId and one more field of the request's noise (`requestId`, `requestedAtMs`, `retry`) | a key of the jobId; a key of the whole payload (or of any field new on every request) |
//! | `different-action-sent` | an order's confirmation, then its shipped email | a key without the action (the order alone, the order and the customer) |
//! | `other-order-sent` | the confirmations of two orders of one customer | a key without the order (the customer, the action) |
//! | `fields-kept-apart` | 4 pairs of emails whose order and action make the same text when run together (no separator, or `-`), in either order | fields joined without a separator that cannot occur in them |
//! | `redeliveries-skipped` | 6 emails, each jobId 6 times at once | the claim of exercise 1 broken (no claim, no `NX`, a key per delivery, the claim written after the email), skips not recorded |
//! | `claim-expires` | (the first try's claim, as its trace shows it written) | a claim with no expiry, or shorter than the frontend's retries (an hour) |
//!
//! Each check judges the key the student's code claimed on every delivery
//! (its trace: `SET <key> ...`, the first key it wrote), and names the keys:
//! which field changed the key, which two emails got one key. The emails the
//! ledger counted confirm it.

use std::time::Duration;

use lab_schema::Exercise;
use lab_schema::exercise::RECORD_SKIP;
use lab_schema::summary::plural;
use lab_schema::trace::{Step, Trace, Traced, human_ms};
use serde_json::json;

use super::traces::{claim_write, excerpt, first_claim_command};
use super::{Check, Grader, Mistake, Options, Report, wait_run};
use crate::client::Api;
use crate::new_jobid::{CONFIRMATION, Request, SHIPPED, submit_all};
use crate::scenarios::{new_run_id, random};

pub(super) const RETRY: &str = "retry-new-jobid";
pub(super) const ACTION: &str = "different-action-sent";
pub(super) const ORDER: &str = "other-order-sent";
pub(super) const APART: &str = "fields-kept-apart";
pub(super) const COPIES: &str = "redeliveries-skipped";
pub(super) const EXPIRES: &str = "claim-expires";

/// The checks, in the order they are printed.
pub(super) const CHECKS: [&str; 6] = [RETRY, ACTION, ORDER, APART, COPIES, EXPIRES];

/// This exercise's row in `verify`'s table ([`super::grader`]).
pub(crate) const GRADER: Grader = Grader {
    checks: &CHECKS,
    verify: |api, options| Box::pin(verify(api, options)),
};

/// The frontend retries an email for up to an hour: a claim must outlive that.
pub(crate) const MIN_CLAIM_TTL_MS: u64 = 3_600_000;
/// Emails of `redeliveries-skipped`, and how many times each jobId is sent at once.
const COPIES_EMAILS: usize = 6;
const COPIES_EACH: u32 = 6;

/// What changed from the first try, on each retry of `retry-new-jobid`.
const RETRY_CHANGES: [&[&str]; 4] = [
    &["jobId"],
    &["jobId", "requestId"],
    &["jobId", "requestedAtMs"],
    &["jobId", "retry"],
];

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sent {
    pub request: Request,
    /// Every delivery acknowledged in time.
    pub done: bool,
    pub emails: u64,
    pub skips: u64,
    /// Its deliveries' traces, oldest first.
    pub traces: Vec<Trace>,
}

/// How one delivery claimed: the first key its code wrote, and the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claimed {
    pub key: String,
    /// The command, as sent (`SET k 1 NX EX 86400`).
    pub command: String,
    /// `NX` (or `SETNX`, or a script): only one delivery can win it.
    pub exclusive: bool,
    /// The expiry written (`Some(None)`: none; `None`: not known).
    pub ttl_ms: Option<Option<u64>>,
    /// Written after the email was sent: too late to stop anything.
    pub after_effect: bool,
}

impl Sent {
    /// The claim of each delivery (`None`: it wrote none), oldest first.
    pub(crate) fn claims(&self) -> Vec<Option<Claimed>> {
        self.traces.iter().map(claimed).collect()
    }

    /// The key its first delivery claimed.
    pub(crate) fn key(&self) -> Option<String> {
        self.traces.first().and_then(claimed).map(|c| c.key)
    }

    fn identity(&self) -> String {
        self.request.email.identity()
    }
}

/// The claim a delivery's code wrote first (see `traces::claim_write`).
fn claimed(trace: &Trace) -> Option<Claimed> {
    let write = claim_write(trace)?;
    let (i, args) = first_claim_command(trace)?;
    // Where the claim stands among the trace's lines: its i-th command.
    let claim_line = trace
        .lines
        .iter()
        .enumerate()
        .filter(|(_, l)| matches!(l.what, Traced::Command { .. }))
        .nth(i)
        .map(|(n, _)| n);
    let after_effect = matches!(
        (trace.line_of(Step::EffectSent), claim_line),
        (Some(sent), Some(claim)) if sent < claim
    );
    let name = args[0].to_ascii_uppercase();
    let exclusive = name == "SETNX"
        || name.starts_with("EVAL")
        || args.iter().skip(2).any(|a| a.eq_ignore_ascii_case("NX"));
    Some(Claimed {
        key: write.key,
        command: args.join(" "),
        exclusive,
        ttl_ms: write.ttl_ms,
        after_effect,
    })
}

/// Everything the checks judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Evidence {
    /// The first try, then one retry per [`RETRY_CHANGES`].
    pub retry: Vec<Sent>,
    /// An order's confirmation, then its shipped email.
    pub action: Vec<Sent>,
    /// The confirmations of two orders of one customer.
    pub order: Vec<Sent>,
    /// Pairs of emails whose fields run together; the first of each sent first.
    pub apart: Vec<(Sent, Sent)>,
    /// Emails sent [`COPIES_EACH`] times under one jobId each, at once.
    pub copies: Vec<Sent>,
    /// How long a request was waited for.
    pub waited_secs: u64,
}

impl Evidence {
    /// Every request the checks sent.
    fn all(&self) -> impl Iterator<Item = &Sent> {
        self.retry
            .iter()
            .chain(&self.action)
            .chain(&self.order)
            .chain(self.apart.iter().flat_map(|(a, b)| [a, b]))
            .chain(&self.copies)
    }

    /// Another email (not a try of `sent`'s own) that was sent under the key
    /// `sent` claimed: what `sent` was taken for a duplicate of.
    fn holder_of(&self, sent: &Sent) -> Option<&Sent> {
        let key = sent.key()?;
        self.all().find(|other| {
            other.identity() != sent.identity()
                && other.emails > 0
                && other.key().as_deref() == Some(key.as_str())
        })
    }

    /// Why `skipped` was not sent: the email that holds its key, and what the
    /// two differ in (the fields the key lacks, or runs together); `None`
    /// when no other email holds it.
    fn why_skipped(&self, skipped: &Sent) -> Option<Ex6Mistake> {
        let holder = self.holder_of(skipped)?;
        let key = holder.key()?;
        let (a, b) = (&holder.request.email, &skipped.request.email);
        let (first, second) = (holder.identity(), skipped.identity());
        Some(match (a.order_id == b.order_id, a.action == b.action) {
            (true, _) => Ex6Mistake::KeyWithoutAction {
                order: b.order_id.clone(),
                first,
                second,
                key,
            },
            (false, true) => Ex6Mistake::KeyWithoutOrder { first, second, key },
            // Both differ: either the key names neither, or it runs them together.
            (false, false) if !key.contains(&a.order_id) && !key.contains(&b.order_id) => {
                Ex6Mistake::KeyWithoutOrder { first, second, key }
            }
            (false, false) => Ex6Mistake::FieldsRunTogether { first, second, key },
        })
    }
}

/// The pairs of `fields-kept-apart`: two different emails (order, action)
/// whose order id and action make the same text when joined without a
/// separator, or with `-`, order first or action first. `t` makes the order
/// ids the run's own; no two emails share an order, so that a key of the
/// order alone passes.
pub(crate) fn collision_pairs(t: &str) -> [((String, String), (String, String)); 4] {
    let pair =
        |o1: String, a1: &str, o2: String, a2: &str| ((o1, a1.to_string()), (o2, a2.to_string()));
    [
        // order + action: "ord-T-1" "2nd-reminder" = "ord-T-12" "nd-reminder"
        pair(
            format!("ord-{t}-1"),
            "2nd-reminder",
            format!("ord-{t}-12"),
            "nd-reminder",
        ),
        // order - action: "ord-T-5" "-" "2-reminder" = "ord-T-5-2" "-" "reminder"
        pair(
            format!("ord-{t}-5"),
            "2-reminder",
            format!("ord-{t}-5-2"),
            "reminder",
        ),
        // action + order: "reminder" "2ord-T-3" = "reminder2" "ord-T-3"
        pair(
            format!("2ord-{t}-3"),
            "reminder",
            format!("ord-{t}-3"),
            "reminder2",
        ),
        // action - order: "reminder" "-" "2-ord-T-4" = "reminder-2" "-" "ord-T-4"
        pair(
            format!("2-ord-{t}-4"),
            "reminder",
            format!("ord-{t}-4"),
            "reminder-2",
        ),
    ]
}

/// The emails of each check, before they are sent (`t`: the run's own digits).
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub retry: Vec<Request>,
    pub action: Vec<Request>,
    pub order: Vec<Request>,
    /// The pairs, one after the other.
    pub apart: Vec<Request>,
    pub copies: Vec<Request>,
}

pub(crate) fn planned(t: &str) -> Planned {
    // Each group of emails has a customer of its own (but `other-order-sent`'s
    // two orders, which share one): a key of the customer must not make one
    // check's emails collide with another's.
    let request = |job: &str, order: &str, action: &str, customer: &str| {
        Request::new(
            format!("{job}-{t}"),
            order,
            action,
            &format!("cus-{t}-{customer}"),
            0,
        )
    };
    // retry-new-jobid: each retry new in the jobId and (but the first) one more field.
    let first = request("verify-retry-1", &format!("ord-{t}-r"), CONFIRMATION, "r");
    let mut retry = vec![first.clone()];
    for (i, changes) in RETRY_CHANGES.iter().enumerate() {
        let mut next = first.clone();
        next.job_id = format!("verify-retry-{}-{t}", i + 2);
        for change in changes.iter() {
            match *change {
                "requestId" => next.email.request_id = format!("{}-again", first.email.request_id),
                "requestedAtMs" => next.email.requested_at_ms += 1_500 * (i as u64 + 1),
                "retry" => next.email.retry += 1,
                _ => {}
            }
        }
        retry.push(next);
    }
    let order_a = format!("ord-{t}-a");
    let action = vec![
        request("verify-action-1", &order_a, CONFIRMATION, "a"),
        request("verify-action-2", &order_a, SHIPPED, "a"),
    ];
    let order = vec![
        request("verify-order-1", &format!("ord-{t}-b"), CONFIRMATION, "b"),
        request("verify-order-2", &format!("ord-{t}-c"), CONFIRMATION, "b"),
    ];
    let mut apart = Vec::new();
    for (i, ((o1, a1), (o2, a2))) in collision_pairs(t).iter().enumerate() {
        let customer = format!("p{}", i + 1);
        apart.push(request(
            &format!("verify-apart-{}a", i + 1),
            o1,
            a1,
            &customer,
        ));
        apart.push(request(
            &format!("verify-apart-{}b", i + 1),
            o2,
            a2,
            &customer,
        ));
    }
    let copies = (1..=COPIES_EMAILS)
        .map(|n| {
            let mut r = request(
                &format!("verify-copies-{n}"),
                &format!("ord-{t}-d{n}"),
                CONFIRMATION,
                &format!("d{n}"),
            );
            r.copies = COPIES_EACH;
            r
        })
        .collect();
    Planned {
        retry,
        action,
        order,
        apart,
        copies,
    }
}

/// Pairs the `fields-kept-apart` emails as they were sent.
fn in_pairs(apart: Vec<Sent>) -> Vec<(Sent, Sent)> {
    let mut pairs = Vec::new();
    let mut apart = apart.into_iter();
    while let (Some(a), Some(b)) = (apart.next(), apart.next()) {
        pairs.push((a, b));
    }
    pairs
}

/// Sends the checks' emails and reads what came of them.
async fn gather(api: &Api, options: &Options) -> anyhow::Result<Evidence> {
    // Digits of a fixed width: the handout's outputs mask digits.
    let t = format!("{:08}", random() % 100_000_000);
    let limit = Duration::from_secs(options.timeout_secs.max(10));
    let plan = planned(&t);
    // The groups are independent emails: each in turn within its group, the
    // groups side by side.
    let (retry, action, order, apart) = tokio::try_join!(
        in_turn(api, "verify-new-jobid-retry", plan.retry, limit),
        in_turn(api, "verify-new-jobid-action", plan.action, limit),
        in_turn(api, "verify-new-jobid-order", plan.order, limit),
        in_turn(api, "verify-new-jobid-apart", plan.apart, limit),
    )?;
    let copies = at_once(api, "verify-new-jobid-copies", plan.copies, limit).await?;
    Ok(Evidence {
        retry,
        action,
        order,
        apart: in_pairs(apart),
        copies,
        waited_secs: limit.as_secs(),
    })
}

/// Sends `requests` one after the other, each once the one before was processed.
async fn in_turn(
    api: &Api,
    scenario: &str,
    requests: Vec<Request>,
    limit: Duration,
) -> anyhow::Result<Vec<Sent>> {
    let run_id = new_run_id(scenario);
    let mut sent = Vec::new();
    let mut submitted = 0;
    for request in requests {
        submitted += submit_all(api, &run_id, std::slice::from_ref(&request))
            .await?
            .0;
        let (_, done) = wait_run(api, &run_id, submitted, limit).await?;
        sent.push(read(api, request, done).await?);
    }
    Ok(sent)
}

/// Sends every copy of every request at once, and waits for them all.
async fn at_once(
    api: &Api,
    scenario: &str,
    requests: Vec<Request>,
    limit: Duration,
) -> anyhow::Result<Vec<Sent>> {
    let run_id = new_run_id(scenario);
    let (submitted, _) = submit_all(api, &run_id, &requests).await?;
    let (_, done) = wait_run(api, &run_id, submitted, limit).await?;
    let mut sent = Vec::new();
    for request in requests {
        sent.push(read(api, request, done).await?);
    }
    Ok(sent)
}

/// What came of `request`: its job's record and its deliveries' traces.
async fn read(api: &Api, request: Request, run_done: bool) -> anyhow::Result<Sent> {
    let job = api.job(&request.job_id).await?;
    let mut traces = api.job_trace(&request.job_id).await?;
    traces.sort_by_key(|t| t.started_ms);
    Ok(Sent {
        done: run_done && job.deliveries_done + job.dead_lettered >= u64::from(request.copies),
        request,
        emails: job.effects,
        skips: job.duplicate_skips,
        traces,
    })
}

async fn verify(api: &Api, options: &Options) -> anyhow::Result<Report> {
    let evidence = gather(api, options).await?;
    Ok(judge(&evidence))
}

/// The report of the evidence.
pub(crate) fn judge(e: &Evidence) -> Report {
    let retry = check_retry(e);
    let retry_failed = !retry.passed;
    let mut checks = vec![
        retry,
        check_pair(
            e,
            ACTION,
            "an order's confirmation, then its shipped email",
            &e.action,
        ),
        check_pair(
            e,
            ORDER,
            "one customer's two orders, a confirmation each",
            &e.order,
        ),
        check_apart(e),
        check_copies(e),
        check_expires(e),
    ];
    // With no claim at all, the later checks fail for the reason the first names.
    let no_claim = checks[0]
        .diagnosis
        .as_ref()
        .is_some_and(|d| d.code == "no-claim");
    if retry_failed && no_claim {
        for check in checks.iter_mut().skip(1) {
            if check
                .diagnosis
                .as_ref()
                .is_some_and(|d| d.code == "no-claim")
            {
                *check = check.clone().same_as(RETRY);
            }
        }
    }
    Report {
        exercise: Exercise::NewJobId,
        checks,
        all_passed: "one email per (order, action): retries under new jobIds and plain duplicates skipped, every other email sent",
    }
}

/// The mistakes this exercise's checks can name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ex6Mistake {
    /// A request was not processed in time.
    NotProcessed {
        email: String,
        waited_secs: u64,
    },
    /// No delivery of the email sent it.
    NeverSent {
        email: String,
        tries: usize,
    },
    /// The first delivery wrote no claim before sending.
    NoClaim {
        email: String,
    },
    /// A retry that changed only `fields` claimed another key.
    KeyFromJobId {
        first: String,
        retry: String,
    },
    KeyFromNoise {
        fields: Vec<&'static str>,
        first: String,
        retry: String,
    },
    /// Every try claimed one key, and still more than one sent.
    /// The email was sent before the claim was written.
    EffectBeforeClaim {
        key: String,
        emails: u64,
    },
    ClaimNotHeld {
        key: String,
        emails: u64,
        commands: Vec<String>,
    },
    /// A different email (`second`) claimed the key `first` held, and was skipped.
    KeyWithoutAction {
        order: String,
        first: String,
        second: String,
        key: String,
    },
    KeyWithoutOrder {
        first: String,
        second: String,
        key: String,
    },
    FieldsRunTogether {
        first: String,
        second: String,
        key: String,
    },
    /// An email was skipped, and no other email holds its key.
    WronglySkipped {
        email: String,
        key: Option<String>,
    },
    /// Deliveries of one jobId sent more than once.
    ClaimNotExclusive {
        command: String,
        emails: u64,
    },
    KeyPerDelivery {
        keys: Vec<String>,
        emails: u64,
    },
    DuplicatesSent {
        email: String,
        emails: u64,
        copies: u32,
    },
    SkipNotRecorded {
        skipped: u64,
        recorded: u64,
    },
    ClaimNeverExpires {
        key: String,
    },
    TtlTooShort {
        key: String,
        ttl_ms: u64,
    },
}

impl Mistake for Ex6Mistake {
    fn code(&self) -> &'static str {
        use Ex6Mistake::*;
        match self {
            NotProcessed { .. } => "not-processed",
            NeverSent { .. } => "email-never-sent",
            NoClaim { .. } => "no-claim",
            KeyFromJobId { .. } => "key-from-job-id",
            KeyFromNoise { .. } => "key-from-request-noise",
            EffectBeforeClaim { .. } => "effect-before-claim",
            ClaimNotHeld { .. } => "claim-not-held",
            KeyWithoutAction { .. } => "key-without-action",
            KeyWithoutOrder { .. } => "key-without-order",
            FieldsRunTogether { .. } => "fields-run-together",
            WronglySkipped { .. } => "wrongly-skipped",
            ClaimNotExclusive { .. } => "claim-not-exclusive",
            KeyPerDelivery { .. } => "key-per-delivery",
            DuplicatesSent { .. } => "duplicates-sent",
            SkipNotRecorded { .. } => "skip-not-recorded",
            ClaimNeverExpires { .. } => "claim-never-expires",
            TtlTooShort { .. } => "ttl-too-short",
        }
    }

    fn message(&self) -> String {
        use Ex6Mistake::*;
        match self {
            NotProcessed { email, waited_secs } => format!(
                "{email} was not processed within {waited_secs} s: is a worker running (`./lab status`), and does `process_job` return?"
            ),
            NeverSent { email, tries } => format!(
                "none of the {} of {email} sent it: the first must send (see what your code did below)",
                plural(*tries as u64, "delivery")
            ),
            NoClaim { email } => format!(
                "the first delivery of {email} wrote no claim before sending: claim the email's key with `SET <key> 1 NX EX <ttl>` first, as exercise 1 does"
            ),
            KeyFromJobId { first, retry } => format!(
                "a retry that changed nothing but the jobId claimed a new key: `{first}`, then `{retry}`: your key is built from the jobId, which the frontend makes new on every retry, so every retry sends the email again. Build it from the order and the action"
            ),
            KeyFromNoise {
                fields,
                first,
                retry,
            } => format!(
                "your key changed when only the {} of the request changed: `{first}`, then `{retry}`. That is new on every request, so every retry looks like a new email (a hash of the whole payload has it too). Build the key from the fields that say which email it is: the order and the action",
                fields.join(" and the ")
            ),
            EffectBeforeClaim { key, emails } => format!(
                "{emails} emails went out, each sent BEFORE its delivery claimed `{key}` (the trace: [effect sent], then the SET): a claim written after the email cannot stop it. Claim first, and send only when the claim was won"
            ),
            ClaimNotHeld {
                key,
                emails,
                commands,
            } => format!(
                "every try claimed `{key}`, and still {emails} emails went out: the claim did not stop them ({})",
                commands.join("; ")
            ),
            KeyWithoutAction {
                order,
                first,
                second,
                key,
            } => format!(
                "{second} claimed `{key}`, the key {first} had already claimed, and was skipped: the key does not say which email of {order} it is (the action). Put the action in it"
            ),
            KeyWithoutOrder { first, second, key } => format!(
                "{second} claimed `{key}`, the key {first} had already claimed, and was skipped: the key does not say which order it is for. Put the order id in it"
            ),
            FieldsRunTogether { first, second, key } => format!(
                "{first} and {second} are two different emails, and both claimed `{key}`: the second was never sent. Their fields run together into the same text; put a separator between them that cannot occur inside them (`:`; order ids and actions are letters, digits and `-` only), or hash the fields with one"
            ),
            WronglySkipped { email, key } => format!(
                "{email} was skipped as a duplicate, though no other email was sent under the key it claimed ({}): see what your code did below",
                key.as_deref()
                    .map_or("no key".to_string(), |k| format!("`{k}`"))
            ),
            ClaimNotExclusive { command, emails } => format!(
                "{emails} deliveries of one jobId sent the email: each claimed with `{command}`, which succeeds every time without NX. Claim with `SET <key> 1 NX EX <ttl>`"
            ),
            KeyPerDelivery { keys, emails } => format!(
                "{emails} deliveries of one jobId (one payload) sent the email, each claiming a key of its own ({}): the key must be the same for every delivery of an email",
                keys.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            DuplicatesSent {
                email,
                emails,
                copies,
            } => format!(
                "{copies} deliveries of {email} under one jobId sent {emails} emails: see what your code did below"
            ),
            SkipNotRecorded { skipped, recorded } => format!(
                "{skipped} duplicate deliveries sent nothing, but only {recorded} were recorded as skipped: call {RECORD_SKIP} when the claim fails"
            ),
            ClaimNeverExpires { key } => format!(
                "your claim `{key}` never expires: every email ever sent keeps a key in Redis forever. Give it a TTL (EX), longer than the frontend's retries (an hour): `ctx.idempotency_ttl_secs` is a day"
            ),
            TtlTooShort { key, ttl_ms } => format!(
                "your claim `{key}` expires after {}: the frontend retries for up to an hour, and a retry after the claim expired sends the email again. Give it at least an hour (`ctx.idempotency_ttl_secs` is a day)",
                human_ms(*ttl_ms)
            ),
        }
    }
}

/// The first request not processed in time, as a mistake.
fn unprocessed<'a>(
    sent: impl IntoIterator<Item = &'a Sent>,
    waited_secs: u64,
) -> Option<Ex6Mistake> {
    sent.into_iter()
        .find(|s| !s.done)
        .map(|s| Ex6Mistake::NotProcessed {
            email: format!("{} (job {})", s.identity(), s.request.job_id),
            waited_secs,
        })
}

/// The trace lines of `sent`'s deliveries, for the student.
fn lines_of(sent: &[&Sent], max: usize) -> Vec<String> {
    let traces: Vec<&Trace> = sent.iter().flat_map(|s| s.traces.iter()).collect();
    excerpt(&traces, max)
}

fn check_retry(e: &Evidence) -> Check {
    let sent = &e.retry;
    let emails: u64 = sent.iter().map(|s| s.emails).sum();
    let skips: u64 = sent.iter().map(|s| s.skips).sum();
    let numbers = format!(
        "one email tried {} times, each retry under a new jobId: {}, {} skipped",
        sent.len(),
        plural(emails, "email"),
        skips
    );
    let data = json!({
        "tries": sent.len(),
        "emails": emails,
        "skips": skips,
        "keys": sent.iter().map(Sent::key).collect::<Vec<_>>(),
    });
    let mistake = unprocessed(sent, e.waited_secs).or_else(|| {
        let first = sent.first()?;
        if emails == 0 {
            return Some(Ex6Mistake::NeverSent {
                email: first.identity(),
                tries: sent.len(),
            });
        }
        if emails == 1 {
            return None;
        }
        let Some(k0) = first.key() else {
            return Some(Ex6Mistake::NoClaim {
                email: first.identity(),
            });
        };
        // Which fields, changed alone with the jobId, changed the key.
        let changed: Vec<(&[&str], String)> = RETRY_CHANGES
            .iter()
            .zip(&sent[1..])
            .filter_map(|(changes, s)| s.key().filter(|k| *k != k0).map(|k| (*changes, k)))
            .collect();
        if let Some((_, k1)) = changed.iter().find(|(c, _)| c.len() == 1) {
            return Some(Ex6Mistake::KeyFromJobId {
                first: k0,
                retry: k1.clone(),
            });
        }
        if let Some((_, k)) = changed.first() {
            return Some(Ex6Mistake::KeyFromNoise {
                fields: changed.iter().map(|(c, _)| c[1]).collect(),
                first: k0,
                retry: k.clone(),
            });
        }
        if sent
            .iter()
            .flat_map(Sent::claims)
            .flatten()
            .any(|c| c.after_effect)
        {
            return Some(Ex6Mistake::EffectBeforeClaim { key: k0, emails });
        }
        Some(Ex6Mistake::ClaimNotHeld {
            key: k0,
            emails,
            commands: sent
                .iter()
                .flat_map(Sent::claims)
                .flatten()
                .map(|c| c.command)
                .take(3)
                .collect(),
        })
    });
    let shown: Vec<&Sent> = sent.iter().filter(|s| s.emails > 0).take(2).collect();
    Check::judged(
        RETRY,
        numbers,
        mistake.as_ref().map(|m| m as &dyn Mistake),
        data,
    )
    .with_trace(lines_of(&shown, 14))
}

/// `first` then `second`, two different emails: both must be sent. `same_key`
/// names the mistake when the second claimed the first's key and was skipped.
fn check_both_sent(
    e: &Evidence,
    name: &'static str,
    what: &str,
    first: &Sent,
    second: &Sent,
) -> (Option<Ex6Mistake>, String, serde_json::Value) {
    let numbers = format!("{what}: {} and {}", emails_of(first), emails_of(second));
    let data = json!({
        "check": name,
        "first": { "email": first.identity(), "emails": first.emails, "key": first.key() },
        "second": { "email": second.identity(), "emails": second.emails, "key": second.key() },
    });
    let mistake = unprocessed([first, second], e.waited_secs).or_else(|| {
        let skipped = [first, second].into_iter().find(|s| s.emails == 0)?;
        if skipped.skips == 0 {
            return Some(Ex6Mistake::NeverSent {
                email: skipped.identity(),
                tries: skipped.traces.len().max(1),
            });
        }
        Some(
            e.why_skipped(skipped)
                .unwrap_or(Ex6Mistake::WronglySkipped {
                    email: skipped.identity(),
                    key: skipped.key(),
                }),
        )
    });
    (mistake, numbers, data)
}

/// The traces that show why one of `first` and `second` was not sent: the
/// email that holds its key, then its own.
fn shown(e: &Evidence, first: &Sent, second: &Sent) -> Vec<String> {
    match [first, second].into_iter().find(|s| s.emails == 0) {
        Some(skipped) => match e.holder_of(skipped) {
            Some(holder) => lines_of(&[holder, skipped], 14),
            None => lines_of(&[skipped], 14),
        },
        None => lines_of(&[first, second], 14),
    }
}

fn emails_of(sent: &Sent) -> String {
    format!("{} {}", sent.identity(), plural(sent.emails, "email"))
}

/// Two different emails of `pair`, sent one after the other: both must go out.
fn check_pair(e: &Evidence, name: &'static str, what: &str, pair: &[Sent]) -> Check {
    let [first, second] = [&pair[0], &pair[1]];
    let (mistake, numbers, data) = check_both_sent(e, name, what, first, second);
    Check::judged(
        name,
        numbers,
        mistake.as_ref().map(|m| m as &dyn Mistake),
        data,
    )
    .with_trace(shown(e, first, second))
}

fn check_apart(e: &Evidence) -> Check {
    let emails: u64 = e.apart.iter().map(|(a, b)| a.emails + b.emails).sum();
    let mut keys: Vec<String> = e
        .apart
        .iter()
        .flat_map(|(a, b)| [a.key(), b.key()])
        .flatten()
        .collect();
    keys.sort();
    keys.dedup();
    let numbers = format!(
        "{} pairs of emails whose order and action run together into the same text: {} of {} sent, {} different keys",
        e.apart.len(),
        emails,
        e.apart.len() * 2,
        keys.len()
    );
    let mut found = None;
    for (first, second) in &e.apart {
        let (mistake, _, _) = check_both_sent(e, APART, "", first, second);
        if let Some(mistake) = mistake {
            found = Some((mistake, shown(e, first, second)));
            break;
        }
    }
    let data = json!({ "pairs": e.apart.len(), "emails": emails, "keys": keys.len() });
    let (mistake, shown) = found.unzip();
    Check::judged(
        APART,
        numbers,
        mistake.as_ref().map(|m| m as &dyn Mistake),
        data,
    )
    .with_trace(shown.unwrap_or_default())
}

fn check_copies(e: &Evidence) -> Check {
    let emails: u64 = e.copies.iter().map(|s| s.emails).sum();
    let skips: u64 = e.copies.iter().map(|s| s.skips).sum();
    let submitted: u64 = e.copies.iter().map(|s| u64::from(s.request.copies)).sum();
    let numbers = format!(
        "{} emails, each jobId delivered {} times at once: {} sent, {} skipped",
        e.copies.len(),
        COPIES_EACH,
        plural(emails, "email"),
        skips
    );
    let data = json!({ "emails": emails, "skips": skips, "deliveries": submitted });
    let mut shown = Vec::new();
    let mistake = unprocessed(&e.copies, e.waited_secs).or_else(|| {
        if let Some(lost) = e.copies.iter().find(|s| s.emails == 0) {
            shown = lines_of(&[lost], 14);
            return Some(e.why_skipped(lost).unwrap_or(Ex6Mistake::NeverSent {
                email: lost.identity(),
                tries: lost.request.copies as usize,
            }));
        }
        if let Some(many) = e.copies.iter().find(|s| s.emails > 1) {
            shown = lines_of(&[many], 20);
            let claims: Vec<Claimed> = many.claims().into_iter().flatten().collect();
            if claims.is_empty() {
                return Some(Ex6Mistake::NoClaim {
                    email: many.identity(),
                });
            }
            if let Some(late) = claims.iter().find(|c| c.after_effect) {
                return Some(Ex6Mistake::EffectBeforeClaim {
                    key: late.key.clone(),
                    emails: many.emails,
                });
            }
            if let Some(open) = claims.iter().find(|c| !c.exclusive) {
                return Some(Ex6Mistake::ClaimNotExclusive {
                    command: open.command.clone(),
                    emails: many.emails,
                });
            }
            let mut keys: Vec<String> = claims.iter().map(|c| c.key.clone()).collect();
            keys.dedup();
            if keys.len() > 1 {
                keys.truncate(3);
                return Some(Ex6Mistake::KeyPerDelivery {
                    keys,
                    emails: many.emails,
                });
            }
            return Some(Ex6Mistake::DuplicatesSent {
                email: many.identity(),
                emails: many.emails,
                copies: many.request.copies,
            });
        }
        let duplicates = submitted - e.copies.len() as u64;
        (skips < duplicates).then_some(Ex6Mistake::SkipNotRecorded {
            skipped: duplicates,
            recorded: skips,
        })
    });
    Check::judged(
        COPIES,
        numbers,
        mistake.as_ref().map(|m| m as &dyn Mistake),
        data,
    )
    .with_trace(shown)
}

fn check_expires(e: &Evidence) -> Check {
    let claim = e
        .retry
        .iter()
        .chain(&e.action)
        .chain(&e.order)
        .filter(|s| s.emails > 0)
        .find_map(|s| s.traces.first().and_then(claimed));
    let (numbers, mistake) = match &claim {
        None => (
            "no claim written by a delivery that sent its email".to_string(),
            e.retry
                .first()
                .filter(|s| s.done)
                .map(|s| Ex6Mistake::NoClaim {
                    email: s.identity(),
                }),
        ),
        Some(c) => match c.ttl_ms {
            Some(None) => (
                format!("`{}` written with no expiry", c.key),
                Some(Ex6Mistake::ClaimNeverExpires { key: c.key.clone() }),
            ),
            Some(Some(ms)) if ms < MIN_CLAIM_TTL_MS => (
                format!("`{}` written with a TTL of {}", c.key, human_ms(ms)),
                Some(Ex6Mistake::TtlTooShort {
                    key: c.key.clone(),
                    ttl_ms: ms,
                }),
            ),
            // Passing, the key is not named: the handout prints this line, and
            // the reference's key is the answer.
            Some(Some(ms)) => (
                format!(
                    "the first claim that sent an email was written with a TTL of {} (at least an hour)",
                    human_ms(ms)
                ),
                None,
            ),
            // A script wrote it: its expiry is not in the arguments.
            None => (
                format!(
                    "`{}` written by a script; its expiry is not in the trace",
                    c.key
                ),
                None,
            ),
        },
    };
    let data = json!({
        "key": claim.as_ref().map(|c| c.key.clone()),
        "ttl_ms": claim.as_ref().and_then(|c| c.ttl_ms.flatten()),
    });
    Check::judged(
        EXPIRES,
        numbers,
        mistake.as_ref().map(|m| m as &dyn Mistake),
        data,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::verify::traces::tests::trace;

    /// How a simulated student's code claims: its key, and the command it sends.
    struct Code {
        key: fn(&Request) -> String,
        /// `SET <key> 1 NX EX <ttl>` (false: without NX).
        nx: bool,
        ttl: Option<u64>,
        /// Sends the email first, then claims (and skips nothing).
        effect_first: bool,
    }

    impl Code {
        fn key(key: fn(&Request) -> String) -> Code {
            Code {
                key,
                nx: true,
                ttl: Some(86_400),
                effect_first: false,
            }
        }
    }

    /// What a real stack does with `code`: each delivery claims, in the
    /// order the checks send them, and sends the email when it wins.
    fn simulate(code: &Code) -> Report {
        let plan = planned("00001234");
        let mut held: HashSet<String> = HashSet::new();
        let mut deliver = |request: &Request| -> Sent {
            let mut sent = Sent {
                request: request.clone(),
                done: true,
                emails: 0,
                skips: 0,
                traces: Vec::new(),
            };
            for _ in 0..request.copies {
                let key = (code.key)(request);
                let won = !code.nx || held.insert(key.clone());
                held.insert(key.clone());
                let mut command = format!("> SET {key} 1");
                if code.nx {
                    command.push_str(" NX");
                }
                if let Some(ttl) = code.ttl {
                    command.push_str(&format!(" EX {ttl}"));
                }
                command.push_str(if won { " = OK" } else { " = (nil)" });
                let script = if code.effect_first {
                    // Sent whatever the claim answers, then skipped when it lost.
                    sent.emails += 1;
                    sent.skips += u64::from(!won);
                    let end = if won { "! returned ok" } else { "! skipped" };
                    vec!["! effect", "! effect-sent", command.as_str(), end]
                } else if won {
                    sent.emails += 1;
                    vec![
                        command.as_str(),
                        "! effect",
                        "! effect-sent",
                        "! returned ok",
                    ]
                } else {
                    sent.skips += 1;
                    vec![command.as_str(), "! skipped", "! returned ok"]
                };
                sent.traces.push(trace("worker-1", "1-1", 1, &script));
            }
            sent
        };
        let mut send = |requests: &[Request]| requests.iter().map(&mut deliver).collect::<Vec<_>>();
        let evidence = Evidence {
            retry: send(&plan.retry),
            action: send(&plan.action),
            order: send(&plan.order),
            apart: in_pairs(send(&plan.apart)),
            copies: send(&plan.copies),
            waited_secs: 10,
        };
        judge(&evidence)
    }

    /// The failing checks, each with its diagnosis code.
    fn failures(report: &Report) -> Vec<(&'static str, &'static str)> {
        report
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| (c.name, c.diagnosis.as_ref().map_or("", |d| d.code)))
            .collect()
    }

    fn order(r: &Request) -> &str {
        &r.email.order_id
    }
    fn action(r: &Request) -> &str {
        &r.email.action
    }

    #[test]
    fn the_collision_pairs_collide_when_joined_without_a_separator_or_with_a_dash() {
        let pairs = collision_pairs("00001234");
        let joins: [fn(&str, &str) -> String; 4] = [
            |o, a| format!("{o}{a}"),
            |o, a| format!("{o}-{a}"),
            |o, a| format!("{a}{o}"),
            |o, a| format!("{a}-{o}"),
        ];
        for (join, ((o1, a1), (o2, a2))) in joins.iter().zip(&pairs) {
            assert_eq!(join(o1, a1), join(o2, a2), "{o1} {a1} / {o2} {a2}");
            assert_ne!((o1, a1), (o2, a2));
        }
        let mut orders: Vec<&String> = pairs.iter().flat_map(|(a, b)| [&a.0, &b.0]).collect();
        orders.sort();
        orders.dedup();
        assert_eq!(orders.len(), 8, "no two emails share an order");
        for ((o1, a1), (o2, a2)) in &pairs {
            for name in [o1, a1, o2, a2] {
                lab_schema::order_email::validate_name("field", name).unwrap();
            }
        }
    }

    #[test]
    fn the_starter_fails_only_the_retry_check_naming_the_job_id() {
        let report = simulate(&Code::key(|r| format!("processed:email:{}", r.job_id)));
        assert_eq!(failures(&report), [(RETRY, "key-from-job-id")]);
        let text = report.to_text();
        assert!(text.contains("`processed:email:verify-retry-1-00001234`, then `processed:email:verify-retry-2-00001234`"), "{text}");
    }

    #[test]
    fn each_wrong_key_fails_its_own_check_with_what_the_key_did() {
        /// A mistake: what it is, its key, the checks it fails with their diagnoses.
        type Case = (
            &'static str,
            fn(&Request) -> String,
            Vec<(&'static str, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            (
                "whole payload",
                |r| format!("k:{}", r.email.to_payload()),
                vec![(RETRY, "key-from-request-noise")],
            ),
            (
                "retry counter",
                |r| format!("k:{}:{}:{}", order(r), action(r), r.email.retry),
                vec![(RETRY, "key-from-request-noise")],
            ),
            (
                "request id",
                |r| format!("k:{}:{}", order(r), r.email.request_id),
                vec![(RETRY, "key-from-request-noise")],
            ),
            (
                "jobId added",
                |r| format!("k:{}:{}:{}", order(r), action(r), r.job_id),
                vec![(RETRY, "key-from-job-id")],
            ),
            (
                "order alone",
                |r| format!("k:{}", order(r)),
                vec![(ACTION, "key-without-action")],
            ),
            (
                "order and customer",
                |r| format!("k:{}:{}", r.email.customer, order(r)),
                vec![(ACTION, "key-without-action")],
            ),
            (
                "customer and action",
                |r| format!("k:{}:{}", r.email.customer, action(r)),
                vec![(ORDER, "key-without-order")],
            ),
            (
                // Every confirmation shares one key, across the checks: each names it.
                "action alone",
                |r| format!("k:{}", action(r)),
                vec![
                    (ACTION, "key-without-order"),
                    (ORDER, "key-without-order"),
                    (APART, "key-without-order"),
                    (COPIES, "key-without-order"),
                ],
            ),
            (
                "no separator",
                |r| format!("k:{}{}", order(r), action(r)),
                vec![(APART, "fields-run-together")],
            ),
            (
                "dash",
                |r| format!("k:{}-{}", order(r), action(r)),
                vec![(APART, "fields-run-together")],
            ),
            (
                "action first, no separator",
                |r| format!("k:{}{}", action(r), order(r)),
                vec![(APART, "fields-run-together")],
            ),
            (
                "action first, dash",
                |r| format!("k-{}-{}", action(r), order(r)),
                vec![(APART, "fields-run-together")],
            ),
        ];
        for (what, key, expected) in cases {
            let report = simulate(&Code::key(key));
            assert_eq!(failures(&report), expected, "{what}:\n{}", report.to_text());
        }
    }

    #[test]
    fn correct_keys_pass_whatever_their_shape() {
        let keys: [fn(&Request) -> String; 4] = [
            |r| format!("order-email:email:{}:{}", order(r), action(r)),
            |r| format!("e|{}|{}|{}", r.email.customer, action(r), order(r)),
            |r| format!("e:{}", serde_json::json!([order(r), action(r)])),
            |r| format!("e:{}.{}:{}", order(r).len(), order(r), action(r)),
        ];
        for key in keys {
            let report = simulate(&Code::key(key));
            assert!(report.passed(), "{}", report.to_text());
        }
    }

    #[test]
    fn a_broken_claim_is_named_from_its_command() {
        let key = |r: &Request| format!("k:{}:{}", order(r), action(r));
        let report = simulate(&Code {
            key,
            nx: false,
            ttl: Some(86_400),
            effect_first: false,
        });
        let failed = failures(&report);
        assert_eq!(failed[0], (RETRY, "claim-not-held"), "{}", report.to_text());
        assert!(
            failed.contains(&(COPIES, "claim-not-exclusive")),
            "{failed:?}"
        );
        let report = simulate(&Code {
            key,
            nx: true,
            ttl: None,
            effect_first: false,
        });
        assert_eq!(failures(&report), [(EXPIRES, "claim-never-expires")]);
        let report = simulate(&Code {
            key,
            nx: true,
            ttl: Some(60),
            effect_first: false,
        });
        assert_eq!(failures(&report), [(EXPIRES, "ttl-too-short")]);
        assert!(
            report.to_text().contains("expires after 1.0 min")
                || report.to_text().contains("60.0 s"),
            "{}",
            report.to_text()
        );
    }

    // Sending first, then claiming: every check that sends one email several
    // times fails, and says the email went out before the claim.
    #[test]
    fn an_email_sent_before_its_claim_is_named_from_the_order_of_steps() {
        let key = |r: &Request| format!("k:{}:{}", order(r), action(r));
        let report = simulate(&Code {
            key,
            nx: true,
            ttl: Some(86_400),
            effect_first: true,
        });
        assert_eq!(
            failures(&report),
            [
                (RETRY, "effect-before-claim"),
                (COPIES, "effect-before-claim")
            ],
            "{}",
            report.to_text()
        );
        assert!(
            report
                .to_text()
                .contains("each sent BEFORE its delivery claimed `k:")
        );
    }
}
