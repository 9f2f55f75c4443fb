//! `./lab bench drain`: how fast the workers drain a queue that is already full,
//! for the starter and each exercise's reference solution, side by side in one
//! run, next to what Redis itself can do with the same commands. Students need
//! not edit this file.
//!
//! Each code runs on a fresh private `redis-server` (as it starts by default;
//! `--aof`: with the append-only file, as `./lab` and compose run it) with the
//! API and the provider in this process: `JOBS x COPIES`
//! submissions go through the API first, then `WORKERS` worker processes
//! (release build, effect delay 0) start and drain them. The clock runs from
//! the start of the first worker to the acknowledgement of the last delivery.
//!
//! Redis's ceiling: `INFO commandstats` says which commands a delivery cost
//! (including those a script runs); `redis-benchmark`, run in the same process
//! tree against the same server, says how many of each Redis answers per second
//! when nothing else asks; together they give the deliveries per second Redis
//! could serve if the workers cost nothing. The drain's share of that ceiling
//! is the figure that still means something on a busy or a different machine.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lab_schema::{Exercise, keys, run_field};
use lab_testkit::RedisOptions;
use serde::Serialize;

use crate::Stack;

/// One code to drain the queue with.
pub struct Code {
    /// `starter` or `reference solution`.
    pub label: String,
    /// The exercise its jobs name.
    pub exercise: Exercise,
    pub binary: PathBuf,
}

/// What one drain measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drain {
    pub code: String,
    pub exercise: u8,
    pub deliveries: u64,
    pub seconds: f64,
    pub deliveries_per_sec: f64,
    /// Side effects in the run's ledger (emails sent, cards charged).
    pub effects: u64,
    pub duplicate_skips: u64,
    /// Redis commands per delivery, those run by scripts included.
    pub redis_commands_per_delivery: f64,
    /// Redis's own CPU time per delivery, in microseconds.
    pub redis_cpu_us_per_delivery: f64,
    /// The workers' CPU time per delivery, in microseconds (Linux only).
    pub worker_cpu_us_per_delivery: Option<f64>,
    /// Deliveries/s Redis could answer with this command mix and nothing else running.
    pub redis_ceiling_per_sec: f64,
    /// `deliveries_per_sec / redis_ceiling_per_sec`.
    pub share_of_ceiling: f64,
    /// The commands of the mix, per delivery (name -> calls per delivery).
    pub command_mix: BTreeMap<String, f64>,
    /// Redis's time executing each command, per delivery (name -> microseconds;
    /// parsing and network not included).
    pub command_usec: BTreeMap<String, f64>,
    /// Redis's memory after the drain minus before the submissions, per job:
    /// everything a job leaves behind (its record, claim, events, ledger entries).
    pub redis_bytes_per_job: f64,
    /// `MEMORY USAGE` of one job's record (`job:<jobId>`).
    pub job_record_bytes: u64,
    /// `MEMORY USAGE` of one job's idempotency claim (`processed:<pipeline>:<jobId>`),
    /// when the code wrote one.
    pub claim_bytes: Option<u64>,
}

/// How the drains run.
pub struct Options {
    pub jobs: u32,
    pub copies: u32,
    pub workers: u32,
    /// Extra flags for every worker (e.g. `--concurrency 64`).
    pub worker_args: Vec<String>,
    /// Redis with its append-only file (`appendfsync everysec`), as `./lab` and
    /// compose run it; without, as `redis-server` starts by default.
    pub persistent: bool,
    /// Submissions ask for a trace of their jobs (as `verify` does).
    pub trace: bool,
}

/// Drains `options.jobs x options.copies` deliveries with `code`.
pub async fn drain(code: &Code, options: &Options, ceiling: &mut Ceiling) -> anyhow::Result<Drain> {
    let mut stack = Stack::start_with(RedisOptions {
        persistent: options.persistent,
        ..RedisOptions::default()
    })
    .await;
    let api = stack.client();
    // Ids as long as the demo's (`load-1795384698808-fbb3bd-job-7`), so the
    // memory figures are the class's.
    let run_id = format!(
        "drain-{}-{:06x}",
        lab_schema::now_ms(),
        std::process::id() & 0xff_ffff
    );
    let mut redis = stack.redis().await;
    let memory_before = used_memory(&mut redis).await?;
    submit(&api, code.exercise, &run_id, options).await?;

    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut redis)
        .await?;
    let cpu_before = redis_cpu_secs(&mut redis).await?;
    let total = u64::from(options.jobs) * u64::from(options.copies);

    let started = Instant::now();
    let mut workers = Vec::new();
    for n in 1..=options.workers {
        let name = format!("bench-worker-{n}");
        let mut args = vec!["--effect-delay-ms", "0", "--name", &name];
        args.extend(options.worker_args.iter().map(String::as_str));
        workers.push(stack.spawn_worker(&code.binary, &args));
    }
    // LAB_BENCH_PERF=<file>: `perf record` the workers and Redis while they drain.
    let mut perf = std::env::var_os("LAB_BENCH_PERF").map(|file| {
        let pids: Vec<String> = workers
            .iter()
            .map(|&index| stack.workers[index].id().to_string())
            .chain(stack.redis.pid().map(|pid| pid.to_string()))
            .collect();
        let mut file = PathBuf::from(file);
        file.set_extension(format!("{}-{}.data", code.exercise.number(), code.label));
        Command::new("perf")
            .args(["record", "-F", "1999", "-g", "-o"])
            .arg(&file)
            .args(["-p", &pids.join(",")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("perf (Debian: linux-perf)")
    });
    let limit = Duration::from_secs(30) + Duration::from_millis(total);
    loop {
        let processed: Option<u64> = redis::cmd("HGET")
            .arg(keys::run(&run_id))
            .arg(run_field::PROCESSED)
            .query_async(&mut redis)
            .await?;
        if processed.unwrap_or(0) >= total {
            break;
        }
        if started.elapsed() > limit {
            anyhow::bail!(
                "{} (exercise {}) drained {} of {total} deliveries in {} s; worker log:\n{}",
                code.label,
                code.exercise.number(),
                processed.unwrap_or(0),
                limit.as_secs(),
                stack.worker_log(0)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(perf) = perf.as_mut() {
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
    let worker_cpu = workers
        .iter()
        .map(|&index| process_cpu_secs(stack.workers[index].id()))
        .sum::<Option<f64>>();
    let redis_cpu = redis_cpu_secs(&mut redis).await? - cpu_before;
    let stats = command_stats(&mut redis).await?;
    let effects: u64 = redis::cmd("XLEN")
        .arg(keys::ledger(&run_id))
        .query_async(&mut redis)
        .await?;
    let skips: Option<u64> = redis::cmd("HGET")
        .arg(keys::run(&run_id))
        .arg(run_field::DUPLICATE_SKIPS)
        .query_async(&mut redis)
        .await?;
    let first_job = format!("{run_id}-job-1");
    let memory = |key: String| {
        let mut cmd = redis::cmd("MEMORY");
        cmd.arg("USAGE").arg(key).arg("SAMPLES").arg(0);
        cmd
    };
    let job_record_bytes: Option<u64> = memory(keys::job(&first_job))
        .query_async(&mut redis)
        .await?;
    let claim_bytes: Option<u64> = memory(keys::processed("email", &first_job))
        .query_async(&mut redis)
        .await?;
    let redis_bytes_per_job =
        (used_memory(&mut redis).await? as f64 - memory_before as f64) / f64::from(options.jobs);
    // The stats so far are the drain's (the poll above adds a few HGETs: not counted).
    let command_usec: BTreeMap<String, f64> = stats
        .iter()
        .filter(|(_, calls, _)| *calls > 0)
        .map(|(name, _, usec)| (name.clone(), *usec as f64 / total as f64))
        .collect();
    let command_mix: BTreeMap<String, f64> = stats
        .into_iter()
        .map(|(name, calls, _)| (name, calls))
        // The bench's own calls and the workers' start-up are not the mix.
        .filter(|(name, _)| {
            let base = name.split('|').next().unwrap_or(name);
            !matches!(
                base,
                "config" | "info" | "script" | "xgroup" | "client" | "hello"
            )
        })
        .map(|(name, calls)| {
            let calls = if name == "hget" {
                calls.saturating_sub(polls_estimate(seconds))
            } else {
                calls
            };
            (name, calls as f64 / total as f64)
        })
        .filter(|(_, per)| *per > 0.0)
        .collect();
    let _: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("bench:stream")
        .arg("workers")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut redis)
        .await;
    let redis_ceiling_per_sec = ceiling.deliveries_per_sec(stack.redis.port(), &command_mix)?;
    let deliveries_per_sec = total as f64 / seconds;
    Ok(Drain {
        code: code.label.clone(),
        exercise: code.exercise.number(),
        deliveries: total,
        seconds,
        deliveries_per_sec,
        effects,
        duplicate_skips: skips.unwrap_or(0),
        redis_commands_per_delivery: command_mix.values().sum(),
        redis_cpu_us_per_delivery: redis_cpu * 1e6 / total as f64,
        worker_cpu_us_per_delivery: worker_cpu.map(|cpu| cpu * 1e6 / total as f64),
        redis_ceiling_per_sec,
        share_of_ceiling: deliveries_per_sec / redis_ceiling_per_sec,
        command_mix,
        command_usec,
        redis_bytes_per_job,
        job_record_bytes: job_record_bytes.unwrap_or(0),
        claim_bytes,
    })
}

/// About how many HGETs the 1 ms poll sent (an upper bound).
fn polls_estimate(seconds: f64) -> u64 {
    (seconds * 1000.0) as u64 + 1
}

/// Submits the deliveries through the API, as the demo's load does: copy 1 of
/// every job, then copy 2, ..., 64 requests at a time.
async fn submit(
    api: &demo_runner::Api,
    exercise: Exercise,
    run_id: &str,
    options: &Options,
) -> anyhow::Result<()> {
    let mut in_flight = tokio::task::JoinSet::new();
    for _copy in 0..options.copies {
        for n in 1..=options.jobs {
            if in_flight.len() >= 64 {
                in_flight.join_next().await.expect("non-empty")??;
            }
            let (api, job_id, run_id) = (
                api.clone().tracing(options.trace),
                format!("{run_id}-job-{n}"),
                run_id.to_string(),
            );
            in_flight.spawn(async move {
                api.submit_to(exercise, &job_id, &run_id, serde_json::json!({}))
                    .await
            });
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    Ok(())
}

/// Redis's memory in use (`INFO memory`), in bytes.
async fn used_memory(redis: &mut impl redis::aio::ConnectionLike) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(redis).await?;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("INFO memory has no used_memory"))
}

/// Redis's CPU time so far (user + system), in seconds.
async fn redis_cpu_secs(redis: &mut impl redis::aio::ConnectionLike) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(redis).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(field("used_cpu_user") + field("used_cpu_sys"))
}

/// Calls and microseconds per command since the last `CONFIG RESETSTAT` (`INFO
/// commandstats`; a script's time includes the commands it runs).
async fn command_stats(
    redis: &mut impl redis::aio::ConnectionLike,
) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| rest.split(',').find_map(|kv| kv.strip_prefix(key));
            Some((
                name.to_string(),
                field("calls=")?.parse().ok()?,
                field("usec=")?.parse().ok()?,
            ))
        })
        .collect())
}

/// CPU time (user + system) of a process, in seconds; `None` off Linux.
fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) start after ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Redis's own rate for each command of a mix, measured once per command with
/// `redis-benchmark` (pipelined, so the network is not the limit).
pub struct Ceiling {
    /// Requests per `redis-benchmark` run.
    requests: u32,
    rates: BTreeMap<&'static str, f64>,
    /// Commands measured by a stand-in (the cost of a PING), named for the report.
    pub stand_ins: std::collections::BTreeSet<String>,
}

/// The command `redis-benchmark` runs for each command of the mix: the same
/// command on keys of the same shape. Scripts and transactions are counted by
/// the commands they run (Redis counts those too); their own call costs what a
/// PING costs, and so does any command not listed here.
fn benchmark_command(name: &str) -> Option<&'static str> {
    Some(match name {
        "set" => "SET bench:claim:__rand_int__ 1 NX EX 86400",
        "get" => "GET bench:claim:__rand_int__",
        "del" => "DEL bench:claim:__rand_int__",
        "incr" => "INCR bench:n:__rand_int__",
        "incrby" => "INCRBY bench:n:__rand_int__ 1",
        "hset" => "HSET bench:job:__rand_int__ status processing",
        "hget" => "HGET bench:job:__rand_int__ status",
        "hmget" => "HMGET bench:job:__rand_int__ deliveriesDone deadLettered submissions",
        "hmset" => {
            "HMSET bench:job:__rand_int__ idempotency duplicate-skipped claimKey processed:email:job-__rand_int__"
        }
        "hdel" => "HDEL bench:attempts f:__rand_int__",
        "hincrby" => "HINCRBY bench:job:__rand_int__ processAttempts 1",
        "expire" => "EXPIRE bench:job:__rand_int__ 86400",
        "pexpire" => "PEXPIRE bench:claim:__rand_int__ 3000",
        "xadd" => {
            "XADD bench:events MAXLEN ~ 10000 * kind delivery jobId job-__rand_int__ deliveryId 1-0 consumer worker-1 detail x"
        }
        "xack" => "XACK bench:stream workers 1-__rand_int__",
        "xdel" => "XDEL bench:stream 1-__rand_int__",
        "sadd" => "SADD bench:set:__rand_int__ job",
        "zadd" => "ZADD bench:zset __rand_int__ run",
        _ => return None,
    })
}

impl Ceiling {
    /// Measures each command with `requests` requests (200 000 give a steady figure).
    pub fn new(requests: u32) -> Ceiling {
        Ceiling {
            requests,
            rates: BTreeMap::new(),
            stand_ins: Default::default(),
        }
    }

    /// Deliveries/s Redis on `port` could serve with `mix` (calls per delivery).
    pub fn deliveries_per_sec(
        &mut self,
        port: u16,
        mix: &BTreeMap<String, f64>,
    ) -> anyhow::Result<f64> {
        let mut secs_per_delivery = 0.0;
        for (name, per_delivery) in mix {
            let command = match benchmark_command(name) {
                Some(command) => command,
                None => {
                    if !matches!(name.as_str(), "evalsha" | "eval" | "multi" | "exec") {
                        self.stand_ins.insert(name.clone());
                    }
                    "PING"
                }
            };
            let rate = match self.rates.get(command) {
                Some(rate) => *rate,
                None => {
                    let rate = redis_benchmark(port, command, self.requests)?;
                    self.rates.insert(command, rate);
                    rate
                }
            };
            secs_per_delivery += per_delivery / rate;
        }
        Ok(1.0 / secs_per_delivery)
    }
}

/// Requests per second `redis-benchmark` measures for one command.
fn redis_benchmark(port: u16, command: &str, requests: u32) -> anyhow::Result<f64> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-n", &requests.to_string()])
        .args(["-c", "16", "-P", "32", "-r", "100000", "--csv"])
        .args(command.split(' '))
        .output()
        .map_err(|err| {
            anyhow::anyhow!(
                "redis-benchmark could not start ({err}): it comes with redis-server (Debian: redis-tools)"
            )
        })?;
    anyhow::ensure!(
        out.status.success(),
        "redis-benchmark {command} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // CSV: a header line, then "<test>","<requests per second>",...
    text.lines()
        .skip(1)
        .find_map(|line| {
            line.split("\",\"")
                .nth(1)?
                .trim_matches('"')
                .parse::<f64>()
                .ok()
        })
        .ok_or_else(|| anyhow::anyhow!("redis-benchmark printed no rate: {text}"))
}

/// The exercise `--exercise N` names, or the usage error to print.
pub fn exercise_numbered(n: u32) -> Result<Exercise, String> {
    u8::try_from(n)
        .ok()
        .and_then(Exercise::from_number)
        .ok_or_else(|| format!("no exercise {n} (there are {})", Exercise::numbers()))
}

/// A benchmark program's `main`: `parsed` (a usage error exits 2), then `run`
/// on a tokio runtime (an error is printed after `name`, and exits 1).
pub fn bench_main<A, F>(
    name: &str,
    parsed: Result<A, String>,
    run: impl FnOnce(A) -> F,
) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let args = match parsed {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
