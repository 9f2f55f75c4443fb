//! The provider over real HTTP against a real redis-server (one per test):
//! Idempotency-Key semantics, the simulated faults, the instructor's outage,
//! the request log, and bad input that records nothing.

use std::time::{Duration, Instant};

use lab_schema::provider::{
    CHARGES_PATH, Faults, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, LAB_DELIVERY_ID, LAB_JOB_ID,
    LAB_PIPELINE, LAB_RUN_ID, RequestOutcome, RunRequests, requests_path,
};
use lab_testkit::RedisServer;
use redis::aio::MultiplexedConnection;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The provider, in-process on a free port, over its own redis-server.
struct Provider {
    url: String,
    redis_url: String,
    http: reqwest::Client,
    _redis: Option<RedisServer>,
    _provider: provider::Background,
}

async fn start_with(redis: Option<RedisServer>, config: provider::Config) -> Provider {
    let redis_url = match &redis {
        Some(server) => server.url(),
        // Nothing listens here: Redis is "down".
        None => format!("redis://127.0.0.1:{}", lab_testkit::free_port()),
    };
    let background = provider::spawn(&redis_url, config).await.unwrap();
    Provider {
        url: background.url.clone(),
        redis_url,
        http: reqwest::Client::new(),
        _redis: redis,
        _provider: background,
    }
}

async fn start() -> Provider {
    start_with(Some(RedisServer::start()), provider::Config::default()).await
}

/// One charge request: the lab's headers of job `job` in run `run`.
struct Charge<'a> {
    account: &'a str,
    key: Option<&'a str>,
    run: &'a str,
    job: &'a str,
    body: String,
}

fn body(customer: &str, amount: u64) -> Value {
    json!({ "customer": customer, "amountCents": amount, "currency": "EUR", "description": "lab" })
}

impl<'a> Charge<'a> {
    fn new(key: Option<&'a str>, job: &'a str, body: &Value) -> Charge<'a> {
        Charge {
            account: "lab",
            key,
            run: "run-1",
            job,
            body: body.to_string(),
        }
    }

    fn request(&self, provider: &Provider) -> reqwest::RequestBuilder {
        let mut request = provider
            .http
            .post(format!("{}{CHARGES_PATH}", provider.url))
            .header("authorization", format!("Bearer {}", self.account))
            .header("content-type", "application/json")
            .header(LAB_RUN_ID, self.run)
            .header(LAB_JOB_ID, self.job)
            .header(LAB_DELIVERY_ID, "1700000000000-0")
            .header(LAB_PIPELINE, "payments")
            .body(self.body.clone());
        if let Some(key) = self.key {
            request = request.header(IDEMPOTENCY_KEY, key);
        }
        request
    }

    async fn send(&self, provider: &Provider) -> reqwest::Response {
        self.request(provider).send().await.unwrap()
    }
}

/// Status, `Idempotent-Replayed`, and the body as text and as JSON.
struct Answer {
    status: StatusCode,
    replayed: bool,
    text: String,
    json: Value,
    retry_after: Option<u64>,
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let replayed = match headers.get(IDEMPOTENT_REPLAYED) {
        None => false,
        Some(v) => {
            assert_eq!(v, "true");
            true
        }
    };
    let retry_after = headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    Answer {
        status,
        replayed,
        text,
        json,
        retry_after,
    }
}

async fn con(provider: &Provider) -> MultiplexedConnection {
    redis::Client::open(provider.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// `effects` of `job:<jobId>` (0 when absent).
async fn effects(con: &mut MultiplexedConnection, job: &str) -> u64 {
    let n: Option<u64> = redis::cmd("HGET")
        .arg(format!("job:{job}"))
        .arg("effects")
        .query_async(con)
        .await
        .unwrap();
    n.unwrap_or(0)
}

async fn xlen(con: &mut MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(con).await.unwrap()
}

async fn exists(con: &mut MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async(con)
        .await
        .unwrap()
}

/// Every key in Redis with its serialized value (DUMP): equal snapshots mean nothing changed.
async fn snapshot(con: &mut MultiplexedConnection) -> Vec<(String, Vec<u8>)> {
    let keys = lab_testkit::scan_keys(con, "*").await.unwrap();
    let mut out = Vec::new();
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query_async(con).await.unwrap();
        out.push((key, dump));
    }
    out
}

async fn requests(provider: &Provider, run: &str) -> RunRequests {
    let response = provider
        .http
        .get(format!("{}{}", provider.url, requests_path(run)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn put_faults(provider: &Provider, faults: Value) -> reqwest::Response {
    provider
        .http
        .put(format!("{}/admin/faults", provider.url))
        .json(&faults)
        .send()
        .await
        .unwrap()
}

async fn get_faults(provider: &Provider) -> Faults {
    provider
        .http
        .get(format!("{}/admin/faults", provider.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

// The first request charges and records the effect in the run's records; the
// same key and body again is the stored answer byte for byte, with
// Idempotent-Replayed, and no second charge; reordered JSON keys are the same body.
#[tokio::test(flavor = "multi_thread")]
async fn first_request_charges_and_a_retry_is_replayed() {
    let provider = start().await;
    let mut con = con(&provider).await;
    let charge = Charge::new(Some("email:job-1"), "job-1", &body("cus_1", 1500));
    let first = answer(charge.send(&provider).await).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert!(!first.replayed);
    let id = first.json["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("ch_"), "{id}");
    assert_eq!(
        first.json,
        json!({
            "id": id, "object": "charge", "status": "succeeded", "amountCents": 1500,
            "currency": "EUR", "customer": "cus_1", "jobId": "job-1",
            "idempotencyKey": "email:job-1",
        })
    );
    assert_eq!(xlen(&mut con, "ledger:run-1").await, 1);
    assert_eq!(effects(&mut con, "job-1").await, 1);
    assert_eq!(xlen(&mut con, "provider:ledger").await, 1);
    // The effect event names the provider and the key.
    let events: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg("events:run-1")
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let fields = &events[0].1;
    for expected in [
        "effect",
        "provider",
        "email:job-1",
        "job-1",
        "1700000000000-0",
    ] {
        assert!(fields.iter().any(|f| f == expected), "{fields:?}");
    }
    // The provider's ledger entry has what the charge was.
    let ledger: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg("provider:ledger")
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    let entry: Vec<&str> = ledger[0].1.iter().map(String::as_str).collect();
    assert_eq!(
        entry,
        [
            "chargeId",
            &id,
            "account",
            "lab",
            "idempotencyKey",
            "email:job-1",
            "runId",
            "run-1",
            "jobId",
            "job-1",
            "pipeline",
            "payments",
            "deliveryId",
            "1700000000000-0",
            "amountCents",
            "1500",
            "currency",
            "EUR",
            "customer",
            "cus_1"
        ]
    );

    let again = answer(charge.send(&provider).await).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert!(again.replayed, "a retry must be marked Idempotent-Replayed");
    assert_eq!(again.text, first.text, "the stored answer, byte for byte");

    // The same body with its keys in another order (and spaces) is the same request.
    let reordered = Charge {
        body: r#"{ "description": "lab", "currency": "EUR", "amountCents": 1500, "customer": "cus_1" }"#
            .into(),
        ..Charge::new(Some("email:job-1"), "job-1", &Value::Null)
    };
    let third = answer(reordered.send(&provider).await).await;
    assert_eq!(third.status, StatusCode::CREATED);
    assert!(third.replayed);
    assert_eq!(third.text, first.text);

    assert_eq!(effects(&mut con, "job-1").await, 1, "charged once");
    assert_eq!(xlen(&mut con, "ledger:run-1").await, 1);
    assert_eq!(xlen(&mut con, "provider:ledger").await, 1);
}

// The same key with another body is refused (422, naming the key) and charges nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_reused_with_another_body_is_422() {
    let provider = start().await;
    let mut con = con(&provider).await;
    let first = Charge::new(Some("k-1"), "job-1", &body("cus_1", 1500));
    assert_eq!(first.send(&provider).await.status(), StatusCode::CREATED);
    for other in [
        body("cus_1", 1501),
        body("cus_2", 1500),
        json!({ "customer": "cus_1", "amountCents": 1500, "currency": "EUR", "description": "lab", "meta": 1 }),
    ] {
        let reused = answer(
            Charge::new(Some("k-1"), "job-1", &other)
                .send(&provider)
                .await,
        )
        .await;
        assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY, "{other}");
        assert_eq!(reused.json["error"]["code"], "idempotency_key_reused");
        let message = reused.json["error"]["message"].as_str().unwrap();
        assert!(message.contains("k-1"), "{message}");
        assert!(!reused.replayed);
    }
    assert_eq!(effects(&mut con, "job-1").await, 1);
    assert_eq!(xlen(&mut con, "provider:ledger").await, 1);
}

// A duplicate sent while the first request still runs gets 409; the first then
// finishes with 201, and a later retry gets its answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_while_the_first_runs_is_409() {
    let provider = start().await;
    let mut con = con(&provider).await;
    let slow = json!({ "customer": "cus_1", "amountCents": 900, "currency": "USD",
                       "simulate": { "firstRequestMs": 1500 } });
    let started = Instant::now();
    let first = tokio::spawn(
        Charge::new(Some("k-slow"), "job-slow", &slow)
            .request(&provider)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let duplicate = answer(
        Charge::new(Some("k-slow"), "job-slow", &slow)
            .send(&provider)
            .await,
    )
    .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT, "{}", duplicate.text);
    assert_eq!(duplicate.json["error"]["code"], "idempotency_key_in_use");
    assert!(
        !first.is_finished(),
        "the 409 must not wait for the first request"
    );
    let first = answer(first.await.unwrap().unwrap()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.replayed);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let later = answer(
        Charge::new(Some("k-slow"), "job-slow", &slow)
            .send(&provider)
            .await,
    )
    .await;
    assert!(later.replayed);
    assert_eq!(later.text, first.text);
    assert_eq!(effects(&mut con, "job-slow").await, 1);
}

// A caller that hangs up (its client timed out) does not cancel the charge: it
// completes, and the retry with the same key gets its answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_times_out_still_gets_the_charge_on_retry() {
    let provider = start().await;
    let mut con = con(&provider).await;
    let slow = json!({ "customer": "cus_1", "amountCents": 900, "currency": "USD",
                       "simulate": { "firstRequestMs": 800 } });
    let charge = Charge::new(Some("k-timeout"), "job-t", &slow);
    let err = charge
        .request(&provider)
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // While the charge still runs a retry is told so (409); then it gets the answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let retry = loop {
        let retry = answer(charge.send(&provider).await).await;
        if retry.status != StatusCode::CONFLICT || Instant::now() > deadline {
            break retry;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.text);
    assert!(retry.replayed, "the charge finished without its caller");
    assert_eq!(effects(&mut con, "job-t").await, 1);
}

// Without a key every request is a new charge.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_key_every_request_charges() {
    let provider = start().await;
    let mut con = con(&provider).await;
    let charge = Charge::new(None, "job-nokey", &body("cus_1", 100));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let a = answer(charge.send(&provider).await).await;
        assert_eq!(a.status, StatusCode::CREATED);
        assert!(!a.replayed);
        assert_eq!(a.json["idempotencyKey"], Value::Null);
        ids.push(a.json["id"].as_str().unwrap().to_string());
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(effects(&mut con, "job-nokey").await, 3);
    assert_eq!(xlen(&mut con, "ledger:run-1").await, 3);
}

// Keys are scoped per account: two accounts with the same key are two charges.
#[tokio::test(flavor = "multi_thread")]
async fn keys_are_scoped_per_account() {
    let provider = start().await;
    let mut con = con(&provider).await;
    let mut ids = Vec::new();
    for account in ["lab", "other-shop"] {
        let charge = Charge {
            account,
            ..Charge::new(Some("order-42"), "job-acct", &body("cus_1", 100))
        };
        let a = answer(charge.send(&provider).await).await;
        assert_eq!(a.status, StatusCode::CREATED, "{account}");
        assert!(!a.replayed, "{account}");
        ids.push(a.json["id"].clone());
    }
    assert_ne!(ids[0], ids[1]);
    assert_eq!(effects(&mut con, "job-acct").await, 2);
    assert!(exists(&mut con, "provider:idem:lab/order-42").await);
    assert!(exists(&mut con, "provider:idem:other-shop/order-42").await);
}

// A declined card is a 402 that executed: stored under the key and replayed, no charge.
#[tokio::test(flavor = "multi_thread")]
async fn a_declined_card_is_stored_and_replayed() {
    let provider = start().await;
    let mut con = con(&provider).await;
    let charge = Charge::new(Some("k-decl"), "job-decl", &body("cus_declined", 100));
    let first = answer(charge.send(&provider).await).await;
    assert_eq!(first.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(first.json["error"]["code"], "card_declined");
    assert!(!first.replayed);
    let again = answer(charge.send(&provider).await).await;
    assert_eq!(again.status, StatusCode::PAYMENT_REQUIRED);
    assert!(again.replayed);
    assert_eq!(again.text, first.text);
    assert_eq!(effects(&mut con, "job-decl").await, 0);
    assert_eq!(xlen(&mut con, "provider:ledger").await, 0);
    assert_eq!(xlen(&mut con, "ledger:run-1").await, 0);
}

// failFirst: the first execution of the job fails with 503 and nothing is
// charged or stored; the retry with the same key runs and charges.
#[tokio::test(flavor = "multi_thread")]
async fn fail_first_releases_the_key_so_the_retry_charges() {
    let provider = start().await;
    let mut con = con(&provider).await;
    let failing = json!({ "customer": "cus_1", "amountCents": 700, "currency": "EUR",
                          "simulate": { "failFirst": true } });
    let charge = Charge::new(Some("k-fail"), "job-fail", &failing);
    let first = answer(charge.send(&provider).await).await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.json["error"]["code"], "upstream_timeout");
    assert!(
        !exists(&mut con, "provider:idem:lab/k-fail").await,
        "nothing stored"
    );
    assert_eq!(effects(&mut con, "job-fail").await, 0);
    let retry = answer(charge.send(&provider).await).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.text);
    assert!(!retry.replayed);
    assert_eq!(effects(&mut con, "job-fail").await, 1);
    let third = answer(charge.send(&provider).await).await;
    assert!(third.replayed);
}

// dropBeforeCharge: the connection closes with no answer and NOTHING is charged;
// the key is released, so the retry with the same key charges (once).
#[tokio::test(flavor = "multi_thread")]
async fn a_request_lost_before_the_charge_charges_nothing_and_the_retry_charges() {
    let provider = start().await;
    let mut con = con(&provider).await;
    let lost = json!({ "customer": "cus_1", "amountCents": 2500, "currency": "EUR",
                       "simulate": { "dropBeforeCharge": true } });
    let charge = Charge::new(Some("k-lost"), "job-lost", &lost);
    let err = charge.request(&provider).send().await.unwrap_err();
    assert!(
        err.status().is_none(),
        "no status may reach the client: {err}"
    );
    assert_eq!(
        effects(&mut con, "job-lost").await,
        0,
        "nothing was charged"
    );
    assert!(
        !exists(&mut con, "provider:idem:lab/k-lost").await,
        "the key was released"
    );
    let retry = answer(charge.send(&provider).await).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.text);
    assert!(!retry.replayed);
    assert_eq!(effects(&mut con, "job-lost").await, 1);
    let log = requests(&provider, "run-1").await;
    let outcomes: Vec<_> = log.requests.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [RequestOutcome::DroppedUncharged, RequestOutcome::Charged]
    );
}

// dropAnswer: the charge is made and stored, then the connection closes with
// no HTTP answer at all (an error, not a status); the retry is a replay.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_answer_is_a_connection_error_and_the_retry_replays() {
    let provider = start().await;
    let mut con = con(&provider).await;
    let dropping = json!({ "customer": "cus_1", "amountCents": 2500, "currency": "EUR",
                           "simulate": { "dropAnswer": true } });
    let charge = Charge::new(Some("k-drop"), "job-drop", &dropping);
    let started = Instant::now();
    let err = charge.request(&provider).send().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed promptly"
    );
    assert!(
        err.status().is_none(),
        "no status may reach the client: {err}"
    );
    assert!(!err.is_timeout(), "{err}");
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        chain.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    println!("the client saw: {chain}");
    assert!(
        chain.contains("closed") || chain.contains("reset") || chain.contains("incomplete"),
        "{chain}"
    );
    assert_eq!(
        effects(&mut con, "job-drop").await,
        1,
        "the charge was made"
    );
    let retry = answer(charge.send(&provider).await).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(retry.replayed);
    assert_eq!(effects(&mut con, "job-drop").await, 1, "and only once");
    let log = requests(&provider, "run-1").await;
    let outcomes: Vec<_> = log.requests.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            RequestOutcome::ChargedAnswerDropped,
            RequestOutcome::Replayed
        ]
    );
    assert_eq!(log.requests[0].charge_id, log.requests[1].charge_id);
    assert_eq!(
        retry.json["id"].as_str(),
        log.requests[0].charge_id.as_deref()
    );

    // On the wire: not one byte of a response before the connection closes.
    let raw_body = dropping.to_string();
    let raw_request = format!(
        "POST {CHARGES_PATH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer lab\r\n\
         content-type: application/json\r\n{LAB_RUN_ID}: run-raw\r\n{LAB_JOB_ID}: job-raw\r\n\
         {IDEMPOTENCY_KEY}: k-raw\r\ncontent-length: {}\r\n\r\n{raw_body}",
        raw_body.len()
    );
    let addr = provider.url.trim_start_matches("http://").to_string();
    let received = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(raw_request.as_bytes()).unwrap();
        let mut received = Vec::new();
        // EOF (or a reset) ends it; a timeout would fail the test below.
        let result = stream.read_to_end(&mut received);
        if let Err(e) = &result {
            assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "no close in 5 s");
            assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "no close in 5 s");
        }
        received
    })
    .await
    .unwrap();
    assert!(
        received.is_empty(),
        "bytes were sent: {:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(effects(&mut con, "job-raw").await, 1);

    // Without a key the same fault charges twice: the caller cannot tell.
    let keyless = Charge::new(None, "job-drop-2", &dropping);
    assert!(keyless.request(&provider).send().await.is_err());
    let again = answer(keyless.send(&provider).await).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(effects(&mut con, "job-drop-2").await, 2);
}

// The instructor's outage: 503 with Retry-After and nothing charged or stored;
// cleared, charges work again. Bad fault input is a 400 and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_outage_is_503_with_retry_after_until_cleared() {
    let provider = start().await;
    let mut con = con(&provider).await;
    assert_eq!(get_faults(&provider).await, Faults::default());
    let set = put_faults(&provider, json!({ "outageSecs": 30 })).await;
    assert_eq!(set.status(), StatusCode::OK);
    let faults = get_faults(&provider).await;
    assert!((29..=30).contains(&faults.outage_secs), "{faults:?}");

    let charge = Charge::new(Some("k-out"), "job-out", &body("cus_1", 100));
    let down = answer(charge.send(&provider).await).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.json["error"]["code"], "provider_unavailable");
    let retry_after = down.retry_after.expect("Retry-After");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(effects(&mut con, "job-out").await, 0);
    assert!(!exists(&mut con, "provider:idem:lab/k-out").await);

    for bad in [
        json!({ "outageSecs": -1 }),
        json!({ "outageSecs": "10" }),
        json!({ "outageSecs": 86_401 }),
        json!({ "slowMs": 60_001 }),
        json!({ "outage": 1 }),
        json!([1]),
    ] {
        let response = put_faults(&provider, bad.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["code"].is_string(), "{bad}: {body}");
    }
    assert!(get_faults(&provider).await.outage_secs >= 28, "unchanged");

    assert_eq!(
        put_faults(&provider, json!({ "outageSecs": 0 }))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(get_faults(&provider).await, Faults::default());
    let up = answer(charge.send(&provider).await).await;
    assert_eq!(up.status, StatusCode::CREATED);
    assert!(!up.replayed);
    assert_eq!(effects(&mut con, "job-out").await, 1);

    // The instructor's slowness delays every charge.
    put_faults(&provider, json!({ "slowMs": 400 })).await;
    let started = Instant::now();
    let slow = Charge::new(None, "job-slowed", &body("cus_1", 100));
    assert_eq!(slow.send(&provider).await.status(), StatusCode::CREATED);
    assert!(started.elapsed() >= Duration::from_millis(400));
}

// Over its budget of requests per second an account gets 429 rate_limited
// with Retry-After; one that keeps sending through its 429s (as many refused in
// one second as its budget) is banned: every request 429 account_banned until
// the ban ends. Other accounts are not affected; nothing refused is charged,
// and the request log keeps each refusal with its time.
#[tokio::test(flavor = "multi_thread")]
async fn an_account_over_its_rate_is_limited_then_banned() {
    let config = provider::Config {
        limits: provider::Limits {
            per_sec: 5,
            ban: Duration::from_millis(1500),
        },
        ..provider::Config::default()
    };
    let provider = start_with(Some(RedisServer::start()), config).await;
    let mut con = con(&provider).await;
    // Start at the beginning of a second: the budget is counted per second.
    let into_second = lab_schema::now_ms() % 1000;
    tokio::time::sleep(Duration::from_millis(1000 - into_second + 20)).await;
    let mut statuses = Vec::new();
    let mut codes = Vec::new();
    for i in 0..11 {
        let job = format!("job-rate-{i}");
        let answer = answer(
            Charge::new(None, &job, &body("cus_1", 100))
                .send(&provider)
                .await,
        )
        .await;
        statuses.push(answer.status.as_u16());
        codes.push(
            answer.json["error"]["code"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = answer.retry_after.expect("a 429 says when to retry");
            assert!((1..=2).contains(&retry_after), "{retry_after}");
        }
    }
    assert_eq!(
        statuses,
        [201, 201, 201, 201, 201, 429, 429, 429, 429, 429, 429],
        "{codes:?}"
    );
    assert_eq!(&codes[5..9], ["rate_limited"; 4]);
    assert_eq!(&codes[9..], ["account_banned"; 2], "the 5th refusal bans");
    assert_eq!(
        effects(&mut con, "job-rate-5").await,
        0,
        "a 429 charges nothing"
    );

    // Another account has its own budget.
    let mut other = Charge::new(None, "job-other", &body("cus_1", 100));
    other.account = "other";
    assert_eq!(other.send(&provider).await.status(), StatusCode::CREATED);

    // Still banned in the next second; free again once the ban ends.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let banned = answer(
        Charge::new(None, "job-banned", &body("cus_1", 100))
            .send(&provider)
            .await,
    )
    .await;
    assert_eq!(banned.json["error"]["code"], "account_banned");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let back = Charge::new(None, "job-back", &body("cus_1", 100));
    assert_eq!(back.send(&provider).await.status(), StatusCode::CREATED);

    let log = requests(&provider, "run-1").await.requests;
    let outcomes: Vec<RequestOutcome> = log.iter().map(|r| r.outcome).collect();
    let count = |o: RequestOutcome| outcomes.iter().filter(|&&x| x == o).count();
    assert_eq!(count(RequestOutcome::RateLimited), 4, "{outcomes:?}");
    assert_eq!(count(RequestOutcome::Banned), 3, "{outcomes:?}");
    assert!(log.iter().all(|r| r.at_ms > 0));
}

// With a short key TTL the key is forgotten: the same key charges again after it.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_key_charges_again() {
    let config = provider::Config {
        key_ttl: Duration::from_secs(1),
        ..provider::Config::default()
    };
    let provider = start_with(Some(RedisServer::start()), config).await;
    let mut con = con(&provider).await;
    let charge = Charge::new(Some("k-ttl"), "job-ttl", &body("cus_1", 100));
    let first = answer(charge.send(&provider).await).await;
    assert!(answer(charge.send(&provider).await).await.replayed);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let after = answer(charge.send(&provider).await).await;
    assert_eq!(after.status, StatusCode::CREATED);
    assert!(!after.replayed, "the key expired");
    assert_ne!(after.json["id"], first.json["id"]);
    assert_eq!(effects(&mut con, "job-ttl").await, 2);
}

// A reservation whose request never finished (a killed provider) blocks its key
// with 409 only until it expires; then the key runs again.
#[tokio::test(flavor = "multi_thread")]
async fn a_reservation_left_by_a_killed_provider_expires() {
    let provider = start().await;
    let mut con = con(&provider).await;
    let body = body("cus_1", 100);
    let fingerprint = provider::fingerprint::fingerprint(&body);
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg("provider:idem:lab/k-dead")
        .arg("state")
        .arg("running")
        .arg("fp")
        .arg(&fingerprint)
        .arg("token")
        .arg("dead-process-0")
        .ignore()
        .cmd("PEXPIRE")
        .arg("provider:idem:lab/k-dead")
        .arg(1500)
        .ignore()
        .query_async(&mut con)
        .await
        .unwrap();
    let charge = Charge::new(Some("k-dead"), "job-dead", &body);
    let blocked = answer(charge.send(&provider).await).await;
    assert_eq!(blocked.status, StatusCode::CONFLICT);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let freed = answer(charge.send(&provider).await).await;
    assert_eq!(freed.status, StatusCode::CREATED);
    assert!(!freed.replayed);
    assert_eq!(effects(&mut con, "job-dead").await, 1);
}

// All state is in Redis: a new provider process over the same Redis replays
// what the first one charged (a restart, or a second replica).
#[tokio::test(flavor = "multi_thread")]
async fn another_provider_over_the_same_redis_replays() {
    let first = start().await;
    let charge = Charge::new(Some("k-restart"), "job-r", &body("cus_1", 100));
    let charged = answer(charge.send(&first).await).await;
    assert_eq!(charged.status, StatusCode::CREATED);
    let second = provider::spawn(&first.redis_url, provider::Config::default())
        .await
        .unwrap();
    let other = Provider {
        url: second.url.clone(),
        redis_url: first.redis_url.clone(),
        http: reqwest::Client::new(),
        _redis: None,
        _provider: second,
    };
    let replayed = answer(charge.send(&other).await).await;
    assert!(replayed.replayed);
    assert_eq!(replayed.text, charged.text);
}

/// One bad request: what is sent and the status and error code expected back.
struct Case {
    name: &'static str,
    request: Box<dyn Fn(&Provider) -> reqwest::RequestBuilder>,
    status: StatusCode,
    code: &'static str,
}

fn bad_cases() -> Vec<Case> {
    use reqwest::header::HeaderValue;
    let bad = StatusCode::BAD_REQUEST;
    let good = || body("cus_1", 100);
    let mut cases: Vec<Case> = Vec::new();
    // The good charge's key on every body case: a request that slipped through
    // validation would be a 422 or a replay, never the expected code.
    let with_body =
        |name: &'static str, body: String, status: StatusCode, code: &'static str| Case {
            name,
            request: Box::new(move |p: &Provider| {
                Charge {
                    body: body.clone(),
                    ..Charge::new(Some("k-good"), "job-good", &Value::Null)
                }
                .request(p)
            }),
            status,
            code,
        };
    let mut header_case = |name: &'static str,
                           change: fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
                           code: &'static str| {
        cases.push(Case {
            name,
            request: Box::new(move |p: &Provider| {
                change(Charge::new(Some("k-good"), "job-good", &good()).request(p))
            }),
            status: if code == "unauthenticated" {
                StatusCode::UNAUTHORIZED
            } else if code == "unsupported_media_type" {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            } else {
                bad
            },
            code,
        })
    };
    // A builder's header() appends: these send the header twice or replace it.
    header_case(
        "no Authorization",
        |r| {
            let (client, request) = r.build_split();
            let mut request = request.unwrap();
            request.headers_mut().remove("authorization");
            reqwest::RequestBuilder::from_parts(client, request)
        },
        "unauthenticated",
    );
    header_case(
        "Basic authorization",
        |r| replace_header(r, "authorization", "Basic bGFiOmxhYg=="),
        "unauthenticated",
    );
    header_case(
        "Bearer without account",
        |r| replace_header(r, "authorization", "Bearer "),
        "unauthenticated",
    );
    header_case(
        "account with a glob",
        |r| replace_header(r, "authorization", "Bearer lab*"),
        "unauthenticated",
    );
    header_case(
        "Authorization twice",
        |r| r.header("authorization", "Bearer other"),
        "unauthenticated",
    );
    header_case(
        "empty Idempotency-Key",
        |r| replace_header(r, IDEMPOTENCY_KEY, ""),
        "invalid_idempotency_key",
    );
    header_case(
        "Idempotency-Key of 256 bytes",
        |r| replace_header(r, IDEMPOTENCY_KEY, &"k".repeat(256)),
        "invalid_idempotency_key",
    );
    header_case(
        "Idempotency-Key with a space",
        |r| replace_header(r, IDEMPOTENCY_KEY, "k good"),
        "invalid_idempotency_key",
    );
    header_case(
        "Idempotency-Key not ASCII",
        |r| {
            let (client, request) = r.build_split();
            let mut request = request.unwrap();
            request.headers_mut().insert(
                IDEMPOTENCY_KEY,
                HeaderValue::from_bytes("k-caf\u{e9}".as_bytes()).unwrap(),
            );
            reqwest::RequestBuilder::from_parts(client, request)
        },
        "invalid_idempotency_key",
    );
    header_case(
        "Idempotency-Key twice",
        |r| r.header(IDEMPOTENCY_KEY, "k-other"),
        "invalid_idempotency_key",
    );
    header_case(
        "no Lab-Run-Id",
        |r| {
            let (client, request) = r.build_split();
            let mut request = request.unwrap();
            request.headers_mut().remove(LAB_RUN_ID);
            reqwest::RequestBuilder::from_parts(client, request)
        },
        "invalid_lab_header",
    );
    header_case(
        "Lab-Job-Id with a space",
        |r| replace_header(r, LAB_JOB_ID, "job good"),
        "invalid_lab_header",
    );
    header_case(
        "Lab-Pipeline with a slash",
        |r| replace_header(r, LAB_PIPELINE, "a/b"),
        "invalid_lab_header",
    );
    header_case(
        "text/plain body",
        |r| replace_header(r, "content-type", "text/plain"),
        "unsupported_media_type",
    );
    let mut more = vec![
        with_body(
            "oversized body",
            json!({ "customer": "cus_1", "amountCents": 1, "currency": "EUR", "pad": "x".repeat(20_000) }).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        with_body("truncated JSON", r#"{"customer": "c"#.into(), bad, "invalid_json"),
        with_body("empty body", String::new(), bad, "invalid_json"),
        with_body("JSON array", "[1,2]".into(), bad, "invalid_json"),
        with_body(
            "repeated key",
            r#"{"customer":"cus_1","amountCents":100,"currency":"EUR","amountCents":1}"#.into(),
            bad,
            "invalid_json",
        ),
        with_body(
            "missing customer",
            json!({ "amountCents": 100, "currency": "EUR" }).to_string(),
            bad,
            "invalid_customer",
        ),
        with_body(
            "customer of 129 chars",
            json!({ "customer": "c".repeat(129), "amountCents": 100, "currency": "EUR" }).to_string(),
            bad,
            "invalid_customer",
        ),
        with_body(
            "customer a number",
            json!({ "customer": 7, "amountCents": 100, "currency": "EUR" }).to_string(),
            bad,
            "invalid_customer",
        ),
        with_body(
            "amount 0",
            json!({ "customer": "cus_1", "amountCents": 0, "currency": "EUR" }).to_string(),
            bad,
            "invalid_amount",
        ),
        with_body(
            "amount over the limit",
            json!({ "customer": "cus_1", "amountCents": 1_000_001, "currency": "EUR" }).to_string(),
            bad,
            "invalid_amount",
        ),
        with_body(
            "amount a float",
            r#"{"customer":"cus_1","amountCents":100.5,"currency":"EUR"}"#.into(),
            bad,
            "invalid_amount",
        ),
        with_body(
            "amount a string",
            json!({ "customer": "cus_1", "amountCents": "100", "currency": "EUR" }).to_string(),
            bad,
            "invalid_amount",
        ),
        with_body(
            "currency lowercase",
            json!({ "customer": "cus_1", "amountCents": 100, "currency": "eur" }).to_string(),
            bad,
            "invalid_currency",
        ),
        with_body(
            "currency of 4 letters",
            json!({ "customer": "cus_1", "amountCents": 100, "currency": "EURO" }).to_string(),
            bad,
            "invalid_currency",
        ),
        with_body(
            "description a number",
            json!({ "customer": "cus_1", "amountCents": 100, "currency": "EUR", "description": 5 }).to_string(),
            bad,
            "invalid_description",
        ),
        with_body(
            "description of 501 chars",
            json!({ "customer": "cus_1", "amountCents": 100, "currency": "EUR", "description": "d".repeat(501) }).to_string(),
            bad,
            "invalid_description",
        ),
        with_body(
            "simulate not an object",
            json!({ "customer": "cus_1", "amountCents": 100, "currency": "EUR", "simulate": true }).to_string(),
            bad,
            "invalid_simulate",
        ),
        with_body(
            "simulate with an unknown fault",
            json!({ "customer": "cus_1", "amountCents": 100, "currency": "EUR", "simulate": { "explode": true } }).to_string(),
            bad,
            "invalid_simulate",
        ),
        with_body(
            "simulate slowMs over 60000",
            json!({ "customer": "cus_1", "amountCents": 100, "currency": "EUR", "simulate": { "slowMs": 60_001 } }).to_string(),
            bad,
            "invalid_simulate",
        ),
        with_body(
            "simulate failFirst a string",
            json!({ "customer": "cus_1", "amountCents": 100, "currency": "EUR", "simulate": { "failFirst": "yes" } }).to_string(),
            bad,
            "invalid_simulate",
        ),
    ];
    cases.append(&mut more);
    let mut route =
        |name: &'static str, method: reqwest::Method, path: &'static str, status, code| {
            cases.push(Case {
                name,
                request: Box::new(move |p: &Provider| {
                    p.http.request(method.clone(), format!("{}{path}", p.url))
                }),
                status,
                code,
            })
        };
    route(
        "GET a charge route",
        reqwest::Method::GET,
        "/v1/charges",
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    route(
        "DELETE the faults",
        reqwest::Method::DELETE,
        "/admin/faults",
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    route(
        "unknown route",
        reqwest::Method::GET,
        "/v1/nope",
        StatusCode::NOT_FOUND,
        "not_found",
    );
    route(
        "invalid runId in the request log path",
        reqwest::Method::GET,
        "/v1/runs/a%20b/requests",
        bad,
        "invalid_run_id",
    );
    cases
}

fn replace_header(r: reqwest::RequestBuilder, name: &str, value: &str) -> reqwest::RequestBuilder {
    let (client, request) = r.build_split();
    let mut request = request.unwrap();
    request.headers_mut().insert(
        reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
        reqwest::header::HeaderValue::from_str(value).unwrap(),
    );
    reqwest::RequestBuilder::from_parts(client, request)
}

async fn try_bad_cases(provider: &Provider) -> usize {
    let cases = bad_cases();
    for case in &cases {
        let response = (case.request)(provider).send().await.unwrap();
        assert_eq!(response.status(), case.status, "{}", case.name);
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: body is not JSON: {e}", case.name));
        assert_eq!(body["error"]["code"], case.code, "{}: {body}", case.name);
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "{}: empty message", case.name);
    }
    cases.len()
}

// Each bad request gets its documented 4xx JSON error, and records nothing: on
// an empty Redis no key at all appears, and after a good charge (whose key the
// bad requests reuse) Redis is byte-for-byte unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_records_nothing() {
    let provider = start().await;
    let mut con = con(&provider).await;
    let tried = try_bad_cases(&provider).await;
    assert!(tried >= 30, "{tried}");
    let keys = lab_testkit::scan_keys(&mut con, "*").await.unwrap();
    assert!(keys.is_empty(), "bad input wrote {keys:?}");

    let good = Charge::new(Some("k-good"), "job-good", &body("cus_1", 100));
    assert_eq!(good.send(&provider).await.status(), StatusCode::CREATED);
    let before = snapshot(&mut con).await;
    try_bad_cases(&provider).await;
    assert_eq!(
        snapshot(&mut con).await,
        before,
        "a bad request changed Redis"
    );
    println!("bad inputs tried: {tried}, all refused, nothing recorded");
}

// The request log lists every valid request of the run with its outcome, in order.
#[tokio::test(flavor = "multi_thread")]
async fn the_request_log_lists_outcomes_in_order() {
    let provider = start().await;
    let charge = Charge::new(Some("k-log"), "job-log", &body("cus_1", 100));
    let charged = answer(charge.send(&provider).await).await;
    charge.send(&provider).await;
    Charge::new(Some("k-log"), "job-log", &body("cus_1", 200))
        .send(&provider)
        .await;
    Charge::new(Some("k-decl"), "job-decl", &body("cus_declined", 100))
        .send(&provider)
        .await;
    let failing = json!({ "customer": "cus_1", "amountCents": 1, "currency": "EUR",
                          "simulate": { "failFirst": true } });
    Charge::new(None, "job-fail", &failing)
        .send(&provider)
        .await;
    // Another run's request is not in this run's log.
    Charge {
        run: "run-2",
        ..Charge::new(None, "job-x", &body("cus_1", 100))
    }
    .send(&provider)
    .await;

    let log = requests(&provider, "run-1").await;
    assert_eq!(log.run_id, "run-1");
    let seen: Vec<(RequestOutcome, u16, &str)> = log
        .requests
        .iter()
        .map(|r| (r.outcome, r.status, r.job_id.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (RequestOutcome::Charged, 201, "job-log"),
            (RequestOutcome::Replayed, 201, "job-log"),
            (RequestOutcome::KeyReused, 422, "job-log"),
            (RequestOutcome::Declined, 402, "job-decl"),
            (RequestOutcome::Unavailable, 503, "job-fail"),
        ]
    );
    let first = &log.requests[0];
    assert_eq!(first.charge_id.as_deref(), charged.json["id"].as_str());
    assert_eq!(log.requests[1].charge_id, first.charge_id);
    assert_eq!(first.idempotency_key.as_deref(), Some("k-log"));
    assert_eq!(first.pipeline, "payments");
    assert_eq!(first.delivery_id, "1700000000000-0");
    assert_eq!(first.fingerprint.len(), 12);
    assert_eq!(log.requests[1].fingerprint, first.fingerprint);
    assert_ne!(log.requests[2].fingerprint, first.fingerprint);
    assert_eq!(log.requests[4].idempotency_key, None);
    assert!(log.requests.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));

    assert_eq!(requests(&provider, "run-2").await.requests.len(), 1);
    assert!(requests(&provider, "never-run").await.requests.is_empty());
}

// GET /healthz answers 200 with Redis up; with Redis down it, and a charge,
// are a prompt 503 JSON, while bad input is still refused with its 4xx.
#[tokio::test(flavor = "multi_thread")]
async fn healthz_and_redis_down() {
    let up = start().await;
    let health = up
        .http
        .get(format!("{}/healthz", up.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({ "status": "ok" })
    );

    let down = start_with(None, provider::Config::default()).await;
    let started = Instant::now();
    let health = answer(
        down.http
            .get(format!("{}/healthz", down.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.json["error"]["code"], "redis_unavailable");
    let charge = answer(
        Charge::new(Some("k-1"), "job-1", &body("cus_1", 100))
            .send(&down)
            .await,
    )
    .await;
    assert_eq!(charge.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(charge.json["error"]["code"], "redis_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let refused = answer(
        Charge::new(Some("k-1"), "job-1", &body("cus_1", 0))
            .send(&down)
            .await,
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
}
