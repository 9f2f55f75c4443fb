//! What the demo-runner's end-to-end tests share: a real redis-server, the API
//! in-process, and two workers (the starter in-process, or a patched worker
//! binary as processes); and a way to run the real demo-runner binary.

#![allow(dead_code)] // each test file uses its own part of this module

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use lab_schema::testing::RedisServer;

/// Redis, the API and two workers, torn down on drop.
pub struct Stack {
    pub api_url: String,
    pub redis: RedisServer,
    _api: api::Background,
    processes: Vec<Child>,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// Which worker runs.
pub enum Workers<'a> {
    /// The starter, in this process (as students get it).
    Starter,
    /// A worker binary (e.g. from `lab_schema::testing::patched_worker`).
    Binary(&'a Path),
}

impl Stack {
    /// Two workers with the lab's defaults (concurrency 8, 200 ms effect) but a
    /// 1 s claim idle time, so a failed delivery is redelivered quickly.
    pub async fn start(workers: Workers<'_>) -> Stack {
        let redis = RedisServer::start();
        let api = api::spawn(&redis.url()).await.unwrap();
        let mut stack = Stack {
            api_url: api.url.clone(),
            redis,
            _api: api,
            processes: Vec::new(),
            _stops: Vec::new(),
        };
        for n in 1..=2 {
            match &workers {
                Workers::Starter => {
                    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                    let config = worker::Config {
                        redis_url: stack.redis.url(),
                        claim_idle: Duration::from_millis(1000),
                        consumer: format!("worker-{n}"),
                        ..worker::Config::default()
                    };
                    tokio::spawn(worker::run(config, async {
                        let _ = stopped.await;
                    }));
                    stack._stops.push(stop);
                }
                Workers::Binary(binary) => {
                    let log = if std::env::var_os("TEST_LOG").is_some() {
                        Stdio::inherit()
                    } else {
                        Stdio::null()
                    };
                    let child = Command::new(binary)
                        .args(["--redis-url", &stack.redis.url()])
                        .args(["--claim-idle-ms", "1000", "--name", &format!("worker-{n}")])
                        .stdout(Stdio::null())
                        .stderr(log)
                        .spawn()
                        .expect("start worker");
                    stack.processes.push(child);
                }
            }
        }
        stack
    }

    /// Runs the demo-runner against this stack, in `dir`.
    pub async fn demo(&self, dir: &Path, args: &[&str]) -> Output {
        let mut all = vec!["--api-url", self.api_url.as_str()];
        all.extend_from_slice(args);
        demo_in(dir, &all).await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the real demo-runner binary with `dir` as its working directory.
pub async fn demo_in(dir: &Path, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_demo-runner"))
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
        lab_schema::testing::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
