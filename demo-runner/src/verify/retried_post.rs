//! Exercise 4's checks (the retried POST: `Idempotency-Key` at the API's front
//! door). Students need not edit this file.
//!
//! | check | what it sends | what it catches |
//! |---|---|---|
//! | `retry-replays` | an order whose answer is lost (the connection closes), its retry, and a second retry | nothing reserved (every retry is a new order), a finished key not replayed (a new order, a new id), an answer never stored (409 for ever) |
//! | `reordered-retry` | an order, then the same order with its keys reordered, then with nested keys reordered and spaces | a fingerprint of the raw bytes (422), nested objects left unsorted |
//! | `reused-key` | an order, then another order with the same key | no fingerprint (the first order's answer for the second), the fingerprint in the Redis key (a second order) |
//! | `double-click` | two requests with the same key at once, the first one slow, then a third | check-then-set (two orders) |
//! | `callers-scoped` | two callers, one key, the same order; two more, one key, two orders | keys not scoped by caller (B gets A's order, or 422) |
//! | `failure-released` | an order whose stock check fails (503, nothing enqueued), and its retry | a reservation kept after the failure (the retry refused) |
//! | `key-required` | an order without a key, with a malformed one, with a 300-byte one | a missing or malformed key accepted (400 expected) |
//! | `ttl` | reads the Redis key `begin` named (`GET /orders/{orderId}`) and the published policy (`GET /idempotency`) | no expiry, a TTL other than the policy's, no key named |
//!
//! Orders are counted where they are made: `GET /runs/{runId}/orders`, per caller.

use std::time::Duration;

use lab_schema::Exercise;
use lab_schema::orders::{self, OrderView, error_code};
use lab_schema::summary::plural;
use lab_schema::trace::{Step, Trace};
use serde_json::json;

use super::{Check, Grader, Mistake, Options, Report};
use crate::client::Api;
use crate::orders::{Exchange, OrderCall, of_account};
use crate::scenarios::new_run_id;

const RETRY: &str = "retry-replays";
const REORDERED: &str = "reordered-retry";
const REUSED: &str = "reused-key";
const DOUBLE_CLICK: &str = "double-click";
const CALLERS: &str = "callers-scoped";
const FAILURE: &str = "failure-released";
const KEY_REQUIRED: &str = "key-required";
const TTL: &str = "ttl";

/// The checks, in the order they are printed.
pub(super) const CHECKS: [&str; 8] = [
    RETRY,
    REORDERED,
    REUSED,
    DOUBLE_CLICK,
    CALLERS,
    FAILURE,
    KEY_REQUIRED,
    TTL,
];

/// This exercise's row in `verify`'s table ([`super::grader`]).
pub(crate) const GRADER: Grader = Grader {
    checks: &CHECKS,
    verify: |api, options| Box::pin(verify(api, options)),
};

/// Tries of a client that retries after no answer, a 5xx or a 409 (a second apart).
const TRIES: u32 = 4;

/// How long the double click's first request stays in flight.
const SLOW_MS: u64 = 600;

/// How far below the published TTL a fresh answer's TTL may be.
const TTL_SLACK_SECS: u64 = 120;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ex4Mistake {
    NothingReserved {
        orders: usize,
    },
    DoneNotReplayed {
        orders: usize,
    },
    AnswerNeverStored {
        outcome: String,
    },
    ReplayNotStored {
        replayed: String,
        created: String,
    },
    RawBytesFingerprint,
    NestedKeysNotSorted,
    NoFingerprint {
        answered: String,
    },
    FingerprintInKey,
    CheckThenSet,
    NotScopedByCaller {
        what: String,
    },
    NotReleased {
        outcome: String,
    },
    MissingKeyAccepted {
        outcome: String,
    },
    MalformedKeyAccepted {
        key: String,
        outcome: String,
    },
    RecordNotNamed,
    NoExpiry {
        record: String,
    },
    RecordGone {
        record: String,
    },
    TtlNotPolicy {
        record: String,
        ttl: i64,
        policy: u64,
    },
    /// `begin` reserved the key for longer than a request can be in flight.
    ReservationTooLong {
        key: String,
        /// `None`: no expiry.
        ttl_ms: Option<u64>,
    },
    Unexpected {
        what: String,
    },
}

impl Mistake for Ex4Mistake {
    fn code(&self) -> &'static str {
        use Ex4Mistake::*;
        match self {
            NothingReserved { .. } => "nothing-reserved",
            DoneNotReplayed { .. } => "done-not-replayed",
            AnswerNeverStored { .. } => "answer-never-stored",
            ReplayNotStored { .. } => "replay-not-stored-answer",
            RawBytesFingerprint => "raw-bytes-fingerprint",
            NestedKeysNotSorted => "nested-keys-not-sorted",
            NoFingerprint { .. } => "no-fingerprint",
            FingerprintInKey => "fingerprint-in-key",
            CheckThenSet => "check-then-set",
            NotScopedByCaller { .. } => "not-scoped-by-caller",
            NotReleased { .. } => "not-released",
            MissingKeyAccepted { .. } => "missing-key-accepted",
            MalformedKeyAccepted { .. } => "malformed-key-accepted",
            RecordNotNamed => "record-not-named",
            NoExpiry { .. } => "no-expiry",
            RecordGone { .. } => "record-gone",
            TtlNotPolicy { .. } => "ttl-not-policy",
            ReservationTooLong { .. } => "reservation-too-long",
            Unexpected { .. } => "unexpected-answer",
        }
    }

    fn message(&self) -> String {
        use Ex4Mistake::*;
        match self {
            NothingReserved { orders } => format!(
                "the retry with the same Idempotency-Key made a new order ({orders} orders for one): nothing records the key, so every request goes ahead. In begin, reserve the key in Redis in one atomic step (SET ... NX GET); in finish, store the answer with it"
            ),
            DoneNotReplayed { orders } => format!(
                "the retry made a new order with a new id ({orders} orders for one), although a request in flight is refused: once the first request has finished, begin lets the retry go ahead instead of answering the stored answer. When the key holds an answer with the same fingerprint, return Begin::Replay(answer)"
            ),
            AnswerNeverStored { outcome } => format!(
                "the retry was refused ({outcome}) long after the order was made: the key still says \"in flight\". finish must store the answer with the key, so that a retry gets it"
            ),
            ReplayNotStored { replayed, created } => format!(
                "the retry was answered as a replay, but with order {replayed} where the order made was {created}: a replay must send the stored answer itself (the same status and body), not a new one"
            ),
            RawBytesFingerprint => "the same order with its keys in another order was refused with 422: the fingerprint is taken of the request's bytes (or of its JSON in the order it came). Fingerprint the canonical JSON: every object's keys sorted, no spaces (serde_json's Value::sort_all_objects, then to_string, then SHA-256)".to_string(),
            NestedKeysNotSorted => "a retry whose nested object (shipTo) lists its keys in another order was refused with 422, while reordering the top-level keys passed: the canonical form sorts only the top level. Sort the keys of every object, at every depth".to_string(),
            NoFingerprint { answered } => format!(
                "another order sent with a used key got the first order's answer ({answered}): the key is compared, but not the request. Store the request's fingerprint with the key and answer Refusal::Mismatch (422) when a retry's differs"
            ),
            FingerprintInKey => "another order sent with a used key made a second order instead of 422: the fingerprint is part of the Redis key, so another body is another key. Key the record by caller and Idempotency-Key only, store the fingerprint inside it, and answer Refusal::Mismatch when they differ".to_string(),
            CheckThenSet => "two requests sent at once with the same key made two orders, although a retry after the first one finished is replayed: the key is checked (GET) and set later (after the order), so both requests saw it free. Reserve it in ONE atomic step before the order: SET key value NX GET EX 60, and answer Refusal::InFlight (409) to the request that finds it reserved".to_string(),
            NotScopedByCaller { what } => format!(
                "{what}: keys are not scoped by caller, so one client's key can collide with another's, and one client can receive another's stored answer. Put request.caller in the Redis key"
            ),
            NotReleased { outcome } => format!(
                "the retry after a failure before enqueue was refused ({outcome}): the failed request kept its reservation, so the client is locked out until it expires. In release, delete the reservation"
            ),
            MissingKeyAccepted { outcome } => format!(
                "an order without an Idempotency-Key was answered {outcome}: the route requires the key, since without one a retry cannot be recognised. Answer Refusal::MissingKey (400) for KeyHeader::Missing"
            ),
            MalformedKeyAccepted { key, outcome } => format!(
                "an order with the malformed key {key} was answered {outcome}: answer Refusal::MalformedKey (400) for KeyHeader::Malformed"
            ),
            RecordNotNamed => "the order names no idempotency record (Held.redis_key is None), so its TTL cannot be checked: set redis_key to the Redis key you reserve in begin".to_string(),
            NoExpiry { record } => format!(
                "{record} never expires (TTL -1): every key ever used stays in Redis for ever. Store the answer for the published TTL: SET ... EX ctx.answer_ttl_secs"
            ),
            RecordGone { record } => format!(
                "{record} no longer exists right after the order was made: the answer is not stored under the key begin named (is it deleted, or stored under another key?)"
            ),
            TtlNotPolicy {
                record,
                ttl,
                policy,
            } => format!(
                "{record} expires in {ttl} s, where the published policy (GET /idempotency) keeps answers {policy} s: store the answer with the ttl finish is given"
            ),
            ReservationTooLong { key, ttl_ms } => format!(
                "begin reserved {key} with {} while its request was in flight: an API process that dies between begin and finish locks the client's key that long, and every retry is refused (409). Reserve for ctx.in_flight_secs ({} s); only finish stores the answer for ctx.answer_ttl_secs. The lab accepts reservations up to {} s",
                super::traces::ttl_text(*ttl_ms),
                orders::IN_FLIGHT_SECS,
                orders::RESERVATION_BOUND_SECS
            ),
            Unexpected { what } => format!(
                "none of the mistakes this check knows explains what your API did: {what}. Read those answers against the published rules (GET /idempotency)"
            ),
        }
    }
}

/// One check's evidence, gathered before any judgement.
struct Evidence {
    exchanges: Vec<Exchange>,
    orders: Vec<OrderView>,
}

impl Evidence {
    fn outcomes(&self) -> String {
        self.exchanges
            .iter()
            .map(Exchange::outcome)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn orders_of(&self, account: &str) -> usize {
        of_account(&self.orders, account).len()
    }

    fn data(&self) -> serde_json::Value {
        json!({
            "answers": self.exchanges.iter().map(Exchange::outcome).collect::<Vec<_>>(),
            "orders": self.orders.iter().map(|o| json!({"orderId": o.order_id, "account": o.account})).collect::<Vec<_>>(),
        })
    }
}

/// The client of one check: its run, its callers and keys.
struct Client<'a> {
    api: &'a Api,
    run_id: String,
}

impl Client<'_> {
    fn call(&self, account: &str, key: Option<&str>, body: &str) -> OrderCall {
        OrderCall {
            account: crate::retried_post::caller(account, &self.run_id),
            key: key.map(|k| format!("{}-{k}", self.run_id)),
            run_id: self.run_id.clone(),
            body: body.to_string(),
        }
    }

    async fn evidence(&self, exchanges: Vec<Exchange>) -> anyhow::Result<Evidence> {
        Ok(Evidence {
            exchanges,
            orders: self.api.run_orders(&self.run_id).await?,
        })
    }
}

fn order(item: &str) -> String {
    json!({"item": item, "quantity": 1, "shipTo": {"name": "Ada", "city": "Lyon"}}).to_string()
}

fn order_with(item: &str, simulate: serde_json::Value) -> String {
    json!({"item": item, "quantity": 1, "shipTo": {"name": "Ada", "city": "Lyon"}, "simulate": simulate}).to_string()
}

/// Runs the checks.
pub(super) async fn verify(api: &Api, _options: &Options) -> anyhow::Result<Report> {
    let new = |name: &str| Client {
        api,
        run_id: new_run_id(&format!("verify-{name}")),
    };

    // retry-replays: the answer is lost, the client retries twice.
    let c = new("retry");
    let lost = c.call(
        "phone",
        Some("k"),
        &order_with("beans", json!({"dropAnswer": true})),
    );
    let mut exchanges = vec![api.post_order(&lost).await?];
    exchanges.extend(api.post_order_until_answered(&lost, TRIES).await?);
    exchanges.push(api.post_order(&lost).await?);
    let retry = c.evidence(exchanges).await?;
    let retry_account = lost.account.clone();

    // reordered-retry: the same order, its keys reordered, then nested keys and spaces.
    let c = new("reorder");
    let first = c.call("app", Some("k"), &order("grinder"));
    let top = OrderCall {
        body: r#"{"shipTo":{"name":"Ada","city":"Lyon"},"quantity":1,"item":"grinder"}"#.into(),
        ..first.clone()
    };
    let nested = OrderCall {
        body: "{ \"item\": \"grinder\",\n  \"quantity\": 1,\n  \"shipTo\": { \"city\": \"Lyon\", \"name\": \"Ada\" } }".into(),
        ..first.clone()
    };
    let reordered = c
        .evidence(vec![
            api.post_order(&first).await?,
            api.post_order(&top).await?,
            api.post_order(&nested).await?,
        ])
        .await?;
    let reordered_account = first.account.clone();

    // reused-key: another order with a used key.
    let c = new("reuse");
    let reuse_run = c.run_id.clone();
    let first = c.call("app", Some("k"), &order("filters"));
    let other = OrderCall {
        body: order("kettle"),
        ..first.clone()
    };
    let reused = c
        .evidence(vec![
            api.post_order(&first).await?,
            api.post_order(&other).await?,
        ])
        .await?;
    let reused_account = first.account.clone();

    // double-click: two at once (the first slow), then a third once both answered.
    let c = new("click");
    let click = c.call(
        "web",
        Some("k"),
        &order_with("moka-pot", json!({"slowMs": SLOW_MS})),
    );
    let (a, b) = tokio::join!(api.post_order(&click), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.post_order(&click).await
    });
    let pair = c.evidence(vec![a?, b?]).await?;
    let third = c.evidence(vec![api.post_order(&click).await?]).await?;
    let click_account = click.account.clone();

    // callers-scoped: two callers, one key, one order each.
    let c = new("callers");
    let a = c.call("shop-a", Some("shared"), &order("green-tea"));
    let b = c.call("shop-b", Some("shared"), &order("green-tea"));
    let d = c.call("shop-c", Some("other"), &order("black-tea"));
    let e = c.call("shop-d", Some("other"), &order("white-tea"));
    let callers = c
        .evidence(vec![
            api.post_order(&a).await?,
            api.post_order(&b).await?,
            api.post_order(&d).await?,
            api.post_order(&e).await?,
        ])
        .await?;
    let caller_accounts = [a.account, b.account, d.account, e.account];

    // failure-released: the stock check fails before enqueue, the client retries.
    let c = new("failure");
    let failing = c.call(
        "app",
        Some("k"),
        &order_with("mugs", json!({"failFirst": true})),
    );
    let failure = c
        .evidence(api.post_order_until_answered(&failing, TRIES).await?)
        .await?;

    // key-required: no key, a key with a space, a key of 300 bytes.
    let c = new("nokey");
    let missing = c.call("app", None, &order("scale"));
    let spaced = OrderCall {
        key: Some("my key".into()),
        ..missing.clone()
    };
    let long = OrderCall {
        key: Some("k".repeat(300)),
        ..missing.clone()
    };
    let required = c
        .evidence(vec![
            api.post_order(&missing).await?,
            api.post_order(&spaced).await?,
            api.post_order(&long).await?,
        ])
        .await?;

    // ttl: the record the reused-key check's first order named, and the policy.
    let policy = api.idempotency_policy().await?;
    let ttl_order = match of_account(&reused.orders, &reused_account).first() {
        Some(order) => Some(api.order(&order.order_id).await?),
        None => None,
    };
    let reuse_traces = api.request_traces(&reuse_run).await.unwrap_or_default();

    let retry_check = judge_retry(&retry, &retry_account, &pair, &click_account);
    let retry_failed = !retry_check.passed;
    let checks = vec![
        retry_check,
        judge_reordered(&reordered, &reordered_account, retry_failed),
        judge_reused(&reused, &reused_account, retry_failed),
        judge_double_click(&pair, &third, &click_account, retry_failed),
        judge_callers(&callers, &caller_accounts),
        judge_failure(&failure),
        judge_required(&required),
        judge_ttl(ttl_order.as_ref(), policy.ttl_secs, &reuse_traces),
    ];
    Ok(Report {
        exercise: Exercise::RetriedPost,
        checks,
        all_passed: "each logical order made exactly one order; retries got the stored answer",
    })
}

/// `201 replayed ord_7`, `409 idempotency_key_in_flight`.
fn shown(exchange: &Exchange) -> String {
    match exchange.order_id() {
        Some(id) => format!("{} {id}", exchange.outcome()),
        None => exchange.outcome(),
    }
}

fn is_replay_of(exchange: &Exchange, order_id: &str) -> bool {
    exchange.status == Some(201)
        && exchange.replayed()
        && exchange.order_id().as_deref() == Some(order_id)
}

fn judge_retry(evidence: &Evidence, account: &str, pair: &Evidence, click_account: &str) -> Check {
    let orders = of_account(&evidence.orders, account);
    let numbers = format!(
        "answers: {}; {} for one logical order",
        evidence.outcomes(),
        plural(orders.len() as u64, "order")
    );
    let retries = &evidence.exchanges[1..];
    let last_two: Vec<&Exchange> = retries.iter().rev().take(2).collect();
    let mistake = if orders.len() > 1 {
        // A reservation that refuses a request in flight, yet a new order for a finished key.
        let in_flight_refused = pair.orders_of(click_account) == 1
            && pair
                .exchanges
                .iter()
                .any(|e| e.error_code().as_deref() == Some(error_code::KEY_IN_FLIGHT));
        Some(if in_flight_refused {
            Ex4Mistake::DoneNotReplayed {
                orders: orders.len(),
            }
        } else {
            Ex4Mistake::NothingReserved {
                orders: orders.len(),
            }
        })
    } else if let Some(order) = orders.first() {
        if last_two.iter().all(|e| is_replay_of(e, &order.order_id))
            && last_two[0].body == last_two[1].body
        {
            None
        } else if let Some(stuck) = last_two
            .iter()
            .find(|e| e.error_code().as_deref() == Some(error_code::KEY_IN_FLIGHT))
        {
            Some(Ex4Mistake::AnswerNeverStored {
                outcome: stuck.outcome(),
            })
        } else if let Some(other) = last_two.iter().find(|e| e.replayed()) {
            Some(Ex4Mistake::ReplayNotStored {
                replayed: other.order_id().unwrap_or_else(|| "none".into()),
                created: order.order_id.clone(),
            })
        } else {
            Some(Ex4Mistake::Unexpected {
                what: format!(
                    "the retries of an order whose answer was lost were answered {}",
                    last_two
                        .iter()
                        .map(|e| shown(e))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
        }
    } else {
        Some(Ex4Mistake::Unexpected {
            what: "an order whose answer was lost was never made".into(),
        })
    };
    Check::judged(
        RETRY,
        numbers,
        mistake.as_ref().map(|m| m as _),
        evidence.data(),
    )
}

fn judge_reordered(evidence: &Evidence, account: &str, retry_failed: bool) -> Check {
    let orders = of_account(&evidence.orders, account);
    let numbers = format!(
        "answers: {}; {} for one logical order",
        evidence.outcomes(),
        plural(orders.len() as u64, "order")
    );
    let [_, top, nested] = &evidence.exchanges[..] else {
        unreachable!("three exchanges")
    };
    if orders.len() > 1 && retry_failed {
        return same_as_retry(REORDERED, numbers, evidence.data());
    }
    let refused = |e: &Exchange| e.error_code().as_deref() == Some(error_code::KEY_REUSED);
    let mistake = match orders.first() {
        _ if orders.len() > 1 => Some(Ex4Mistake::FingerprintInKey),
        Some(order)
            if is_replay_of(top, &order.order_id) && is_replay_of(nested, &order.order_id) =>
        {
            None
        }
        Some(_) if refused(top) => Some(Ex4Mistake::RawBytesFingerprint),
        Some(_) if refused(nested) => Some(Ex4Mistake::NestedKeysNotSorted),
        _ => Some(Ex4Mistake::Unexpected {
            what: format!(
                "the reordered retries were answered {}, {}",
                shown(top),
                shown(nested)
            ),
        }),
    };
    Check::judged(
        REORDERED,
        numbers,
        mistake.as_ref().map(|m| m as _),
        evidence.data(),
    )
}

/// A check that fails for the mistake `retry-replays` already names.
fn same_as_retry(name: &'static str, numbers: String, data: serde_json::Value) -> Check {
    Check {
        name,
        passed: false,
        numbers,
        diagnosis: None,
        data,
        trace: Vec::new(),
    }
    .same_as(RETRY)
}

fn judge_reused(evidence: &Evidence, account: &str, retry_failed: bool) -> Check {
    let orders = of_account(&evidence.orders, account);
    let second = &evidence.exchanges[1];
    let numbers = format!(
        "answers: {}; {} (the second order must be refused)",
        evidence.outcomes(),
        plural(orders.len() as u64, "order")
    );
    if orders.len() > 1 && retry_failed {
        return same_as_retry(REUSED, numbers, evidence.data());
    }
    let mistake = if orders.len() > 1 {
        Some(Ex4Mistake::FingerprintInKey)
    } else if second.status == Some(422)
        && second.error_code().as_deref() == Some(error_code::KEY_REUSED)
    {
        None
    } else if second.replayed() {
        Some(Ex4Mistake::NoFingerprint {
            answered: shown(second),
        })
    } else {
        Some(Ex4Mistake::Unexpected {
            what: format!(
                "another order with a used key was answered {}",
                shown(second)
            ),
        })
    };
    Check::judged(
        REUSED,
        numbers,
        mistake.as_ref().map(|m| m as _),
        evidence.data(),
    )
}

fn judge_double_click(
    pair: &Evidence,
    third: &Evidence,
    account: &str,
    retry_failed: bool,
) -> Check {
    let during = pair.orders_of(account);
    let after = third.orders_of(account);
    let numbers = format!(
        "two at once: {}; then: {}; {} for one logical order",
        pair.outcomes(),
        third.outcomes(),
        plural(after as u64, "order")
    );
    let data = json!({"pair": pair.data(), "then": third.data()});
    if (during > 1 || after > during) && retry_failed {
        return same_as_retry(DOUBLE_CLICK, numbers, data);
    }
    let order_id = of_account(&pair.orders, account)
        .first()
        .map(|o| o.order_id.clone())
        .unwrap_or_default();
    let fine = |e: &Exchange| {
        (e.status == Some(201) && e.order_id().as_deref() == Some(order_id.as_str()))
            || e.error_code().as_deref() == Some(error_code::KEY_IN_FLIGHT)
    };
    let mistake = if during > 1 {
        Some(Ex4Mistake::CheckThenSet)
    } else if during == 1
        && pair.exchanges.iter().all(fine)
        && is_replay_of(&third.exchanges[0], &order_id)
        && after == 1
    {
        None
    } else {
        Some(Ex4Mistake::Unexpected {
            what: format!(
                "a double click was answered {}, then {}",
                pair.outcomes(),
                third.outcomes()
            ),
        })
    };
    Check::judged(
        DOUBLE_CLICK,
        numbers,
        mistake.as_ref().map(|m| m as _),
        data,
    )
}

fn judge_callers(evidence: &Evidence, accounts: &[String; 4]) -> Check {
    let [a, b, c, d] = &evidence.exchanges[..] else {
        unreachable!("four exchanges")
    };
    let each: Vec<usize> = accounts.iter().map(|x| evidence.orders_of(x)).collect();
    let numbers = format!(
        "same key, same order: A {}, B {}; same key, two orders: C {}, D {}; orders per caller {each:?}",
        shown(a),
        shown(b),
        shown(c),
        shown(d),
    );
    let mistake = if b.replayed() {
        Some(Ex4Mistake::NotScopedByCaller {
            what: format!(
                "caller B received caller A's order ({}) for its own request",
                shown(b)
            ),
        })
    } else if d.status == Some(422) {
        Some(Ex4Mistake::NotScopedByCaller {
            what: "caller D's order was refused with 422 because caller C had used the same key"
                .into(),
        })
    } else if each.iter().all(|&n| n == 1)
        && [a, b, c, d]
            .iter()
            .all(|e| e.status == Some(201) && !e.replayed())
    {
        None
    } else {
        Some(Ex4Mistake::Unexpected {
            what: format!(
                "four callers' first orders were answered {}",
                evidence.outcomes()
            ),
        })
    };
    Check::judged(
        CALLERS,
        numbers,
        mistake.as_ref().map(|m| m as _),
        evidence.data(),
    )
}

fn judge_failure(evidence: &Evidence) -> Check {
    let orders = evidence.orders.len();
    let numbers = format!(
        "answers: {}; {} for one logical order",
        evidence.outcomes(),
        plural(orders as u64, "order")
    );
    let first_failed = evidence.exchanges[0].status == Some(503);
    let last = evidence.exchanges.last().expect("one exchange at least");
    let mistake = if first_failed && last.status == Some(201) && !last.replayed() && orders == 1 {
        None
    } else if last.error_code().as_deref() == Some(error_code::KEY_IN_FLIGHT) {
        Some(Ex4Mistake::NotReleased {
            outcome: format!("{} times {}", evidence.exchanges.len() - 1, last.outcome()),
        })
    } else {
        Some(Ex4Mistake::Unexpected {
            what: format!(
                "an order that failed before enqueue, then its retries, were answered {}",
                evidence.outcomes()
            ),
        })
    };
    Check::judged(
        FAILURE,
        numbers,
        mistake.as_ref().map(|m| m as _),
        evidence.data(),
    )
}

fn judge_required(evidence: &Evidence) -> Check {
    let [missing, spaced, long] = &evidence.exchanges[..] else {
        unreachable!("three exchanges")
    };
    let numbers = format!(
        "no key: {}; key \"my key\": {}; 300-byte key: {}; {}",
        missing.outcome(),
        spaced.outcome(),
        long.outcome(),
        plural(evidence.orders.len() as u64, "order")
    );
    // Any 400 will do: which of the two refusals a student picks for a malformed
    // key is a detail; an order made without a usable key is the mistake.
    let refused = |e: &Exchange| e.status == Some(400);
    let mistake = if !refused(missing) {
        Some(Ex4Mistake::MissingKeyAccepted {
            outcome: missing.outcome(),
        })
    } else if !refused(spaced) {
        Some(Ex4Mistake::MalformedKeyAccepted {
            key: "\"my key\"".into(),
            outcome: spaced.outcome(),
        })
    } else if !refused(long) {
        Some(Ex4Mistake::MalformedKeyAccepted {
            key: "of 300 bytes".into(),
            outcome: long.outcome(),
        })
    } else if !evidence.orders.is_empty() {
        Some(Ex4Mistake::Unexpected {
            what: "refused orders were made anyway".into(),
        })
    } else {
        None
    };
    Check::judged(
        KEY_REQUIRED,
        numbers,
        mistake.as_ref().map(|m| m as _),
        evidence.data(),
    )
}

/// The reservation `begin` left for the first request it let through: its
/// key and PTTL (ms) right after `begin` returned, and that request's trace.
fn reservation(traces: &[Trace]) -> Option<(String, i64, &Trace)> {
    traces.iter().find_map(|trace| {
        let proceeded = trace
            .steps()
            .any(|(s, d)| s == Step::Called && d.starts_with("begin -> Proceed"));
        let (key, _, pttl) = *trace.keys_at(Step::Called).first()?;
        proceeded.then(|| (key.to_string(), pttl, trace))
    })
}

fn judge_ttl(order: Option<&OrderView>, policy: u64, traces: &[Trace]) -> Check {
    let record = order.and_then(|o| o.idempotency_record.clone());
    let ttl = order.and_then(|o| o.idempotency_record_ttl_secs);
    let reserved = reservation(traces);
    let numbers = format!(
        "reservation {}, record {}, TTL {}, published policy {policy} s",
        match &reserved {
            Some((_, -1, _)) => "with no expiry".to_string(),
            // Whole seconds, rounded up: 59 999 ms right after `EX 60` reads 60 s.
            Some((_, ms, _)) => format!("for {} s", (*ms as u64).div_ceil(1000)),
            None => "not seen".to_string(),
        },
        record.as_deref().unwrap_or("(none named)"),
        ttl.map(|t| format!("{t} s")).unwrap_or_else(|| "?".into())
    );
    let bound_ms = orders::RESERVATION_BOUND_SECS as i64 * 1000;
    let too_long = reserved.as_ref().and_then(|(key, pttl, _)| {
        (*pttl == -1 || *pttl > bound_ms).then(|| Ex4Mistake::ReservationTooLong {
            key: key.clone(),
            ttl_ms: (*pttl >= 0).then_some(*pttl as u64),
        })
    });
    let shown = reserved
        .as_ref()
        .map(|(_, _, trace)| super::traces::excerpt(&[*trace], 10))
        .unwrap_or_default();
    let mistake = too_long.or(match (order, record, ttl) {
        (None, _, _) => Some(Ex4Mistake::Unexpected {
            what: "no order was made to read its record".into(),
        }),
        (_, None, _) => Some(Ex4Mistake::RecordNotNamed),
        (_, Some(record), Some(-1)) => Some(Ex4Mistake::NoExpiry { record }),
        (_, Some(record), Some(ttl)) if ttl < 0 => Some(Ex4Mistake::RecordGone { record }),
        (_, Some(record), Some(ttl))
            if (ttl as u64) > policy || (ttl as u64) + TTL_SLACK_SECS < policy =>
        {
            Some(Ex4Mistake::TtlNotPolicy {
                record,
                ttl,
                policy,
            })
        }
        (_, Some(_), Some(_)) => None,
        (_, Some(record), None) => Some(Ex4Mistake::RecordGone { record }),
    });
    Check::judged(
        TTL,
        numbers,
        mistake.as_ref().map(|m| m as _),
        json!({
            "ttlSecs": ttl,
            "policySecs": policy,
            "reservationPttlMs": reserved.as_ref().map(|(_, ms, _)| *ms),
        }),
    )
    .with_trace(shown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::traces::tests::trace;

    fn order_view(ttl: i64) -> OrderView {
        OrderView {
            order_id: "ord_1".into(),
            run_id: "r".into(),
            account: "app".into(),
            idempotency_key: Some("k".into()),
            status: "queued".into(),
            idempotency_record: Some("idem:app/k".into()),
            idempotency_record_ttl_secs: Some(ttl),
        }
    }

    fn request(reserve: &str, pttl: i64) -> Trace {
        trace(
            "api",
            "1",
            1,
            &[
                reserve,
                "! called begin -> Proceed(redis_key: Some(\"idem:app/k\"))",
                &format!("@ idem:app/k in-flight {pttl}"),
                "> SET idem:app/k answer EX 86400",
                "! called finish -> Ok",
                "@ idem:app/k answer 86400000",
            ],
        )
    }

    #[test]
    fn a_reservation_with_the_answers_ttl_fails_ttl_though_the_answer_is_right() {
        let traces = [request(
            "> SET idem:app/k in-flight NX GET EX 86400 = (nil)",
            86_399_999,
        )];
        let check = judge_ttl(Some(&order_view(86_399)), 86_400, &traces);
        assert!(!check.passed);
        let diagnosis = check.diagnosis.unwrap();
        assert_eq!(diagnosis.code, "reservation-too-long");
        assert!(
            diagnosis.message.contains("86,399,999 ms"),
            "{}",
            diagnosis.message
        );
        assert!(
            check.trace.iter().any(|l| l.contains("NX GET EX 86400")),
            "{:?}",
            check.trace
        );
    }

    #[test]
    fn a_reservation_for_the_in_flight_time_passes() {
        let traces = [request(
            "> SET idem:app/k in-flight NX GET EX 60 = (nil)",
            59_990,
        )];
        let check = judge_ttl(Some(&order_view(86_399)), 86_400, &traces);
        assert!(check.passed, "{:?}", check.diagnosis);
        assert!(
            check.numbers.contains("reservation for 60 s"),
            "{}",
            check.numbers
        );
    }

    #[test]
    fn a_reservation_without_expiry_is_too_long() {
        let traces = [request("> EVALSHA abc 1 idem:app/k in-flight = 1", -1)];
        let check = judge_ttl(Some(&order_view(86_399)), 86_400, &traces);
        assert_eq!(check.diagnosis.unwrap().code, "reservation-too-long");
    }
}
