//! The demo-runner binary as a user runs it: its output formats, exit codes and
//! one-line errors. The stack (real redis-server, API, starter worker) runs in-process.

use std::process::Output;
use std::time::Duration;

use lab_tests::{Stack, demo_in, scratch_dir, text};
use serde_json::Value;

/// Redis, the API and (optionally) one starter worker, all in this process.
async fn start_stack(with_worker: bool) -> Stack {
    let mut stack = Stack::start().await;
    if with_worker {
        stack.start_in_process(worker::Config {
            redis_url: stack.redis.url(),
            effect_delay: Duration::from_millis(20),
            ..worker::Config::default()
        });
    }
    stack
}

/// Runs the real demo-runner binary (off the async runtime's threads).
async fn demo(args: &[&str]) -> Output {
    demo_in(&std::env::temp_dir(), args).await
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
    let port = lab_testkit::free_port();
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

// --save writes the summary (keys in order, plus the printed output) to a file relative to
// the working directory; compare puts two of them side by side with a one-line verdict.
#[tokio::test(flavor = "multi_thread")]
async fn save_then_compare_two_runs() {
    let stack = start_stack(true).await;
    let dir = scratch_dir("compare");
    let api = ["--api-url", stack.api_url.as_str()];
    for file in ["before.json", "after.json"] {
        let out = demo_in(
            &dir,
            &[&api[..], &["duplicate-load", "3", "2", "--save", file]].concat(),
        )
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("before.json")).unwrap()).unwrap();
    assert_eq!(saved["observed_effects_total"], 6);
    assert!(
        saved["output"]
            .as_str()
            .unwrap()
            .contains("duplicate_effects=3\n")
    );

    let out = demo_in(&dir, &["compare", "before.json", "after.json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("key "), "{stdout}");
    let effects = stdout
        .lines()
        .find(|l| l.starts_with("observed_effects_total"))
        .unwrap();
    assert_eq!(
        effects.split_whitespace().collect::<Vec<_>>(),
        ["observed_effects_total", "6", "6"]
    );
    assert!(
        stdout.contains("\n# still broken: 6 effects for 3 unique jobs, 3 duplicate side effects, no better than before\n"),
        "{stdout}"
    );
    // Both runs were made by the same starter: compare says the code did not change.
    assert!(
        stdout.ends_with("Did the rebuild fail? Rebuild: docker compose up --build -d (natively ./lab restart worker), and read the compiler's errors if it fails\n")
            && stdout.contains("# nothing changed between these runs: both were made by the same code (job.rs #"),
        "{stdout}"
    );
    let out = demo_in(&dir, &["compare", "before.json", "after.json", "--json"]).await;
    let json: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(json["fixed"], false);
    assert_eq!(json["after"]["duplicate_effects"], 3);
}

// Every scenario that offers --save writes a file compare accepts, and compare
// shows every key of it: a load's own keys and the dead letters too.
#[tokio::test(flavor = "multi_thread")]
async fn a_saved_load_is_compared_key_by_key() {
    let stack = start_stack(true).await;
    let dir = scratch_dir("compare-load");
    let api = ["--api-url", stack.api_url.as_str()];
    let load = [
        "load",
        "--clients",
        "2",
        "--duration-secs",
        "1",
        "--jobs",
        "5",
        "--interval-ms",
        "50",
    ];
    for file in ["load-a.json", "load-b.json"] {
        let out = demo_in(&dir, &[&api[..], &load[..], &["--save", file]].concat()).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = demo_in(&dir, &["compare", "load-a.json", "load-b.json"]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{stdout}", text(&out.stderr));
    for key in [
        "requests_per_sec",
        "statuses",
        "clients",
        "dead_lettered",
        "settled",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(key)),
            "compare does not show {key}:\n{stdout}"
        );
    }
    // A load against the starter applies duplicates: compare says so.
    assert!(stdout.contains("# still broken"), "{stdout}");
}

// Bad files for compare: one clear line naming the file, exit 1. A --save path whose
// folder does not exist fails before anything is submitted (Redis stays empty).
#[tokio::test(flavor = "multi_thread")]
async fn bad_saved_files_are_clear_errors_and_change_nothing() {
    let stack = start_stack(true).await;
    let dir = scratch_dir("bad");
    let api = ["--api-url", stack.api_url.as_str()];
    let out = demo_in(
        &dir,
        &[
            &api[..],
            &[
                "duplicate-observe",
                "--interval-ms",
                "20",
                "--save",
                "observe.json",
            ],
        ]
        .concat(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = demo_in(
        &dir,
        &[&api[..], &["duplicate-load", "2", "2", "--json"]].concat(),
    )
    .await;
    std::fs::write(dir.join("load.json"), &out.stdout).unwrap();
    std::fs::write(dir.join("notjson.json"), "scenario=duplicate-load\n").unwrap();
    std::fs::write(
        dir.join("partial.json"),
        r#"{"scenario": "duplicate-load", "run_id": "x"}"#,
    )
    .unwrap();

    for (args, expected) in [
        (["compare", "missing.json", "load.json"], "cannot read "),
        (
            ["compare", "notjson.json", "load.json"],
            "notjson.json is not JSON",
        ),
        (
            ["compare", "partial.json", "load.json"],
            "partial.json is not a saved demo-runner summary: missing field",
        ),
        (
            ["compare", "observe.json", "load.json"],
            "cannot compare a duplicate-observe run",
        ),
    ] {
        let out = demo_in(&dir, &args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    // evidence never overwrites a file that may hold the student's notes, unless --force.
    std::fs::write(dir.join("evidence.md"), "my explanation\n").unwrap();
    let out = demo_in(&dir, &[&api[..], &["evidence"]].concat()).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("evidence.md exists and may hold your written explanation"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("evidence.md")).unwrap(),
        "my explanation\n"
    );

    // A summary printed with --json (no output text) is accepted too.
    let out = demo_in(&dir, &["compare", "load.json", "load.json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut redis = redis::Client::open(stack.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let before = lab_testkit::scan_keys(&mut redis, "*").await.unwrap();
    let out = demo_in(
        &dir,
        &[
            &api[..],
            &["duplicate-load", "2", "2", "--save", "no-such-dir/x.json"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        lab_testkit::scan_keys(&mut redis, "*").await.unwrap(),
        before,
        "nothing was submitted"
    );

    // evidence without its files: exit 1, and no evidence file is written.
    let out = demo_in(&dir, &[&api[..], &["evidence", "--out", "e.md"]].concat()).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("observe-before.json"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.join("e.md").exists());

    // --save belongs to the scenarios: elsewhere it is a usage error.
    let out = demo_in(
        &dir,
        &["compare", "load.json", "load.json", "--save", "x.json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
}

// `exercises` prints the registry without a stack: one tab-separated line per
// exercise (number, folder, title, student file, program, scenarios), or one JSON
// array. --save is refused there as elsewhere, naming every scenario.
#[tokio::test(flavor = "multi_thread")]
async fn exercises_lists_the_registry() {
    let out = demo(&["exercises"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let exercises = lab_schema::Exercise::ALL;
    assert_eq!(stdout.lines().count(), exercises.len(), "{stdout}");
    for (line, exercise) in stdout.lines().zip(exercises) {
        let info = exercise.info();
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(
            fields,
            [
                info.number.to_string().as_str(),
                info.slug,
                info.title,
                info.student_file,
                info.component.package(),
                info.scenarios.join(",").as_str(),
            ],
            "{line}"
        );
    }
    assert!(stdout.starts_with("1\t01-duplicate-delivery\tduplicate delivery\tworker/src/job.rs\tworker\tduplicate-observe,duplicate-load\n"));

    let out = demo(&["exercises", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = json.as_array().unwrap();
    assert_eq!(all.len(), exercises.len());
    assert_eq!(all[3]["number"], 4);
    assert_eq!(all[3]["student_file"], "api/src/idempotency.rs");
    assert_eq!(all[3]["program"], "api");
    assert_eq!(all[3]["scenarios"], serde_json::json!(["retried-post"]));

    let out = demo(&["exercises", "--save", "x.json"]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "--save applies to the scenarios only (duplicate-observe, duplicate-load, crash-window, double-charge, retried-post, retry-storm, new-jobid, unique-lock, load, chaos)"
        ),
        "{stderr}"
    );
}
