//! Tests of the native stack as `./lab` runs it; students need not edit this file.
//! Release binaries, its own Redis with persistence, two worker processes, on
//! private ports and a private state folder. The first run builds the release binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// `./lab <args>` with private ports and state; `./lab down` on drop.
struct Lab {
    root: PathBuf,
    state: PathBuf,
    redis_port: u16,
    api_port: u16,
    provider_port: u16,
}

impl Lab {
    fn new(name: &str) -> Lab {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf();
        let state = root
            .join("target")
            .join(format!("lab-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        Lab {
            root,
            state,
            redis_port: lab_testkit::free_port(),
            api_port: lab_testkit::free_port(),
            provider_port: lab_testkit::free_port(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(self.root.join("lab"))
            .args(args)
            .env("LAB_STATE_DIR", &self.state)
            .env("LAB_REDIS_PORT", self.redis_port.to_string())
            .env("LAB_API_PORT", self.api_port.to_string())
            .env("LAB_PROVIDER_PORT", self.provider_port.to_string())
            .env("LAB_WORKERS", "2")
            .env("CLAIM_IDLE_MS", "1000")
            .env("EFFECT_DELAY_MS", "20")
            .env("NO_COLOR", "1")
            .output()
            .expect("run ./lab")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Local addresses of the listening TCP sockets on `port` (Linux: /proc/net/tcp*).
#[cfg(target_os = "linux")]
fn listeners(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let table = std::fs::read_to_string(file).unwrap_or_default();
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // cols[1] = "<hex address>:<hex port>", cols[3] = state; 0A = LISTEN.
            if let (Some(local), Some("0A")) = (cols.get(1), cols.get(3).copied())
                && let Some((address, hex_port)) = local.split_once(':')
                && u16::from_str_radix(hex_port, 16) == Ok(port)
            {
                found.push(address.to_string());
            }
        }
    }
    found
}

// `./lab chaos`: a load while worker-1 is killed with SIGKILL and Redis restarts.
// Every accepted submission is processed (the other worker takes the killed one's
// deliveries over), no job is without its effect, the killed worker is back
// afterwards, and the API and Redis listen on loopback only.
#[test]
fn lab_chaos_keeps_every_accepted_job() {
    let lab = Lab::new("chaos");
    let out = lab.run(&[
        "chaos",
        "--clients",
        "4",
        "--duration-secs",
        "6",
        "--jobs",
        "20",
        "--interval-ms",
        "50",
        "--json",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "./lab chaos failed:\n{stderr}");
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "stdout: {stdout}");
    let s: Value = serde_json::from_str(&stdout).unwrap();
    println!("{stdout}");
    assert_eq!(s["scenario"], "chaos");
    assert_eq!(
        (&s["worker_killed"], &s["redis_restarted"]),
        (&Value::Bool(true), &Value::Bool(true)),
        "{s}"
    );
    assert!(stderr.contains("killed worker-1"), "{stderr}");
    assert!(stderr.contains("restarted redis"), "{stderr}");
    assert_eq!(s["drained"], true, "{s}");
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    assert!(n("accepted") > 50, "{s}");
    assert!(n("total_submissions") >= n("accepted"), "{s}");
    assert_eq!(n("processed_deliveries"), n("total_submissions"), "{s}");
    assert_eq!(n("unique_jobs"), 20);
    assert_eq!(n("lost_effects"), 0, "{s}");
    assert!(n("observed_effects_total") >= 20, "{s}");

    let status = text(&lab.run(&["status"]).stdout);
    assert_eq!(status.matches("running (pid").count(), 5, "{status}");
    assert!(status.contains("provider  running (pid"), "{status}");
    // The killed worker was started again by its supervisor, and says so.
    assert!(
        status.contains("worker-1  running (pid")
            && status.contains("restarted once after it died"),
        "{status}"
    );
    let log = std::fs::read_to_string(lab.state.join("logs/worker-1.log")).unwrap();
    assert!(
        log.contains("lab: worker-1 (pid")
            && log.contains("died (killed by signal 9); restarting it in 0.2 s"),
        "the supervisor says in worker-1's log why it restarted it"
    );

    #[cfg(target_os = "linux")]
    for port in [lab.api_port, lab.redis_port, lab.provider_port] {
        // 0100007F is 127.0.0.1 in /proc/net/tcp's byte order.
        assert_eq!(
            listeners(port),
            ["0100007F"],
            "port {port} listens beyond loopback"
        );
    }

    // The handouts' native commands find the lab's own ports, whatever they are.
    let out = lab.run(&["redis-cli", "ping"]);
    assert_eq!(text(&out.stdout).trim(), "PONG", "{}", text(&out.stderr));
    let out = lab.run(&["curl", "/idempotency"]);
    let policy: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(policy["header"], "Idempotency-Key", "{policy}");
}
