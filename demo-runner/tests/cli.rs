//! The demo-runner binary as a user runs it: its output formats, exit codes and
//! one-line errors. The stack (real redis-server, API, starter worker) runs in-process.

use std::process::{Command, Output};
use std::time::Duration;

use lab_schema::testing::RedisServer;
use serde_json::Value;

/// Redis, the API and (optionally) one starter worker, all in this process.
struct Stack {
    api_url: String,
    _redis: RedisServer,
    _api: api::Background,
    _worker_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn start_stack(with_worker: bool) -> Stack {
    let redis = RedisServer::start();
    let api = api::spawn(&redis.url()).await.unwrap();
    let worker_stop = with_worker.then(|| {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = worker::Config {
            redis_url: redis.url(),
            effect_delay: Duration::from_millis(20),
            ..worker::Config::default()
        };
        tokio::spawn(worker::run(config, async {
            let _ = stopped.await;
        }));
        stop
    });
    Stack {
        api_url: api.url.clone(),
        _redis: redis,
        _api: api,
        _worker_stop: worker_stop,
    }
}

/// Runs the real demo-runner binary (off the async runtime's threads).
async fn demo(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_demo-runner"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SUMMARY_KEYS: [&str; 11] = [
    "scenario",
    "run_id",
    "unique_jobs",
    "total_submissions",
    "observed_attempts_total",
    "observed_effects_total",
    "duplicate_effects",
    "lost_effects",
    "duplicate_skips",
    "drained",
    "elapsed_ms",
];

// --json prints exactly one JSON object with every summary key; the starter's numbers show the bug.
#[tokio::test(flavor = "multi_thread")]
async fn json_summary_has_every_key() {
    let stack = start_stack(true).await;
    let out = demo(&[
        "--api-url",
        &stack.api_url,
        "duplicate-load",
        "3",
        "2",
        "--json",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "stdout: {stdout}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    for key in SUMMARY_KEYS {
        assert!(summary.get(key).is_some(), "missing {key} in {summary}");
    }
    assert_eq!(summary["scenario"], "duplicate-load");
    let counts: Vec<u64> = [
        "unique_jobs",
        "total_submissions",
        "observed_attempts_total",
        "observed_effects_total",
        "duplicate_skips",
    ]
    .iter()
    .map(|k| summary[k].as_u64().unwrap())
    .collect();
    assert_eq!(counts, [3, 6, 6, 6, 0]);
    assert_eq!(summary["duplicate_effects"], 3);
    assert_eq!(summary["drained"], true);
    assert!(
        text(&out.stderr).contains("processed"),
        "progress goes to stderr"
    );
}

// Human output: the observation lines, then key=value lines and a one-line verdict.
#[tokio::test(flavor = "multi_thread")]
async fn human_output_is_key_value_lines() {
    let stack = start_stack(true).await;
    let out = demo(&[
        "--api-url",
        &stack.api_url,
        "duplicate-observe",
        "--interval-ms",
        "50",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("submitting jobId observe-"), "{stdout}");
    assert!(stdout.contains("effects 3"), "{stdout}");
    for key in SUMMARY_KEYS {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{key}="))),
            "missing {key}= in {stdout}"
        );
    }
    assert!(stdout.contains("observed_effects_total=3\n"), "{stdout}");
    assert!(
        stdout.contains("# 3 effects for 1 unique job: 2 duplicate side effects (the bug)"),
        "{stdout}"
    );
}

// API down: exit 1 with a one-line explanation that says what to start.
#[tokio::test(flavor = "multi_thread")]
async fn unreachable_api_is_one_clear_line() {
    let port = lab_schema::testing::free_port();
    let out = demo(&[
        "--api-url",
        &format!("http://127.0.0.1:{port}"),
        "duplicate-load",
        "8",
        "2",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: cannot reach the API at http://127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("./lab up"), "{stderr}");
    assert!(out.stdout.is_empty());
}

// No worker running: after --timeout the summary says drained=false and the exit code is 1.
#[tokio::test(flavor = "multi_thread")]
async fn undrained_run_times_out_with_exit_1() {
    let stack = start_stack(false).await;
    let out = demo(&[
        "--api-url",
        &stack.api_url,
        "--timeout",
        "1",
        "duplicate-load",
        "2",
        "2",
        "--json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let summary: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(summary["drained"], false);
    assert_eq!(summary["total_submissions"], 4);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: the run did not drain within 1s: 0 of 4 submissions processed"),
        "{stderr}"
    );
}

// Bad arguments are clap errors (exit 2) naming the problem, never panics.
#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_are_usage_errors() {
    for args in [
        vec!["duplicate-load", "0", "2"],
        vec!["duplicate-load", "eight", "2"],
        vec!["duplicate-load", "8"],
        vec!["duplicate-load", "8", "2", "--timeout", "0"],
        vec!["no-such-scenario"],
        vec![],
        vec!["duplicate-load", "8", "1001"],
        vec!["duplicate-load", "-1", "2"],
        vec!["duplicate-load", "99999999999999999999", "2"],
        vec!["duplicate-load", "8", "2", "3"],
        vec!["duplicate-load", "8", "2", "--timeout", "soon"],
        vec!["duplicate-load", "8", "2", "--nope"],
        vec!["duplicate-observe", "--copies", "0"],
        vec!["duplicate-observe", "--interval-ms", "-5"],
        vec!["duplicate-observe", "--interval-ms", "60001"],
        vec!["duplicate-load", "8\n", "2"],
        vec!["duplicate-load", "\u{1f600}", "2"],
        vec!["load", "--clients", "0"],
        vec!["load", "--duration-secs", "0"],
        vec!["load", "--interval-ms", "soon"],
        vec!["chaos", "--jobs", "0"],
        vec!["chaos", "--kill-worker"],
        vec!["chaos", "extra"],
    ] {
        let out = demo(&args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("error") || stderr.contains("Usage"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let out = demo(&["--api-url", "localhost:8080", "duplicate-load", "8", "2"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--api-url must start with http://"));
}
