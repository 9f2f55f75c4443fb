//! `./lab bench drain [JOBS COPIES] [--workers N] [--exercise N] [--concurrency N] [--json]`:
//! drains a full queue with the starter and with each exercise's reference
//! solution, and prints deliveries/s next to Redis's own ceiling (see
//! `lab-tests/src/bench.rs`). Students need not edit this file.

use lab_schema::Exercise;
use lab_testkit::{Profile, built_worker};
use lab_tests::bench::{Ceiling, Code, Drain, Options, drain};

/// Deliveries in flight per worker unless `--concurrency` says otherwise.
const DEFAULT_CONCURRENCY: u32 = 256;

const USAGE: &str = "usage: bench-drain [JOBS COPIES] [--workers N] [--exercise N]... [--concurrency N] [--aof] [--trace] [--json]";

struct Args {
    options: Options,
    exercises: Vec<Exercise>,
    json: bool,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut numbers = Vec::new();
    let mut parsed = Args {
        options: Options {
            jobs: 10_000,
            copies: 2,
            workers: 2,
            // The in-flight limit of a throughput setup; the class keeps the
            // workers' default (8), see docs/maintainers.md.
            worker_args: vec!["--concurrency".into(), DEFAULT_CONCURRENCY.to_string()],
            persistent: false,
            trace: false,
        },
        exercises: Vec::new(),
        json: false,
    };
    let number = |flag: &str, value: Option<String>| -> Result<u32, String> {
        value
            .as_deref()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{flag} needs a positive number\n{USAGE}"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => parsed.json = true,
            "--aof" => parsed.options.persistent = true,
            "--trace" => parsed.options.trace = true,
            "--workers" => parsed.options.workers = number("--workers", args.next())?,
            "--concurrency" => {
                let n = number("--concurrency", args.next())?;
                parsed.options.worker_args = vec!["--concurrency".into(), n.to_string()];
            }
            "--exercise" => {
                let n = number("--exercise", args.next())?;
                let exercise = lab_tests::bench::exercise_numbered(n)?;
                parsed.exercises.push(exercise);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => numbers.push(
                other
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("unknown argument {other:?}\n{USAGE}"))?,
            ),
        }
    }
    match numbers[..] {
        [] => {}
        [jobs, copies] => (parsed.options.jobs, parsed.options.copies) = (jobs, copies),
        _ => return Err(format!("JOBS and COPIES come together\n{USAGE}")),
    }
    if parsed.exercises.is_empty() {
        parsed.exercises = Exercise::ALL.to_vec();
    }
    Ok(parsed)
}

fn main() -> std::process::ExitCode {
    lab_tests::bench::bench_main(
        "bench-drain",
        parse(std::env::args().skip(1)),
        |args| async move { run(&args).await },
    )
}

async fn run(args: &Args) -> anyhow::Result<()> {
    eprintln!("bench-drain: building the starter and the reference solutions (release)");
    let mut codes = vec![Code {
        label: "starter".into(),
        exercise: Exercise::default(),
        binary: built_worker(None, Profile::Release),
    }];
    for &exercise in &args.exercises {
        codes.push(Code {
            label: "reference".into(),
            exercise,
            binary: built_worker(Some(&exercise.solution_patch()), Profile::Release),
        });
    }
    let mut ceiling = Ceiling::new(200_000);
    let mut drains = Vec::new();
    for code in &codes {
        eprintln!(
            "bench-drain: draining {} x {} with the {} of exercise {} ({} workers)",
            args.options.jobs,
            args.options.copies,
            code.label,
            code.exercise.number(),
            args.options.workers
        );
        drains.push(drain(code, &args.options, &mut ceiling).await?);
    }
    let starter = drains[0].deliveries_per_sec;
    let guarded = drains
        .iter()
        .find(|d| d.exercise == 1 && d.code == "reference")
        .map(|d| d.deliveries_per_sec / starter);
    if args.json {
        let value = serde_json::json!({
            "jobs": args.options.jobs,
            "copies": args.options.copies,
            "workers": args.options.workers,
            "redisVersion": redis_version(),
            "drains": drains,
            "guardedToStarter": guarded,
            "standIns": ceiling.stand_ins,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_table(args, &drains, guarded, &ceiling);
    }
    Ok(())
}

fn print_table(args: &Args, drains: &[Drain], guarded: Option<f64>, ceiling: &Ceiling) {
    let o = &args.options;
    println!(
        "drain: {} jobs x {} copies = {} deliveries, {} workers ({}, release, effect delay 0), {}{}",
        o.jobs,
        o.copies,
        u64::from(o.jobs) * u64::from(o.copies),
        o.workers,
        o.worker_args.join(" "),
        redis_version(),
        if o.persistent {
            " with its append-only file"
        } else {
            ""
        }
    );
    println!(
        "{:<10} {:>8} {:>8} {:>13} {:>8} {:>7} {:>13} {:>11} {:>12} {:>13} {:>9}",
        "code",
        "exercise",
        "seconds",
        "deliveries/s",
        "effects",
        "skips",
        "redis cmds/d",
        "redis us/d",
        "workers us/d",
        "redis limit/s",
        "of limit"
    );
    for d in drains {
        println!(
            "{:<10} {:>8} {:>8.2} {:>13.0} {:>8} {:>7} {:>13.1} {:>11.1} {:>12} {:>13.0} {:>8.0}%",
            d.code,
            d.exercise,
            d.seconds,
            d.deliveries_per_sec,
            d.effects,
            d.duplicate_skips,
            d.redis_commands_per_delivery,
            d.redis_cpu_us_per_delivery,
            d.worker_cpu_us_per_delivery
                .map(|us| format!("{us:.1}"))
                .unwrap_or_else(|| "-".into()),
            d.redis_ceiling_per_sec,
            d.share_of_ceiling * 100.0
        );
    }
    for d in drains {
        println!(
            "memory, {} of exercise {}: {:.0} bytes per job in Redis after the drain (job record {} bytes{})",
            d.code,
            d.exercise,
            d.redis_bytes_per_job,
            d.job_record_bytes,
            d.claim_bytes
                .map(|b| format!(", claim processed:<pipeline>:<jobId> {b} bytes"))
                .unwrap_or_default()
        );
    }
    if let Some(ratio) = guarded {
        println!("guarded_to_starter={ratio:.2} (exercise 1's reference solution / the starter)");
    }
    println!(
        "redis limit/s: deliveries/s Redis alone could serve with that code's command mix \
         (redis-benchmark, pipelined, same server){}",
        if ceiling.stand_ins.is_empty() {
            String::new()
        } else {
            format!(
                "; costed as a PING: {}",
                ceiling
                    .stand_ins
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
}

fn redis_version() -> String {
    std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(|v| format!("Redis {v}")))
        })
        .unwrap_or_else(|| "Redis".into())
}
