//! What the worker's end-to-end tests share; students need not edit this file.
//! A real redis-server, the API in-process, and real worker processes (the
//! starter, or a patched worker binary) whose output goes to a log file each;
//! `TEST_LOG=1` prints the logs when the stack is dropped.

#![allow(dead_code)] // each test file uses its own part of this module

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use demo_runner::{Scenario, Summary};
use lab_schema::testing::{RedisOptions, RedisServer};
use lab_schema::{JobView, RunSummary};

/// The starter worker, exactly as students get it.
pub fn starter_worker() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_worker"))
}

/// Redis, the API and any number of worker processes, all torn down on drop.
pub struct Stack {
    pub redis: RedisServer,
    pub api_url: String,
    _api: api::Background,
    /// The worker processes, in the order they were started.
    pub workers: Vec<Child>,
    logs: Vec<PathBuf>,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(RedisOptions::default()).await
    }

    pub async fn start_with(options: RedisOptions) -> Stack {
        let redis = RedisServer::start_with(options);
        let api = api::spawn(&redis.url()).await.unwrap();
        Stack {
            redis,
            api_url: api.url.clone(),
            _api: api,
            workers: Vec::new(),
            logs: Vec::new(),
        }
    }

    /// Starts a worker process on this stack's Redis; `args` are extra flags.
    /// Returns its index in `workers`.
    pub fn spawn_worker(&mut self, binary: &Path, args: &[&str]) -> usize {
        let url = self.redis.url();
        self.spawn_worker_on(binary, &url, args)
    }

    /// Starts a worker process on the Redis at `redis_url`.
    pub fn spawn_worker_on(&mut self, binary: &Path, redis_url: &str, args: &[&str]) -> usize {
        let log = std::env::temp_dir().join(format!(
            "lab-test-worker-{}-{}-{}.log",
            std::process::id(),
            self.redis.port(),
            self.workers.len()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .args(["--redis-url", redis_url])
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start worker");
        self.workers.push(child);
        self.logs.push(log);
        self.workers.len() - 1
    }

    pub fn worker_running(&mut self, index: usize) -> bool {
        matches!(self.workers[index].try_wait(), Ok(None))
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

    pub async fn scenario(&self, scenario: Scenario) -> Summary {
        demo_runner::run_scenario(&self.api_url, &scenario, Duration::from_secs(60), false)
            .await
            .expect("scenario ran")
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
                self.worker_log(0)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (index, (child, log)) in self.workers.iter_mut().zip(&self.logs).enumerate() {
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
