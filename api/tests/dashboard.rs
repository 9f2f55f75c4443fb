//! The dashboard's routes and `GET /metrics` over real HTTP against a real
//! redis-server (the page itself is tested in a browser: lab-tests/tests/browser.rs).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab_testkit::RedisServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Api {
    url: String,
    redis: RedisServer,
    _api: api::Background,
}

async fn start_api() -> Api {
    let redis = RedisServer::start();
    let api = api::spawn(&redis.url()).await.unwrap();
    Api {
        url: api.url.clone(),
        redis,
        _api: api,
    }
}

impl Api {
    async fn submit(&self, job_id: &str, run_id: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/jobs", self.url))
            .json(&json!({ "jobId": job_id, "runId": run_id }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

/// The first SSE event of `url`, parsed.
async fn first_event(url: &str) -> Value {
    let mut response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let start = Instant::now();
    while !text.contains("\n\n") || !text.contains("data:") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no event: {text:?}"
        );
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .unwrap()
        .trim();
    serde_json::from_str(data).unwrap()
}

/// The page is one self-contained document: no script, style or font from elsewhere.
#[tokio::test]
async fn the_page_is_served_at_the_root_and_for_a_browser_at_a_run() {
    let api = start_api().await;
    let page = reqwest::get(format!("{}/", api.url)).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("<svg id=\"grid\""));
    for outside in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!html.contains(outside), "the page loads {outside}...");
    }
    assert!(html.len() < 40_000, "the page weighs {} bytes", html.len());

    api.submit("job-1", "run-a").await;
    let client = reqwest::Client::new();
    // A browser asks for HTML: the page. Everyone else gets the documented JSON.
    let as_browser = client
        .get(format!("{}/runs/run-a", api.url))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(as_browser.text().await.unwrap(), html);
    let as_client: Value = client
        .get(format!("{}/runs/run-a", api.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(as_client["total_submissions"], 1);
    // A malformed id is refused the same way for both.
    for accept in ["text/html", "application/json"] {
        let bad = client
            .get(format!("{}/runs/bad%20id", api.url))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST, "{accept}");
    }
}

/// The recent runs come from the index written at submit time, newest first,
/// capped; bad and unknown ids get the API's usual errors.
#[tokio::test]
async fn recent_runs_are_indexed_at_submit_time() {
    let api = start_api().await;
    for n in 0..105 {
        api.submit(&format!("job-{n}"), &format!("run-{n}")).await;
    }
    api.submit("job-again", "run-3").await;
    let runs: Value = reqwest::get(format!("{}/dashboard/runs", api.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["runId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 100, "the index keeps the 100 latest runs");
    assert_eq!(&ids[..3], ["run-3", "run-104", "run-103"]);
    assert!(!ids.contains(&"run-4"), "the oldest fell out of the index");

    let status = |path: String| async move { reqwest::get(path).await.unwrap().status() };
    assert_eq!(
        status(format!("{}/dashboard/runs/nope", api.url)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(format!("{}/dashboard/runs/a%2Fb", api.url)).await,
        StatusCode::BAD_REQUEST
    );
    let long = "x".repeat(129);
    assert_eq!(
        status(format!("{}/dashboard/live/{long}", api.url)).await,
        StatusCode::BAD_REQUEST
    );

    // An unknown run is watched all the same: it has no summary (yet).
    let unknown = first_event(&format!("{}/dashboard/live/nope", api.url)).await;
    assert_eq!(
        (unknown["ok"].clone(), unknown["summary"].clone()),
        (json!(true), Value::Null)
    );
    assert_eq!(unknown["common"]["runs"][0]["runId"], "run-3");
}

/// A run of thousands of jobs: the totals count them all, the grid carries at
/// most `GRID_MAX` cells (the jobs that went wrong first).
#[tokio::test]
async fn a_big_run_keeps_a_bounded_grid() {
    let api = start_api().await;
    let jobs = 1_200;
    for n in 0..jobs {
        api.submit(&format!("big-{n}"), "big").await;
    }
    let snapshot: Value = reqwest::get(format!("{}/dashboard/runs/big", api.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snapshot["jobsTotal"], jobs);
    assert_eq!(snapshot["summary"]["unique_jobs"], jobs);
    assert_eq!(
        snapshot["counts"]["none"], jobs,
        "no worker ran: no effect yet"
    );
    assert_eq!(snapshot["jobs"].as_array().unwrap().len(), 1_000);
    assert_eq!(snapshot["jobs"][0]["id"], "big-0");
    assert_eq!(snapshot["jobs"][2]["id"], "big-2", "ids sort as numbers");
}

/// However many browsers watch a run, one reader reads it: ten open streams
/// cost Redis what one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reader_serves_every_browser() {
    let api = start_api().await;
    api.submit("job-1", "watched").await;
    let mut redis = api.redis().await;
    let reads = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_xrevrange:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mut streams = Vec::new();
    for _ in 0..10 {
        streams.push(
            reqwest::get(format!("{}/dashboard/live/watched", api.url))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut redis)
        .await
        .unwrap();
    let window = Duration::from_millis(2_000);
    tokio::time::sleep(window).await;
    let after: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut redis)
        .await
        .unwrap();
    let run_reads = reads(after) - reads(before);
    let ticks = (window.as_millis() / 400) as u64;
    assert!(
        run_reads <= ticks + 1,
        "{run_reads} reads of the run in {window:?} for 10 browsers: more than one reader"
    );
    assert!(
        run_reads >= 2,
        "the run was not read while watched ({run_reads})"
    );
    drop(streams);
}

/// `GET /metrics`: the Prometheus text format, checked by promtool; counters
/// come from Redis (so a restarted API loses none), gauges from the stream.
#[tokio::test]
async fn metrics_pass_promtool_and_count_from_redis() {
    let api = start_api().await;
    api.submit("job-1", "m").await;
    api.submit("job-1", "m").await;
    let response = reqwest::get(format!("{}/metrics", api.url)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains("\nlab_jobs_submitted_total{exercise=\"1\"} 2\n"),
        "{text}"
    );
    // No worker has read the stream: two entries waiting, none pending.
    assert!(text.contains("\nlab_queue_stream_length 2\n"), "{text}");
    assert!(
        text.contains("\nlab_queue_pending_deliveries 0\n"),
        "{text}"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains("job-1") && !line.contains("run"),
            "an unbounded label: {line}"
        );
    }
    promtool(&text);

    // A new API process over the same Redis: the same counts.
    let again = api::spawn(&api.redis.url()).await.unwrap();
    let text_again = reqwest::get(format!("{}/metrics", again.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text_again.contains("lab_jobs_submitted_total{exercise=\"1\"} 2\n"));
}

/// `promtool check metrics`; skipped (said) only when it is missing and we are not root.
fn promtool(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        assert!(
            !root,
            "promtool is missing: apt-get install prometheus (.ci/run installs it)"
        );
        eprintln!("SKIPPED promtool check: install Debian's prometheus package");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An open page never holds up a graceful shutdown for long: each SSE response
/// ends after a few seconds with a `reconnect` event (the page opens the next
/// one at once), so a stopping API waits at most that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_page_does_not_hold_up_shutdown() {
    let redis = RedisServer::start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let redis_url = redis.url();
    let server = tokio::spawn(async move {
        api::serve(listener, &redis_url, api::orders::DEFAULT_TTL, async {
            let _ = stopped.await;
        })
        .await
    });
    let mut page = reqwest::get(format!("{url}/dashboard/live")).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut text = String::new();
        while let Ok(Some(chunk)) = page.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the API stopped with a page open")
        .unwrap()
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(4_000),
        "{:?}",
        start.elapsed()
    );
    let text = reader.await.unwrap();
    assert!(text.contains("event: reconnect"), "{text}");
}

// `GET /class-report` serves the page `class-report` wrote (read at each
// request: a new report shows without a restart), and says how to make one
// when there is none.
#[tokio::test]
async fn the_class_report_is_served_when_written() {
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("lab-api-class-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("class-report.html");
    let _ = std::fs::remove_file(&file);
    let port = lab_testkit::free_port();
    let mut api = Command::new(env!("CARGO_BIN_EXE_api"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--redis-url", &redis.url()])
        .env("CLASS_REPORT_FILE", &file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/class-report");
    let start = Instant::now();
    let missing = loop {
        if let Ok(response) = reqwest::get(&url).await {
            break response;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the api did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let text = missing.text().await.unwrap();
    assert!(text.contains("./lab demo class-report"), "{text}");
    std::fs::write(&file, "<!doctype html><title>Class report: x</title>").unwrap();
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("Class report: x"));
    let _ = api.kill();
    let _ = api.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
