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
