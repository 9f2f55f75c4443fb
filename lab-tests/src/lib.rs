//! The one test kit of the lab's end-to-end and fault tests; students need not
//! edit this crate. A real redis-server on a free port, the API in-process, and
//! workers: the starter in-process, or real worker processes (the starter
//! binary or one built with a patch applied), each logging to a file of its
//! own (`TEST_LOG=1` prints the logs when the stack is dropped); and the real
//! demo-runner binary.
//!
//! | test file | what it shows |
//! |---|---|
//! | `tests/lab.rs` | the starter and the solution through the scenarios, kills, SIGTERM, chaos, the event log |
//! | `tests/faults.rs` | poisoned jobs, malformed entries, Redis restarts, passwords, load, slow deliveries |
//! | `tests/settled.rs` | a run's numbers are final only when every attempt has returned (a paused worker) |
//! | `tests/orders.rs` | exercise 4's `retried-post` against the starter API and the solution's |
//! | `tests/exercises.rs` | every exercise: starter fails `verify`, solution passes, each fixture fails its check |
//! | `tests/cli.rs` | the demo-runner as a user runs it: formats, exit codes, one-line errors |
//! | `tests/handout.rs` | each handout's output blocks are what the code prints |
//! | `tests/native.rs` | the native stack as `./lab` runs it |
//! | `tests/bench.rs` | the drain benchmark counts what each code did |
//!
//! `src/bench.rs` and `src/bin/bench-drain.rs` are `./lab bench drain`, built on this kit.

pub mod bench;
pub mod grade;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lab_schema::{JobView, RunSummary};
use lab_testkit::{RedisOptions, RedisServer};

/// The starter worker binary, exactly as students get it (built by cargo with this crate).
pub fn starter_worker() -> PathBuf {
    sibling_binary("starter-worker")
}

/// The demo-runner binary (`src/bin/demo.rs`, the demo-runner's own `main`).
pub fn demo_binary() -> PathBuf {
    sibling_binary("demo")
}

/// A binary of the workspace's target folder: tests run from `target/<profile>/deps/`,
/// this crate's programs (`grade`) from `target/<profile>/`.
fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().expect("target/<profile>");
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>/deps")
    } else {
        dir
    };
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests with cargo (it builds the workspace's binaries)",
        path.display()
    );
    path
}

/// Which workers [`Stack::with_two`] starts.
pub enum Workers<'a> {
    /// The starter binary, as students get it.
    Starter,
    /// A worker binary (the starter, or one from `lab_testkit::patched_worker`).
    Binary(&'a Path),
}

/// Where the stack's API runs.
enum Api {
    /// Stops when dropped.
    InProcess(#[allow(dead_code)] api::Background),
    /// A patched API binary (exercise 4's student file is in the API), killed on drop.
    Process(Child, PathBuf),
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Api::Process(child, log) = self {
            stop_student_program(child);
            if std::env::var_os("TEST_LOG").is_some() {
                eprintln!(
                    "--- api ---\n{}",
                    std::fs::read_to_string(&*log).unwrap_or_default()
                );
            }
            let _ = std::fs::remove_file(&*log);
        }
    }
}

/// Redis, the API and any number of workers, all torn down on drop.
pub struct Stack {
    pub redis: RedisServer,
    pub api_url: String,
    /// The API: in this process, or a process of a patched API binary ([`Stack::with_api`]).
    _api: Api,
    /// The provider (exercise 3's payment gateway), in this process.
    pub provider_url: String,
    _provider: provider::Background,
    /// The worker processes, in the order they were started.
    pub workers: Vec<Child>,
    logs: Vec<PathBuf>,
    in_process: Vec<tokio::sync::oneshot::Sender<()>>,
    supervised: Vec<Supervised>,
}

/// A line of the lab's own logging (`<time> <LEVEL> <target>: ...`) that is not
/// an error and not of the student's module.
fn is_lab_logging(line: &str, module: &str) -> bool {
    let mut words = line.split_whitespace();
    let (Some(time), Some(level), Some(target)) = (words.next(), words.next(), words.next()) else {
        return false;
    };
    let target = target.trim_end_matches(':');
    time.contains('T')
        && ["TRACE", "DEBUG", "INFO", "WARN"].contains(&level)
        && !(target == module || target.starts_with(&format!("{module}::")))
}

/// Runs the programs built from a student's file as the user `LAB_STUDENT_UID`
/// names, when it is set (`./lab grade --docker`: the grader is another user,
/// so the student's code cannot touch the grader's files or processes); and,
/// once [`isolate_student_programs`] was called, in a process group of their
/// own, so that whatever they started dies with them.
fn as_student(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    if let Some(uid) = std::env::var("LAB_STUDENT_UID")
        .ok()
        .and_then(|u| u.parse::<u32>().ok())
    {
        command.uid(uid).gid(uid);
    }
    if ISOLATED.load(Ordering::SeqCst) {
        command.process_group(0);
    }
}

/// Whether the student's programs get process groups of their own (grading).
static ISOLATED: AtomicBool = AtomicBool::new(false);

/// The process groups of the student's programs still to be killed.
static GROUPS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// From now on, each student program runs in a process group of its own, and
/// stopping it kills the whole group: a process it forked (a daemon that
/// outlives the checks) dies too. `./lab grade` calls it.
pub fn isolate_student_programs() {
    ISOLATED.store(true, Ordering::SeqCst);
}

fn started_student_program(child: &Child) {
    if ISOLATED.load(Ordering::SeqCst) {
        GROUPS.lock().unwrap().push(child.id());
    }
}

/// Kills a student program and (isolated) its process group, then reaps it.
fn stop_student_program(child: &mut Child) {
    if ISOLATED.load(Ordering::SeqCst) {
        kill_group(child.id());
        GROUPS.lock().unwrap().retain(|g| *g != child.id());
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn kill_group(group: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
}

/// Kills every student program's process group still running (an
/// interrupted grading run).
pub fn kill_student_programs() {
    for group in GROUPS.lock().unwrap().drain(..) {
        kill_group(group);
    }
}

/// The claim idle time of the tests' workers: a failed delivery comes back
/// after a second.
const TEST_CLAIM_IDLE_MS: &str = "1000";

/// A worker process started again 200 ms after it dies (a crash), under the same
/// name, as `./lab` and compose's restart policy do; stopped with the stack.
struct Supervised {
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    log: PathBuf,
}

impl Supervised {
    fn start(command: impl Fn() -> Command + Send + 'static, log: PathBuf) -> Supervised {
        let stop = Arc::new(AtomicBool::new(false));
        let child: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
        let spawn = {
            let log = log.clone();
            move || {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap();
                let child = command()
                    .env("NO_COLOR", "1")
                    .stdout(Stdio::null())
                    .stderr(file)
                    .spawn()
                    .expect("start worker");
                started_student_program(&child);
                child
            }
        };
        *child.lock().unwrap() = Some(spawn());
        let thread = {
            let (stop, child, log) = (stop.clone(), child.clone(), log.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                    let mut guard = child.lock().unwrap();
                    let exited = guard.as_mut().map(|c| c.try_wait());
                    if let Some(Ok(Some(status))) = exited {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        use std::io::Write;
                        if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(&log) {
                            let _ = writeln!(
                                file,
                                "test kit: the worker died ({status}); restarting it"
                            );
                        }
                        // What the dead worker started dies with it (grading).
                        if let Some(dead) = guard.as_mut() {
                            stop_student_program(dead);
                        }
                        drop(guard);
                        std::thread::sleep(Duration::from_millis(200));
                        *child.lock().unwrap() = Some(spawn());
                    }
                }
            })
        };
        Supervised {
            stop,
            child,
            thread: Some(thread),
            log,
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut child) = self.child.lock().unwrap().take() {
            stop_student_program(&mut child);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if std::env::var_os("TEST_LOG").is_some() {
            eprintln!(
                "--- {} ---\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Stack {
    /// Redis and the API, no worker yet.
    pub async fn start() -> Stack {
        Stack::start_with(RedisOptions::default()).await
    }

    pub async fn start_with(options: RedisOptions) -> Stack {
        let redis = RedisServer::start_with(options);
        let api = api::spawn(&redis.url()).await.unwrap();
        let provider = provider::spawn(&redis.url(), provider::Config::default())
            .await
            .unwrap();
        Stack {
            redis,
            api_url: api.url.clone(),
            _api: Api::InProcess(api),
            provider_url: provider.url.clone(),
            _provider: provider,
            workers: Vec::new(),
            logs: Vec::new(),
            in_process: Vec::new(),
            supervised: Vec::new(),
        }
    }

    /// Two worker processes (`worker-1`, `worker-2`) with the lab's defaults
    /// (concurrency 8, 200 ms effect, 3 s lease) but a 1 s claim idle time, so a
    /// failed delivery is redelivered quickly. They are restarted when they die,
    /// as `./lab` and compose restart them (exercise 2 crashes them on purpose).
    pub async fn with_two(workers: Workers<'_>) -> Stack {
        let mut stack = Stack::start().await;
        stack.add_two_workers(workers, Some(TEST_CLAIM_IDLE_MS));
        stack
    }

    /// [`Stack::with_two`] starter workers, behind the API binary `api_binary` (a
    /// patched build of the API, e.g. with exercise 4's solution) run as a process.
    pub async fn with_api(api_binary: &Path) -> Stack {
        Stack::with_api_and(api_binary, Workers::Starter).await
    }

    /// [`Stack::with_two`] `workers` behind the API binary `api_binary`.
    pub async fn with_api_and(api_binary: &Path, workers: Workers<'_>) -> Stack {
        let mut stack = Stack::start().await;
        stack.use_api_binary(api_binary).await;
        stack.add_two_workers(workers, Some(TEST_CLAIM_IDLE_MS));
        stack
    }

    /// Replaces this process's API with the API binary `api_binary`, run as a process.
    async fn use_api_binary(&mut self, api_binary: &Path) {
        let stack = self;
        let port = lab_testkit::free_port();
        let log = std::env::temp_dir().join(format!(
            "lab-test-api-{}-{}.log",
            std::process::id(),
            stack.redis.port()
        ));
        let mut command = Command::new(api_binary);
        as_student(&mut command);
        let child = command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--redis-url", &stack.redis.url()])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the api");
        started_student_program(&child);
        stack._api = Api::Process(child, log);
        stack.api_url = format!("http://127.0.0.1:{port}");
        let healthz = format!("{}/healthz", stack.api_url);
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(&healthz).await.is_err() {
            assert!(Instant::now() < deadline, "the api binary did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The stack that runs `exercise` with `binary`, the program its student
    /// file is built into (a worker, or the API), patched; `None`: the starter.
    pub async fn for_exercise(exercise: lab_schema::Exercise, binary: Option<&Path>) -> Stack {
        use lab_schema::exercise::Component;
        match (binary, exercise.info().component) {
            (None, _) => Stack::with_two(Workers::Starter).await,
            (Some(worker), Component::Worker) => Stack::with_two(Workers::Binary(worker)).await,
            (Some(api), Component::Api) => Stack::with_api(api).await,
        }
    }

    /// Two supervised workers of `worker` with the lab's own settings (the
    /// claim idle time of `./lab`, 10 s), behind the API binary `api_binary`
    /// (`None`: this process's API): the stack a benchmark of `verify` measures.
    pub async fn as_the_lab(api_binary: Option<&Path>, worker: &Path) -> Stack {
        let mut stack = Stack::start().await;
        if let Some(api) = api_binary {
            stack.use_api_binary(api).await;
        }
        stack.add_two_workers(Workers::Binary(worker), None);
        stack
    }

    /// Starts the two supervised workers of [`Stack::with_two`], with the
    /// claim idle time `claim_idle_ms` (`None`: the workers' default).
    fn add_two_workers(&mut self, workers: Workers<'_>, claim_idle_ms: Option<&'static str>) {
        let stack = self;
        let binary = match workers {
            Workers::Starter => starter_worker(),
            Workers::Binary(binary) => binary.to_path_buf(),
        };
        for n in 1..=2 {
            let name = format!("worker-{n}");
            let url = stack.redis.url();
            let provider_url = stack.provider_url.clone();
            let binary = binary.clone();
            let log = std::env::temp_dir().join(format!(
                "lab-test-worker-{}-{}-{name}.log",
                std::process::id(),
                stack.redis.port(),
            ));
            stack.supervised.push(Supervised::start(
                move || {
                    let mut command = Command::new(&binary);
                    as_student(&mut command);
                    command.args(["--redis-url", &url]).args([
                        "--name",
                        &name,
                        "--provider-url",
                        &provider_url,
                    ]);
                    if let Some(ms) = claim_idle_ms {
                        command.args(["--claim-idle-ms", ms]);
                    }
                    command
                },
                log,
            ));
        }
    }

    /// Runs the starter worker in this process with `config`.
    /// (Its `provider_url` is this stack's provider's when it was left at the default.)
    pub fn start_in_process(&mut self, mut config: worker::Config) {
        if config.provider_url == worker::Config::default().provider_url {
            config.provider_url = self.provider_url.clone();
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(worker::run(worker::Exercises, config, async {
            let _ = stopped.await;
        }));
        self.in_process.push(stop);
    }

    /// Starts a worker process on this stack's Redis; `args` are extra flags.
    /// It is named `worker-<n>` (n counts from 1) unless `args` name it.
    /// Returns its index in `workers`.
    pub fn spawn_worker(&mut self, binary: &Path, args: &[&str]) -> usize {
        let url = self.redis.url();
        self.spawn_worker_on(binary, &url, args)
    }

    /// Starts a worker process on the Redis at `redis_url`.
    pub fn spawn_worker_on(&mut self, binary: &Path, redis_url: &str, args: &[&str]) -> usize {
        let index = self.workers.len();
        let log = std::env::temp_dir().join(format!(
            "lab-test-worker-{}-{}-{index}.log",
            std::process::id(),
            self.redis.port(),
        ));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(binary);
        command.args(["--redis-url", redis_url]).args(args);
        if !args.contains(&"--provider-url") {
            command.args(["--provider-url", &self.provider_url]);
        }
        if !args.contains(&"--name") {
            command.args(["--name", &format!("worker-{}", index + 1)]);
        }
        let child = command
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start worker");
        self.workers.push(child);
        self.logs.push(log);
        index
    }

    pub fn worker_running(&mut self, index: usize) -> bool {
        matches!(self.workers[index].try_wait(), Ok(None))
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`, `TERM`) to a worker process.
    pub fn signal_worker(&self, index: usize, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.workers[index].id().to_string())
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} worker {index}");
    }

    /// Everything the supervised workers of [`Stack::with_two`] logged so far.
    pub fn supervised_logs(&self) -> String {
        self.supervised
            .iter()
            .map(|s| std::fs::read_to_string(&s.log).unwrap_or_default())
            .collect()
    }

    /// What the student's programs (the workers, and a patched API) wrote
    /// that is not the lab's own logging: their own output (`println!`,
    /// `eprintln!`), panics, restarts, the lab's errors, and any log line of
    /// the student's module (`module`, e.g. `worker::job`). The last `max`
    /// lines, in each log's order.
    pub fn student_log_lines(&self, module: &str, max: usize) -> Vec<String> {
        let mut text = self.supervised_logs();
        if let Api::Process(_, log) = &self._api {
            text.push_str(&std::fs::read_to_string(log).unwrap_or_default());
        }
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !is_lab_logging(l, module))
            .map(|l| l.chars().take(400).collect())
            .collect();
        lines[lines.len().saturating_sub(max)..].to_vec()
    }

    pub fn worker_log(&self, index: usize) -> String {
        std::fs::read_to_string(&self.logs[index]).unwrap_or_default()
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Runs a scenario through the demo-runner's library, as the binary does.
    pub async fn scenario(&self, scenario: demo_runner::Scenario) -> demo_runner::ScenarioRun {
        demo_runner::run_scenario_with(&self.client(), &scenario, Duration::from_secs(60), false)
            .await
            .expect("scenario ran")
    }

    /// The demo-runner's client of this stack's API and provider.
    pub fn client(&self) -> demo_runner::Api {
        demo_runner::Api::new(&self.api_url)
            .expect("API url")
            .with_provider(&self.provider_url)
    }

    /// Runs the demo-runner binary against this stack, in `dir`.
    pub async fn demo(&self, dir: &Path, args: &[&str]) -> Output {
        let mut all = vec![
            "--api-url",
            self.api_url.as_str(),
            "--provider-url",
            self.provider_url.as_str(),
        ];
        all.extend_from_slice(args);
        demo_in(dir, &all).await
    }

    pub async fn job(&self, job_id: &str) -> JobView {
        get_json(format!("{}/jobs/{job_id}", self.api_url)).await
    }

    pub async fn run(&self, run_id: &str) -> RunSummary {
        get_json(format!("{}/runs/{run_id}", self.api_url)).await
    }

    pub async fn submit(&self, job_id: &str, run_id: &str) {
        self.submit_with(job_id, run_id, serde_json::json!({}))
            .await
    }

    pub async fn submit_with(&self, job_id: &str, run_id: &str, payload: serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/jobs", self.api_url))
            .json(&serde_json::json!({ "jobId": job_id, "runId": run_id, "payload": payload }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }

    /// Polls `check` every 50 ms until it holds; panics with `what` after `limit`.
    pub async fn wait_for<F, Fut>(&self, what: &str, limit: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while !check().await {
            assert!(start.elapsed() < limit, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The id of this stack's only run so far whose key matches `pattern`
    /// (e.g. `run:load-*`: a scenario makes a fresh one), once it exists.
    pub async fn only_run(&self, pattern: &str) -> Option<String> {
        let mut redis = self.redis().await;
        let runs = lab_testkit::scan_keys(&mut redis, pattern).await.unwrap();
        Some(runs.first()?.trim_start_matches("run:").to_string())
    }

    /// True when worker `consumer` (e.g. `worker-2`) holds an attempt of `run_id`
    /// that has not returned (`GET /runs/{runId}/attempts`).
    pub async fn holds_an_attempt(&self, run_id: &str, consumer: &str) -> bool {
        let out = self.client().attempts(run_id).await.unwrap();
        out.in_flight.iter().any(|a| a.consumer == consumer)
    }

    /// Waits until worker `consumer` holds an attempt of the only run matching
    /// `pattern`, and returns the run's id. A fixed delay is not enough: on a
    /// loaded machine the scenario may not have submitted yet, or the other
    /// worker may have taken every delivery so far.
    pub async fn wait_attempt_on(&self, pattern: &str, consumer: &str) -> String {
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{consumer} held no attempt of a {pattern} run for 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            let Some(run_id) = self.only_run(pattern).await else {
                continue;
            };
            if self.holds_an_attempt(&run_id, consumer).await {
                return run_id;
            }
        }
    }

    /// Polls the run until it has drained; panics with the first worker's log after `limit`.
    pub async fn wait_drained(&self, run_id: &str, limit: Duration) -> RunSummary {
        let start = Instant::now();
        loop {
            let run = self.run(run_id).await;
            if run.drained {
                return run;
            }
            assert!(
                start.elapsed() < limit,
                "run {run_id} did not drain: {run:?}\nworker log:\n{}",
                self.logs
                    .first()
                    .map(|_| self.worker_log(0))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (index, (child, log)) in self.workers.iter_mut().zip(&self.logs).enumerate() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            if std::env::var_os("TEST_LOG").is_some() {
                eprintln!(
                    "--- worker {index} ---\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            let _ = std::fs::remove_file(log);
        }
    }
}

pub async fn get_json<T: serde::de::DeserializeOwned>(url: String) -> T {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Runs the real demo-runner binary with `dir` as its working directory.
pub async fn demo_in(dir: &Path, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Command::new(demo_binary())
            .args(&args)
            .current_dir(dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A fresh empty folder.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "lab-demo-{name}-{}-{}",
        std::process::id(),
        lab_testkit::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::is_lab_logging;

    // A result's log keeps what the student's code said, not the lab's own logging.
    #[test]
    fn the_lab_logging_is_told_from_the_students() {
        let t = "2026-12-06T04:50:39.368185Z";
        assert!(is_lab_logging(
            &format!("{t}  WARN worker::effects: side effect FAILED"),
            "worker::job"
        ));
        assert!(is_lab_logging(
            &format!("{t}  INFO worker::queue::read: delivered"),
            "worker::job"
        ));
        assert!(!is_lab_logging(
            &format!("{t} ERROR worker::queue: cannot reach Redis"),
            "worker::job"
        ));
        assert!(!is_lab_logging(
            &format!("{t}  INFO worker::job: my own line"),
            "worker::job"
        ));
        assert!(!is_lab_logging(
            &format!("{t}  WARN api::idempotency::inner: x"),
            "api::idempotency"
        ));
        assert!(!is_lab_logging(
            "hostile: cannot connect: Network is unreachable",
            "worker::job"
        ));
        assert!(!is_lab_logging(
            "thread 'tokio-runtime-worker' panicked at worker/src/job.rs:3:5:",
            "worker::job"
        ));
    }
}
