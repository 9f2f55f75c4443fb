//! `./lab bench verify [--runs N] [--exercise N]...`: how long a student waits
//! for `verify --exercise N`, with the starter and with the reference solution,
//! on a private stack with the lab's own settings (two workers restarted when
//! they die, the claim idle time of `./lab`), everything built in release as
//! `./lab` builds it. Prints one line per exercise and code: the fastest, the
//! median and the slowest of the runs, and the verdict. Students need not edit
//! this file.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use lab_schema::Exercise;
use lab_schema::exercise::Component;
use lab_testkit::{Profile, built_programs};
use lab_tests::Stack;

const USAGE: &str = "usage: bench-verify [--runs N] [--exercise N]... [--json]";

struct Args {
    runs: u32,
    exercises: Vec<Exercise>,
    json: bool,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        runs: 3,
        exercises: Vec::new(),
        json: false,
    };
    let number = |flag: &str, value: Option<String>| -> Result<u32, String> {
        value
            .as_deref()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| format!("{flag} needs a number from 1 to 100\n{USAGE}"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => parsed.json = true,
            "--runs" => parsed.runs = number("--runs", args.next())?,
            "--exercise" => {
                let n = number("--exercise", args.next())?;
                let exercise = lab_tests::bench::exercise_numbered(n)?;
                parsed.exercises.push(exercise);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if parsed.exercises.is_empty() {
        parsed.exercises = Exercise::ALL.to_vec();
    }
    Ok(parsed)
}

fn main() -> std::process::ExitCode {
    lab_tests::bench::bench_main(
        "bench-verify",
        parse(std::env::args().skip(1)),
        |args| async move { run(&args).await },
    )
}

/// The programs one code runs: the worker, the API (`None`: the bench's own,
/// in process) and the demo-runner that verifies.
struct Programs {
    worker: PathBuf,
    api: Option<PathBuf>,
    demo: PathBuf,
}

/// The starter (`patch` `None`) or a patched copy, built in release.
fn programs(exercise: Exercise, patch: Option<&str>) -> Programs {
    let [worker, api, demo] =
        built_programs(["worker", "api", "demo-runner"], patch, Profile::Release);
    Programs {
        worker,
        // The worker exercises run behind the bench's own API (the same code).
        api: (exercise.info().component == Component::Api).then_some(api),
        demo,
    }
}

/// One exercise's runs with one code: seconds each, and whether each passed.
struct Timed {
    exercise: Exercise,
    code: &'static str,
    secs: Vec<f64>,
    passed: Vec<bool>,
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let mut timed = Vec::new();
    for &exercise in &args.exercises {
        for (code, patch) in [
            ("starter", None),
            ("reference", Some(exercise.solution_patch())),
        ] {
            eprintln!(
                "bench-verify: building exercise {}'s {code} (release)",
                exercise.number()
            );
            let programs = programs(exercise, patch.as_deref());
            let stack = Stack::as_the_lab(programs.api.as_deref(), &programs.worker).await;
            let mut one = Timed {
                exercise,
                code,
                secs: Vec::new(),
                passed: Vec::new(),
            };
            for run in 1..=args.runs {
                eprintln!(
                    "bench-verify: verify --exercise {} with the {code}, run {run} of {}",
                    exercise.number(),
                    args.runs
                );
                let demo = programs.demo.clone();
                let number = exercise.number().to_string();
                let (api_url, provider_url) = (stack.api_url.clone(), stack.provider_url.clone());
                let started = Instant::now();
                let status = tokio::task::spawn_blocking(move || {
                    Command::new(demo)
                        .args(["--api-url", &api_url, "--provider-url", &provider_url])
                        .args(["verify", "--exercise", &number])
                        .current_dir(std::env::temp_dir())
                        .output()
                })
                .await??
                .status;
                one.secs.push(started.elapsed().as_secs_f64());
                one.passed.push(status.code() == Some(0));
            }
            timed.push(one);
        }
    }
    print(&timed, args.json);
    Ok(())
}

fn print(timed: &[Timed], json: bool) {
    let stats = |t: &Timed| {
        let mut sorted = t.secs.clone();
        sorted.sort_by(f64::total_cmp);
        (
            sorted[0],
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1],
        )
    };
    if json {
        let rows: Vec<serde_json::Value> = timed
            .iter()
            .map(|t| {
                let (min, median, max) = stats(t);
                serde_json::json!({
                    "exercise": t.exercise.number(), "code": t.code, "runs": t.secs.len(),
                    "minSecs": min, "medianSecs": median, "maxSecs": max,
                    "passed": t.passed.iter().filter(|p| **p).count(),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "verify": rows }));
        return;
    }
    for t in timed {
        let (min, median, max) = stats(t);
        println!(
            "exercise={} code={} runs={} verify_secs_min={min:.1} verify_secs_median={median:.1} verify_secs_max={max:.1} passed={}/{}",
            t.exercise.number(),
            t.code,
            t.secs.len(),
            t.passed.iter().filter(|p| **p).count(),
            t.secs.len()
        );
    }
}
