//! `POST /orders` (exercise 4's route) over real HTTP against a real
//! redis-server, as students get it (the starter `idempotency.rs`): the server
//! assigns every order its id, bad requests are refused and change nothing,
//! and the lab's faults (a lost answer, a failure before enqueue, a slow stock
//! check) happen for real. Exercise 4's fix is tested by `verify --exercise 4`
//! against the reference solution, its variants and its fixtures (lab-tests).

use std::time::{Duration, Instant};

use lab_testkit::RedisServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Api {
    url: String,
    _redis: RedisServer,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The API over its own redis-server, keeping answers `ttl_secs`.
async fn start(ttl_secs: u64) -> Api {
    let redis = RedisServer::start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let redis_url = redis.url();
    tokio::spawn(async move {
        api::serve(listener, &redis_url, Duration::from_secs(ttl_secs), async {
            let _ = stopped.await;
        })
        .await
    });
    Api {
        url,
        _redis: redis,
        _stop: stop,
    }
}

impl Api {
    /// `POST /orders` as `account` (None: no Authorization), with `key`, in run `run`.
    async fn post(
        &self,
        account: Option<&str>,
        key: Option<&str>,
        run: &str,
        body: &str,
    ) -> reqwest::Result<reqwest::Response> {
        let mut request = reqwest::Client::new()
            .post(format!("{}/orders", self.url))
            .header("content-type", "application/json")
            .header("lab-run-id", run)
            .body(body.to_string());
        if let Some(account) = account {
            request = request.header("authorization", format!("Bearer {account}"));
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await
    }

    async fn orders(&self, run: &str) -> (StatusCode, Value) {
        let response = reqwest::get(format!("{}/runs/{run}/orders", self.url))
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }
}

fn order(item: &str, simulate: Value) -> String {
    let mut body = json!({"item": item, "quantity": 2, "shipTo": {"name": "Ada", "city": "Lyon"}});
    if !simulate.is_null() {
        body["simulate"] = simulate;
    }
    body.to_string()
}

// The incident: without the exercise's fix, the same POST twice is two orders
// with two server-assigned ids, key or no key; both are listed and enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_fix_every_request_is_a_new_order() {
    let api = start(86_400).await;
    let body = order("beans", Value::Null);
    let mut ids = Vec::new();
    for key in [Some("k1"), Some("k1"), None] {
        let response = api.post(Some("shop"), key, "r1", &body).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(response.headers().get("idempotent-replayed").is_none());
        let created: Value = response.json().await.unwrap();
        assert_eq!(created["runId"], "r1");
        assert_eq!(created["item"], "beans");
        ids.push(created["orderId"].as_str().unwrap().to_string());
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let (status, listed) = api.orders("r1").await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<&str> = listed["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["orderId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids);
    let one: Value = reqwest::get(format!("{}/orders/{}", api.url, ids[0]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["account"], "shop");
    assert_eq!(one["idempotencyKey"], "k1");
    assert_eq!(one["status"], "queued");
    // The starter names no idempotency record.
    assert_eq!(one["idempotencyRecord"], Value::Null);
}

// Bad requests get a clear 4xx and create nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_create_nothing() {
    let api = start(86_400).await;
    let good = order("beans", Value::Null);
    let cases: [(Option<&str>, &str, StatusCode, &str); 8] = [
        (None, &good, StatusCode::UNAUTHORIZED, "unauthenticated"),
        (
            Some("a/b"),
            &good,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            Some("shop"),
            "not json",
            StatusCode::BAD_REQUEST,
            "invalid_order",
        ),
        (
            Some("shop"),
            "[1]",
            StatusCode::BAD_REQUEST,
            "invalid_order",
        ),
        (
            Some("shop"),
            r#"{"item":"a","quantity":0}"#,
            StatusCode::BAD_REQUEST,
            "invalid_order",
        ),
        (
            Some("shop"),
            r#"{"item":"a","quantity":1,"colour":"red"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_order",
        ),
        (
            Some("shop"),
            r#"{"item":"a","item":"b","quantity":1}"#,
            StatusCode::BAD_REQUEST,
            "invalid_order",
        ),
        (
            Some("shop"),
            r#"{"item":"a","quantity":1,"simulate":{"slowMs":999999}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_order",
        ),
    ];
    for (account, body, status, code) in cases {
        let response = api.post(account, Some("k"), "bad", body).await.unwrap();
        assert_eq!(response.status(), status, "{account:?} {body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
        assert!(!error["error"]["message"].as_str().unwrap().is_empty());
    }
    let text = reqwest::Client::new()
        .post(format!("{}/orders", api.url))
        .header("authorization", "Bearer shop")
        .header("content-type", "text/plain")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = api.orders("bad").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no order was created");
    let missing = reqwest::get(format!("{}/orders/ord_999", api.url))
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

// simulate.dropAnswer: the order is made and enqueued, then the connection
// closes without a byte of the answer, once per caller and key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_answer_closes_the_connection_after_the_order_is_made() {
    let api = start(86_400).await;
    let body = order("beans", json!({"dropAnswer": true}));
    let lost = api.post(Some("phone"), Some("k"), "drop", &body).await;
    let err = lost.expect_err("no answer at all");
    assert!(!err.is_connect(), "{err}");
    let (_, listed) = api.orders("drop").await;
    assert_eq!(listed["orders"].as_array().unwrap().len(), 1);
    let again = api
        .post(Some("phone"), Some("k"), "drop", &body)
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    // Another caller with the same key meets its own first time.
    let other = api.post(Some("tablet"), Some("k"), "drop", &body).await;
    assert!(other.is_err());
}

// simulate.failFirst: 503 before anything is enqueued, once; slowMs holds the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_before_enqueue_creates_nothing_and_slow_orders_take_their_time() {
    let api = start(86_400).await;
    let body = order("mugs", json!({"failFirst": true}));
    let failed = api
        .post(Some("shop"), Some("k"), "fail", &body)
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error: Value = failed.json().await.unwrap();
    assert_eq!(error["error"]["code"], "stock_unavailable");
    let (status, _) = api.orders("fail").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was enqueued");
    let retried = api
        .post(Some("shop"), Some("k"), "fail", &body)
        .await
        .unwrap();
    assert_eq!(retried.status(), StatusCode::CREATED);

    let started = Instant::now();
    let slow = api
        .post(
            Some("shop"),
            Some("s"),
            "fail",
            &order("kettle", json!({"slowMs": 400})),
        )
        .await
        .unwrap();
    assert_eq!(slow.status(), StatusCode::CREATED);
    assert!(started.elapsed() >= Duration::from_millis(400));
}

// The key policy is published, with the configured TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_policy_is_published_with_its_ttl() {
    let api = start(3_600).await;
    let policy: Value = reqwest::get(format!("{}/idempotency", api.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(policy["header"], "Idempotency-Key");
    assert_eq!(policy["ttlSecs"], 3_600);
    let rules = policy["rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r.as_str().unwrap().contains("3600 s")));
    // The API names the code it runs, for the summaries.
    let workers: Value = reqwest::get(format!("{}/workers", api.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = &workers["api"]["code"]["api/src/idempotency.rs"];
    assert_eq!(code.as_str().unwrap().len(), 6, "{workers}");
}
