//! Exercise 4's incident end to end: `retried-post` against the starter API and
//! against the API built with the reference solution, with two real workers
//! processing the orders; the raw HTTP it prints; and `compare` of the two.

use lab_schema::Exercise;
use lab_testkit::solution_binary;
use lab_tests::{Stack, get_json, scratch_dir, text};
use serde_json::Value;

/// What the dashboard judges of the run saved in `dir/file`: orders per client
/// request (caller + Idempotency-Key).
async fn dashboard_orders(stack: &Stack, dir: &std::path::Path, file: &str) -> Value {
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
    let run_id = saved["run_id"].as_str().unwrap().to_string();
    let snapshot: Value = get_json(format!("{}/dashboard/runs/{run_id}", stack.api_url)).await;
    snapshot["orders"].clone()
}

// Before the fix every retry, double click and reused request is a new order;
// after it, exactly one order per logical order, the retries answered from the
// stored answer. The numbers are the ones the handout and the guide quote.
#[tokio::test(flavor = "multi_thread")]
async fn retried_post_counts_orders_per_logical_order_before_and_after() {
    let exercise = Exercise::RetriedPost;
    let dir = scratch_dir("retried-post");
    let before = Stack::for_exercise(exercise, None).await;
    let out = before
        .demo(&dir, &["retried-post", "--save", "before.json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "case lost-answer: no answer, 201 -> 2 orders (expected 1)",
        "case double-click: 201, 201 -> 2 orders (expected 1)",
        "case missing-key: no answer, 201 -> 2 orders (expected 0), 1 wrong final answer",
        "expected_orders=7",
        "orders_created=13",
        "extra_orders=6",
        "wrong_answers=2",
        "replays=0",
        "statuses=201:11,503:1,none:2",
        "observed_effects_total=13",
        "# 13 orders for 7 expected: 6 extra orders",
        "# 1 API running idempotency.rs #",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    // The dashboard judges what exercise 4 teaches: 4 retried requests became 2
    // orders each, and the 2 orders of the request without a key.
    let orders = dashboard_orders(&before, &dir, "before.json").await;
    assert_eq!(
        (&orders["orders"], &orders["extra"], &orders["withoutKey"]),
        (&Value::from(13), &Value::from(4), &Value::from(2)),
        "{orders}"
    );
    drop(before);

    let binary = solution_binary(exercise);
    let after = Stack::for_exercise(exercise, Some(&binary)).await;
    let out = after
        .demo(
            &dir,
            &["retried-post", "--show-http", "--save", "after.json"],
        )
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "case lost-answer: no answer, 201 replayed -> 1 order (expected 1)",
        "case two-callers-one-key: 201, 201 -> 2 orders (expected 2)",
        "case double-click: 201, 409 idempotency_key_in_flight, 201 replayed -> 1 order (expected 1)",
        "case reordered-retry: 201, 201 replayed -> 1 order (expected 1)",
        "case key-reused: 201, 422 idempotency_key_reused -> 1 order (expected 1)",
        "case missing-key: 400 idempotency_key_missing -> 0 orders (expected 0)",
        "case failure-then-retry: 503 stock_unavailable, 201 -> 1 order (expected 1)",
        "orders_created=7",
        "extra_orders=0",
        "missing_orders=0",
        "wrong_answers=0",
        "replays=3",
        "statuses=201:9,400:1,409:1,422:1,503:1,none:1",
        "observed_effects_total=7",
        "# 7 orders for 7 expected, 3 replayed answers: exactly one order per logical order",
        // The raw exchanges: a lost answer, a replay, a conflict, a mismatch.
        "(the connection closed: no answer at all)",
        "HTTP/1.1 201 Created\ncontent-type: application/json\nidempotent-replayed: true",
        // A refusal is problem details (RFC 9457) pointing at the published rules.
        "HTTP/1.1 409 Conflict\ncontent-type: application/problem+json\nretry-after: 1\nlink: </idempotency>; rel=\"describedby\"",
        r#"{"type":"/idempotency#idempotency_key_in_flight","title":"Idempotency-Key in flight","status":409,"detail":"the first request with this Idempotency-Key is still being processed; retry in a moment to get its answer","code":"idempotency_key_in_flight"}"#,
        "HTTP/1.1 422 Unprocessable Entity\ncontent-type: application/problem+json",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    // Each refusal's type is an entry of the published policy.
    let policy: lab_schema::orders::IdempotencyPolicy =
        reqwest::get(format!("{}/idempotency", after.api_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let types: Vec<&str> = policy.refusals.iter().map(|r| r.type_.as_str()).collect();
    assert_eq!(
        types,
        [
            "/idempotency#idempotency_key_missing",
            "/idempotency#idempotency_key_malformed",
            "/idempotency#idempotency_key_in_flight",
            "/idempotency#idempotency_key_reused",
        ]
    );
    let orders = dashboard_orders(&after, &dir, "after.json").await;
    assert_eq!(
        (&orders["orders"], &orders["extra"], &orders["withoutKey"]),
        (&Value::from(7), &Value::from(0), &Value::from(0)),
        "{orders}"
    );
    let out = after
        .demo(&dir, &["compare", "before.json", "after.json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(
            "# fixed: 7 orders for 7 expected, 3 replayed answers (before: 6 extra orders)"
        ),
        "{}",
        text(&out.stdout)
    );
}
