//! Scenario `retried-post` (exercise 4): clients of `POST /orders` that retry,
//! double-click, reorder their JSON, reuse a key, forget it, or meet a failure,
//! each as a real HTTP exchange with the API. Then the orders the API created
//! per logical order. Students need not edit this file.

use std::time::{Duration, Instant};

use lab_schema::measured::OrderCounts;
use lab_schema::orders::OrderView;
use lab_schema::{Measured, RunSummary};
use serde_json::json;

use crate::client::Api;
use crate::orders::{Exchange, OrderCall, of_account};
use crate::registry::{Run, RunScenario};
use crate::report::ScenarioRun;
use crate::scenarios::new_run_id;
use crate::wait::wait_settled;

/// Tries of a client that retries (no answer, 5xx, 409).
const TRIES: u32 = 6;

/// One client story: who calls, what it sends, how many orders a correct API
/// creates for it, and the answer each client must end with.
struct Case {
    name: &'static str,
    /// The callers of the case (their orders are the case's orders).
    accounts: Vec<String>,
    /// Orders a correct API creates for this case.
    expected: u64,
    exchanges: Vec<Exchange>,
    /// The exchanges that end a client's story (its last answer), and what a
    /// correct API answers there.
    finals: Vec<(usize, Final)>,
}

/// The answer a client must end with.
#[derive(Debug, Clone, Copy)]
enum Final {
    /// 201 with one of this caller's own orders (replayed or not).
    OwnOrder,
    /// Refused with this status (no order for this request).
    Refused(u16),
}

impl Case {
    /// The finals whose answer is not what a correct API gives.
    fn wrong_answers(&self, orders: &[OrderView]) -> u64 {
        self.finals
            .iter()
            .filter(|(i, want)| {
                let exchange = &self.exchanges[*i];
                let right = match want {
                    Final::OwnOrder => {
                        exchange.status == Some(201)
                            && exchange.order_id().is_some_and(|id| {
                                of_account(orders, &exchange.call.account)
                                    .iter()
                                    .any(|o| o.order_id == id)
                            })
                    }
                    Final::Refused(status) => exchange.status == Some(*status),
                };
                !right
            })
            .count() as u64
    }
}

/// The last exchange of a client's story.
fn last(exchanges: &[Exchange], want: Final) -> Vec<(usize, Final)> {
    vec![(exchanges.len() - 1, want)]
}

/// The body of an order, as compact JSON.
fn order(item: &str, simulate: serde_json::Value) -> String {
    let mut body = json!({
        "item": item,
        "quantity": 2,
        "shipTo": { "name": "Ada", "city": "Lyon" },
    });
    if !simulate.is_null() {
        body["simulate"] = simulate;
    }
    body.to_string()
}

/// `retried-post`: see the module's documentation.
pub async fn retried_post(
    api: &Api,
    scenario: &'static str,
    timeout: Duration,
    narrate_to_stdout: bool,
    show_http: bool,
) -> anyhow::Result<ScenarioRun> {
    let run_id = new_run_id(scenario);
    let started = Instant::now();
    // Keys and callers are new in every run, so a rerun never meets an old answer.
    let key = |name: &str| Some(format!("{run_id}-{name}"));
    let who = |name: &str| caller(name, &run_id);
    let call = |account: &str, key: Option<String>, body: &str| OrderCall {
        account: account.to_string(),
        key,
        run_id: run_id.clone(),
        body: body.to_string(),
    };
    let mut cases = Vec::new();

    // 1. The answer is lost on the way back; the phone retries.
    let phone = who("phone");
    let body = order("espresso-beans", json!({ "dropAnswer": true }));
    let exchanges = api
        .post_order_until_answered(&call(&phone, key("lost-answer"), &body), TRIES)
        .await?;
    cases.push(Case {
        name: "lost-answer",
        accounts: vec![phone],
        expected: 1,
        finals: last(&exchanges, Final::OwnOrder),
        exchanges,
    });

    // 2. Two callers happen to pick the same key, each for its own order.
    let (shop_a, shop_b) = (who("shop-a"), who("shop-b"));
    let shared = key("order-1");
    let mut exchanges = vec![
        api.post_order(&call(
            &shop_a,
            shared.clone(),
            &order("green-tea", json!(null)),
        ))
        .await?,
    ];
    exchanges.push(
        api.post_order(&call(&shop_b, shared, &order("green-tea", json!(null))))
            .await?,
    );
    cases.push(Case {
        name: "two-callers-one-key",
        accounts: vec![shop_a, shop_b],
        expected: 2,
        exchanges,
        finals: vec![(0, Final::OwnOrder), (1, Final::OwnOrder)],
    });

    // 3. A double click: two requests at once, while the first is still in flight.
    let web = who("web");
    let slow = order("moka-pot", json!({ "slowMs": 300 }));
    let click = call(&web, key("double-click"), &slow);
    let (first, second) = tokio::join!(api.post_order_until_answered(&click, TRIES), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        api.post_order_until_answered(&click, TRIES).await
    });
    let mut exchanges = first?;
    let first_last = exchanges.len() - 1;
    exchanges.extend(second?);
    cases.push(Case {
        name: "double-click",
        accounts: vec![web],
        expected: 1,
        finals: vec![
            (first_last, Final::OwnOrder),
            (exchanges.len() - 1, Final::OwnOrder),
        ],
        exchanges,
    });

    // 4. The retry's JSON library writes the same order with its keys in another order.
    let app = who("app-reorder");
    let first = order("grinder", json!(null));
    let reordered =
        r#"{ "shipTo": { "city": "Lyon", "name": "Ada" }, "quantity": 2, "item": "grinder" }"#;
    let exchanges = vec![
        api.post_order(&call(&app, key("reordered"), &first))
            .await?,
        api.post_order(&call(&app, key("reordered"), reordered))
            .await?,
    ];
    cases.push(Case {
        name: "reordered-retry",
        accounts: vec![app],
        expected: 1,
        exchanges,
        finals: vec![(1, Final::OwnOrder)],
    });

    // 5. A client bug: the same key sent with a different order.
    let app = who("app-reuse");
    let exchanges = vec![
        api.post_order(&call(&app, key("reused"), &order("filters", json!(null))))
            .await?,
        api.post_order(&call(&app, key("reused"), &order("kettle", json!(null))))
            .await?,
    ];
    cases.push(Case {
        name: "key-reused",
        accounts: vec![app],
        expected: 1,
        exchanges,
        finals: vec![(0, Final::OwnOrder), (1, Final::Refused(422))],
    });

    // 6. No key at all, and the answer is lost: the retry cannot be recognised.
    let app = who("app-nokey");
    let body = order("scale", json!({ "dropAnswer": true }));
    let exchanges = api
        .post_order_until_answered(&call(&app, None, &body), TRIES)
        .await?;
    cases.push(Case {
        name: "missing-key",
        accounts: vec![app],
        expected: 0,
        finals: last(&exchanges, Final::Refused(400)),
        exchanges,
    });

    // 7. The stock check fails before anything is enqueued; the client retries.
    let app = who("app-fail");
    let body = order("mugs", json!({ "failFirst": true }));
    let exchanges = api
        .post_order_until_answered(&call(&app, key("failed-first"), &body), TRIES)
        .await?;
    cases.push(Case {
        name: "failure-then-retry",
        accounts: vec![app],
        expected: 1,
        finals: last(&exchanges, Final::OwnOrder),
        exchanges,
    });

    let orders = api.run_orders(&run_id).await?;
    let created = orders.len() as u64;
    let summary = if created > 0 {
        wait_settled(api, &run_id, created, started + timeout).await?
    } else {
        RunSummary {
            run_id: run_id.clone(),
            drained: true,
            settled: true,
            ..RunSummary::default()
        }
    };

    let mut narration = Vec::new();
    let (mut extra, mut missing, mut expected, mut wrong) = (0, 0, 0, 0);
    for case in &cases {
        let made = case_orders(&orders, &case.accounts);
        let outcomes: Vec<String> = case.exchanges.iter().map(Exchange::outcome).collect();
        let wrong_here = case.wrong_answers(&orders);
        wrong += wrong_here;
        narration.push(format!(
            "case {}: {} -> {} (expected {}){}",
            case.name,
            outcomes.join(", "),
            lab_schema::summary::plural(made, "order"),
            case.expected,
            if wrong_here > 0 {
                format!(
                    ", {}",
                    lab_schema::summary::plural(wrong_here, "wrong final answer")
                )
            } else {
                String::new()
            }
        ));
        extra += made.saturating_sub(case.expected);
        missing += case.expected.saturating_sub(made);
        expected += case.expected;
        if show_http {
            for exchange in &case.exchanges {
                narration.push(format!("--- {} ---\n{}", case.name, exchange.to_http()));
            }
        }
    }
    for line in &narration {
        if narrate_to_stdout {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    }
    let all: Vec<&Exchange> = cases.iter().flat_map(|c| &c.exchanges).collect();
    let counts = OrderCounts {
        answers_dropped: all.iter().filter(|e| e.status.is_none()).count() as u64,
        expected_orders: expected,
        orders_created: created,
        extra_orders: extra,
        missing_orders: missing,
        wrong_answers: wrong,
        replays: all.iter().filter(|e| e.replayed()).count() as u64,
        requests: all.len() as u64,
        statuses: statuses(&all),
    };
    let mut result = ScenarioRun::new(scenario, summary, started, Measured::Orders(counts));
    result.narration = narration;
    Ok(result)
}

/// A caller's account, new in every run: `shop-a-<ms>-<hex>`, the tail of the run id.
pub(crate) fn caller(name: &str, run_id: &str) -> String {
    let tail = run_id.rsplitn(3, '-').take(2).collect::<Vec<_>>();
    format!("{name}-{}-{}", tail[1], tail[0])
}

/// The orders the callers of a case got.
fn case_orders(orders: &[OrderView], accounts: &[String]) -> u64 {
    accounts
        .iter()
        .map(|a| of_account(orders, a).len() as u64)
        .sum()
}

/// `201:6,400:2,409:1,503:1,none:2`: how many answers of each status.
fn statuses(exchanges: &[&Exchange]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for exchange in exchanges {
        let status = exchange
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "none".to_string());
        *counts.entry(status).or_insert(0u64) += 1;
    }
    counts
        .iter()
        .map(|(status, n)| format!("{status}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `retried-post`'s command line.
#[derive(clap::Args, Debug, Clone)]
pub struct RetriedPost {
    /// Print every request and answer as raw HTTP.
    #[arg(long)]
    pub show_http: bool,
}

impl RunScenario for RetriedPost {
    async fn run(&self, run: &Run<'_>) -> anyhow::Result<ScenarioRun> {
        retried_post(
            run.api,
            run.name,
            run.timeout,
            run.narrate_to_stdout,
            self.show_http,
        )
        .await
    }
}
