//! Worker identities: processes on one host (or in one container) started
//! without a name never share one. Students need not edit this file.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lab_schema::keys;
use lab_testkit::RedisServer;

/// Kills the worker processes when the test ends, pass or fail.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn two_workers_started_with_the_defaults_have_different_names() {
    let redis = RedisServer::start();
    // The same host name for both, as two processes in one container have.
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_worker"))
            .args(["--redis-url", &redis.url()])
            .env_remove("WORKER_NAME")
            .env("HOSTNAME", "classroom-vm")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the worker binary")
    };
    let _workers = Workers(vec![start(), start()]);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let names = loop {
        let names: Vec<String> = redis::cmd("HKEYS")
            .arg(keys::WORKERS)
            .query_async(&mut conn)
            .await
            .unwrap();
        if names.len() >= 2 || Instant::now() > deadline {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(names.len(), 2, "registered workers: {names:?}");
    assert_ne!(names[0], names[1]);
    for name in &names {
        assert!(name.starts_with("worker-classroom-vm-"), "{name}");
    }
}

/// A worker named `name` on `redis`, its stderr kept.
fn named_worker(redis: &RedisServer, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["--redis-url", &redis.url(), "--name", name])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the worker binary")
}

/// The registry line of `name` once it names a process other than `not`
/// (`<instance>|<heartbeat>`), waiting up to `limit`.
async fn registered(redis: &RedisServer, name: &str, not: Option<&str>, limit: Duration) -> String {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + limit;
    loop {
        let line: Option<String> = redis::cmd("HGET")
            .arg(keys::WORKERS)
            .arg(name)
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(line) = line {
            let instance = line.rsplit_once('|').unwrap().0.to_string();
            if Some(instance.as_str()) != not {
                return instance;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} was not registered within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_second_live_worker_with_the_same_name_refuses_to_start() {
    let redis = RedisServer::start();
    let mut workers = Workers(vec![named_worker(&redis, "w-same")]);
    let first = registered(&redis, "w-same", None, Duration::from_secs(20)).await;
    let mut second = named_worker(&redis, "w-same");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the second worker did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("another worker named w-same is running"),
        "{stderr}"
    );
    // The first one still holds the name.
    assert!(workers.0[0].try_wait().unwrap().is_none());
    assert_eq!(
        registered(&redis, "w-same", None, Duration::from_secs(1)).await,
        first
    );
    workers.0.push(second);
}

#[tokio::test]
async fn a_worker_started_again_after_a_kill_takes_its_name_back_at_once() {
    let redis = RedisServer::start();
    let mut workers = Workers(vec![named_worker(&redis, "w-again")]);
    let first = registered(&redis, "w-again", None, Duration::from_secs(20)).await;
    workers.0[0].kill().unwrap(); // SIGKILL: its line still shows a fresh heartbeat
    workers.0[0].wait().unwrap();
    // Its process is gone: the new one does not wait for the old heartbeat to age.
    workers.0.push(named_worker(&redis, "w-again"));
    registered(&redis, "w-again", Some(&first), Duration::from_secs(3)).await;
}
