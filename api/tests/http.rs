//! The API over real HTTP against a real redis-server: bad input is refused
//! with a clear 4xx JSON error and changes nothing; Redis trouble is a prompt 503.

use std::time::{Duration, Instant};

use lab_testkit::RedisServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The API, in-process on a free port, over its own redis-server.
struct Api {
    url: String,
    redis_url: String,
    _redis: Option<RedisServer>,
    _api: api::Background,
}

async fn start_api(redis: Option<RedisServer>) -> Api {
    let redis_url = match &redis {
        Some(server) => server.url(),
        // Nothing listens here: Redis is "down".
        None => format!("redis://127.0.0.1:{}", lab_testkit::free_port()),
    };
    let api = api::spawn(&redis_url).await.unwrap();
    Api {
        url: api.url.clone(),
        redis_url,
        _redis: redis,
        _api: api,
    }
}

async fn get_json(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Every key in Redis with its serialized value (DUMP): equal snapshots mean nothing changed.
async fn snapshot(redis_url: &str) -> Vec<(String, Vec<u8>)> {
    let mut con = redis::Client::open(redis_url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys = lab_testkit::scan_keys(&mut con, "*").await.unwrap();
    let mut out = Vec::new();
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
        out.push((key, dump));
    }
    out
}

/// One bad request: what is sent and the status and error code expected back.
struct Case {
    name: &'static str,
    method: reqwest::Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
}

fn post_json(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    status: StatusCode,
    code: &'static str,
) -> Case {
    Case {
        name,
        method: reqwest::Method::POST,
        path: "/jobs".into(),
        content_type: Some("application/json"),
        body: body.into(),
        status,
        code,
    }
}

fn bad_cases() -> Vec<Case> {
    let bad = StatusCode::BAD_REQUEST;
    let job = |id: &str| json!({ "jobId": id }).to_string();
    let mut cases = vec![
        post_json("truncated JSON", r#"{"jobId": "a"#, bad, "invalid_json"),
        post_json("not JSON", "hello", bad, "invalid_json"),
        post_json("empty body", "", bad, "invalid_json"),
        post_json("JSON array", "[1,2]", bad, "invalid_field"),
        post_json("missing jobId", "{}", bad, "invalid_job_id"),
        post_json("empty jobId", job(""), bad, "invalid_job_id"),
        post_json(
            "jobId of 129 chars",
            job(&"a".repeat(129)),
            bad,
            "invalid_job_id",
        ),
        post_json("jobId with a space", job("a b"), bad, "invalid_job_id"),
        post_json("jobId with a newline", job("a\nb"), bad, "invalid_job_id"),
        post_json("jobId with *", job("a*"), bad, "invalid_job_id"),
        post_json("jobId with ?", job("a?"), bad, "invalid_job_id"),
        post_json("jobId with [", job("a["), bad, "invalid_job_id"),
        post_json(
            "jobId with unicode",
            job("caf\u{e9}"),
            bad,
            "invalid_job_id",
        ),
        post_json(
            "jobId with a control char",
            job("a\u{1}b"),
            bad,
            "invalid_job_id",
        ),
        post_json("jobId a number", r#"{"jobId": 5}"#, bad, "invalid_field"),
        post_json("jobId null", r#"{"jobId": null}"#, bad, "invalid_job_id"),
        post_json(
            "invalid runId",
            json!({"jobId": "ok", "runId": "a b"}).to_string(),
            bad,
            "invalid_run_id",
        ),
        post_json(
            "payload not an object",
            json!({"jobId": "ok", "payload": [1]}).to_string(),
            bad,
            "invalid_payload",
        ),
        post_json(
            "unknown field",
            json!({"jobId": "ok", "extra": 1}).to_string(),
            bad,
            "invalid_field",
        ),
        post_json(
            "trailing garbage",
            r#"{"jobId": "a"} x"#,
            bad,
            "invalid_json",
        ),
        post_json(
            "bytes that are not UTF-8",
            b"{\"jobId\": \"a\xff\"}".to_vec(),
            bad,
            "invalid_json",
        ),
        post_json(
            "lone surrogate escape",
            r#"{"jobId": "a\ud800"}"#,
            bad,
            "invalid_json",
        ),
        post_json(
            "JSON nested 500 deep",
            format!(
                r#"{{"jobId": "ok", "payload": {{"x": {}{}}}}}"#,
                "[".repeat(500),
                "]".repeat(500)
            ),
            bad,
            "invalid_json",
        ),
        post_json(
            "1000 unknown fields",
            format!(
                "{{\"jobId\": \"ok\", {}}}",
                (0..1000)
                    .map(|n| format!("\"f{n}\": {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            bad,
            "invalid_field",
        ),
        post_json(
            "duplicate jobId key",
            r#"{"jobId": "a", "jobId": "b"}"#,
            bad,
            "invalid_field",
        ),
        post_json("jobId true", r#"{"jobId": true}"#, bad, "invalid_field"),
        post_json(
            "jobId an array",
            r#"{"jobId": ["a"]}"#,
            bad,
            "invalid_field",
        ),
        post_json(
            "jobId an object",
            r#"{"jobId": {"a": 1}}"#,
            bad,
            "invalid_field",
        ),
        post_json(
            "runId a number",
            r#"{"jobId": "a", "runId": 7}"#,
            bad,
            "invalid_field",
        ),
        post_json("jobId with a tab", job("a\tb"), bad, "invalid_job_id"),
        post_json("jobId with a NUL", job("a\u{0}b"), bad, "invalid_job_id"),
        post_json("jobId with a slash", job("a/b"), bad, "invalid_job_id"),
        post_json("jobId with %", job("a%20b"), bad, "invalid_job_id"),
        post_json(
            "jobId with an emoji",
            job("job-\u{1f600}"),
            bad,
            "invalid_job_id",
        ),
        post_json(
            "jobId with a right-to-left override",
            job("a\u{202e}b"),
            bad,
            "invalid_job_id",
        ),
        post_json(
            "jobId with a carriage return",
            job("a\r\nINFO forged log line"),
            bad,
            "invalid_job_id",
        ),
        post_json(
            "jobId of 10 000 chars",
            job(&"a".repeat(10_000)),
            bad,
            "invalid_job_id",
        ),
        post_json(
            "runId of 129 chars",
            json!({"jobId": "ok", "runId": "r".repeat(129)}).to_string(),
            bad,
            "invalid_run_id",
        ),
        post_json(
            "empty runId",
            json!({"jobId": "ok", "runId": ""}).to_string(),
            bad,
            "invalid_run_id",
        ),
        post_json(
            "runId with ?",
            json!({"jobId": "ok", "runId": "r?"}).to_string(),
            bad,
            "invalid_run_id",
        ),
        post_json(
            "payload a string",
            json!({"jobId": "ok", "payload": "x"}).to_string(),
            bad,
            "invalid_payload",
        ),
        post_json(
            "2000 fields (over the body limit)",
            format!(
                "{{\"jobId\": \"ok\", \"payload\": {{{}}}}}",
                (0..2000)
                    .map(|n| format!("\"field{n}\": {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        post_json(
            "oversized body",
            json!({"jobId": "ok", "payload": {"pad": "x".repeat(20_000)}}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    let mut other = |name, method, path: &str, content_type, status, code| {
        cases.push(Case {
            name,
            method,
            path: path.into(),
            content_type,
            body: job("ok").into_bytes(),
            status,
            code,
        })
    };
    use reqwest::Method;
    other(
        "text/plain body",
        Method::POST,
        "/jobs",
        Some("text/plain"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    other(
        "no content type",
        Method::POST,
        "/jobs",
        None,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    other(
        "form-encoded body",
        Method::POST,
        "/jobs",
        Some("application/x-www-form-urlencoded"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    other(
        "JSON look-alike content type",
        Method::POST,
        "/jobs",
        Some("application/jsonx"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    other(
        "POST /healthz",
        Method::POST,
        "/healthz",
        Some("application/json"),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    other(
        "PATCH a run",
        Method::PATCH,
        "/runs/r1",
        Some("application/json"),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    other(
        "empty jobId in the path",
        Method::GET,
        "/jobs/",
        None,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    other(
        "glob in the run path",
        Method::GET,
        "/runs/r*",
        None,
        StatusCode::BAD_REQUEST,
        "invalid_run_id",
    );
    other(
        "overlong jobId in the path",
        Method::GET,
        &format!("/jobs/{}", "a".repeat(300)),
        None,
        StatusCode::BAD_REQUEST,
        "invalid_job_id",
    );
    other(
        "unknown nested route",
        Method::GET,
        "/jobs/a/b/c",
        None,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    other(
        "unknown route",
        Method::GET,
        "/nope",
        None,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    other(
        "wrong method",
        Method::DELETE,
        "/jobs",
        None,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    other(
        "PUT a job",
        Method::PUT,
        "/jobs/ok",
        Some("application/json"),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    other(
        "invalid jobId in the path",
        Method::GET,
        "/jobs/a%20b",
        None,
        StatusCode::BAD_REQUEST,
        "invalid_job_id",
    );
    other(
        "unknown job",
        Method::GET,
        "/jobs/never-submitted",
        None,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );
    other(
        "unknown run",
        Method::GET,
        "/runs/never-run",
        None,
        StatusCode::NOT_FOUND,
        "run_not_found",
    );
    cases
}

// Each bad request gets its documented 4xx JSON error at once (in under 500 ms:
// not waiting on Redis's 1 s timeout, with room for a loaded machine), and Redis is
// byte-for-byte unchanged. Prints how many were tried and the slowest answer.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_changes_nothing() {
    let api = start_api(Some(RedisServer::start())).await;
    let http = reqwest::Client::new();
    // One good submission first, so there is state that must stay as it is.
    let accepted = http
        .post(format!("{}/jobs", api.url))
        .json(&json!({ "jobId": "good-1", "runId": "run-1", "payload": {"to": "a@example.com"} }))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let body: Value = accepted.json().await.unwrap();
    assert_eq!(
        (body["jobId"].as_str(), body["submission"].as_u64()),
        (Some("good-1"), Some(1))
    );

    let before = snapshot(&api.redis_url).await;
    assert!(before.iter().any(|(k, _)| k == "jobs:stream"));
    let cases = bad_cases();
    assert!(cases.len() >= 25);
    let mut slowest = (Duration::ZERO, "");
    for case in &cases {
        let mut request = http.request(case.method.clone(), format!("{}{}", api.url, case.path));
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        let started = Instant::now();
        let response = request.body(case.body.clone()).send().await.unwrap();
        let took = started.elapsed();
        assert_eq!(response.status(), case.status, "{}", case.name);
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: body is not JSON: {e}", case.name));
        assert_eq!(body["error"]["code"], case.code, "{}: {body}", case.name);
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "{}: empty message", case.name);
        assert!(
            took < Duration::from_millis(500),
            "{} took {took:?}",
            case.name
        );
        slowest = slowest.max((took, case.name));
    }
    println!(
        "bad inputs tried: {}, all refused; slowest answer {:?} ({})",
        cases.len(),
        slowest.0,
        slowest.1
    );
    assert_eq!(
        snapshot(&api.redis_url).await,
        before,
        "a bad request changed Redis"
    );
}

// A valid submission is enqueued every time, duplicates included, and counted on the job.
#[tokio::test(flavor = "multi_thread")]
async fn every_submission_is_enqueued() {
    let api = start_api(Some(RedisServer::start())).await;
    let http = reqwest::Client::new();
    for n in 1..=3u64 {
        let response = http
            .post(format!("{}/jobs", api.url))
            .header("content-type", "application/json; charset=utf-8")
            .body(r#"{"jobId": "dup-1", "runId": "r1"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["submission"].as_u64(), Some(n));
    }
    let job: Value = get_json(format!("{}/jobs/dup-1", api.url)).await;
    assert_eq!(job["submissions"], 3);
    assert_eq!(job["status"], "queued");
    assert_eq!(job["processAttempts"], 0);
    assert_eq!(job["idempotency"], Value::Null);
    let run: Value = get_json(format!("{}/runs/r1", api.url)).await;
    assert_eq!(
        (
            run["unique_jobs"].as_u64(),
            run["total_submissions"].as_u64()
        ),
        (Some(1), Some(3))
    );
    assert_eq!(run["drained"], false);

    let mut con = redis::Client::open(api.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg("jobs:stream")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        len, 3,
        "the API does not deduplicate: every submission is a delivery"
    );
}

// With Redis down the API still answers: healthz 200, readyz and POST /jobs a prompt 503 JSON.
#[tokio::test(flavor = "multi_thread")]
async fn redis_down_is_a_prompt_503() {
    let api = start_api(None).await;
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/healthz", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    for (method, path) in [("GET", "/readyz"), ("POST", "/jobs")] {
        let started = Instant::now();
        let response = http
            .request(method.parse().unwrap(), format!("{}{path}", api.url))
            .json(&json!({ "jobId": "j1" }))
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "redis_unavailable");
        assert!(took < Duration::from_secs(3), "{path} took {took:?}");
    }
}

// Ids may contain ':', so runs named `a` and `a:jobs` must not share a Redis key:
// both are accepted and counted apart.
#[tokio::test(flavor = "multi_thread")]
async fn ids_with_colons_never_share_keys() {
    let api = start_api(Some(RedisServer::start())).await;
    let http = reqwest::Client::new();
    for (job_id, run_id) in [("j1", "a"), ("j2", "a:jobs"), ("j3", "a")] {
        let response = http
            .post(format!("{}/jobs", api.url))
            .json(&json!({ "jobId": job_id, "runId": run_id }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{run_id}");
    }
    for (run_id, jobs) in [("a", 2), ("a:jobs", 1)] {
        let run: Value = get_json(format!("{}/runs/{run_id}", api.url)).await;
        assert_eq!(run["unique_jobs"], jobs, "{run_id}: {run}");
        assert_eq!(run["total_submissions"], jobs, "{run_id}: {run}");
    }
}
