//! Tests of the API binary as a process; students need not edit this file.
//! SIGTERM (what `./lab down` and `docker compose down` send) lets in-flight
//! requests finish, then the process exits 0 within seconds; Redis being away
//! is a few log lines, not one per request; a Redis that does not answer is a
//! 503 after the timeout.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lab_testkit::RedisServer;
use serde_json::{Value, json};

/// The real `api` binary on a free loopback port; killed on drop if still running.
struct ApiProcess {
    child: Child,
    url: String,
}

impl ApiProcess {
    /// Starts the binary, output hidden, and waits until it is ready.
    async fn start(redis_url: &str) -> ApiProcess {
        ApiProcess::start_logging(redis_url, Stdio::null(), "/readyz").await
    }

    /// Starts the binary, its log to `log`, and waits until `GET <ready_path>` answers 200.
    async fn start_logging(redis_url: &str, log: Stdio, ready_path: &str) -> ApiProcess {
        let port = lab_testkit::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_api"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--redis-url", redis_url])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the api binary");
        let api = ApiProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        loop {
            if let Ok(response) = reqwest::get(format!("{}{ready_path}", api.url)).await
                && response.status() == 200
            {
                return api;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "api not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// SIGTERM while a submission is in flight (Redis holds writes for 600 ms): that
// request still gets its 202 and is enqueued, the process exits 0 within a few
// seconds, and afterwards nothing listens on the port.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_requests_finish() {
    let redis = RedisServer::start();
    let mut api = ApiProcess::start(&redis.url()).await;
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(600)
        .arg("WRITE")
        .query_async(&mut con)
        .await
        .unwrap();
    let url = api.url.clone();
    let in_flight = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(format!("{url}/jobs"))
            .json(&json!({ "jobId": "in-flight", "runId": "shutdown" }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    });
    // Long enough for the request to be accepted (it then waits on the paused Redis).
    tokio::time::sleep(Duration::from_millis(250)).await;

    let signalled = Instant::now();
    let pid = api.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 202, "the in-flight request was cut off: {body}");
    let exit = tokio::task::block_in_place(|| api.child.wait().unwrap());
    let took = signalled.elapsed();
    println!("api stopped {took:?} after SIGTERM, with one request in flight");
    assert!(exit.success(), "api exited with {exit}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");

    let len: u64 = redis::cmd("XLEN")
        .arg("jobs:stream")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(len, 1, "the in-flight submission was enqueued");
    assert!(
        reqwest::get(format!("{}/healthz", api.url)).await.is_err(),
        "nothing listens after exit"
    );
}

// Redis away while 200 submissions arrive: each gets its 503, and the API logs
// "redis unavailable" about once per second with the count in between, not 200 times.
#[tokio::test(flavor = "multi_thread")]
async fn redis_away_is_a_few_log_lines_not_a_flood() {
    let log_path = std::env::temp_dir().join(format!("lab-api-log-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    // Nothing listens on this port: Redis is away.
    let redis_url = format!("redis://127.0.0.1:{}", lab_testkit::free_port());
    let mut api = ApiProcess::start_logging(&redis_url, log.into(), "/healthz").await;
    let http = reqwest::Client::new();
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..200 {
        let request = http
            .post(format!("{}/jobs", api.url))
            .json(&json!({ "jobId": format!("job-{n}") }));
        requests.spawn(async move { request.send().await.unwrap().status().as_u16() });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), 503);
    }
    api.child.kill().unwrap();
    api.child.wait().unwrap();
    let text = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    let lines = text.matches("redis unavailable: answering 503").count();
    println!("200 requests answered 503 while Redis was away: {lines} log lines");
    assert!((1..=10).contains(&lines), "{lines} lines:\n{text}");
}

// Redis that accepts the connection but does not answer (CLIENT PAUSE holds every
// write for 3 s): POST /jobs answers 503 after the 1 s timeout instead of hanging.
// The submission was sent, so Redis runs it once the pause ends: a "refused"
// submission can still be enqueued, which is why a client's retry makes duplicates.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_redis_is_a_503_after_the_timeout() {
    let redis = RedisServer::start();
    let api = ApiProcess::start(&redis.url()).await;
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("WRITE")
        .query_async(&mut con)
        .await
        .unwrap();
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{}/jobs", api.url))
        .json(&json!({ "jobId": "held", "runId": "hung" }))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    println!("POST /jobs against a paused Redis: {status} after {took:?}");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "redis_timeout", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may still be enqueued"),
        "{body}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );

    tokio::time::sleep(Duration::from_millis(3200).saturating_sub(started.elapsed())).await;
    let start = Instant::now();
    let len = loop {
        let len: u64 = redis::cmd("XLEN")
            .arg("jobs:stream")
            .query_async(&mut con)
            .await
            .unwrap();
        if len > 0 || start.elapsed() > Duration::from_secs(3) {
            break len;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(len, 1, "the submission answered 503 ran once Redis resumed");
}
