//! `./lab doctor`: what it says of a machine before class. Students need not
//! edit this file.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("lab")
}

/// `./lab doctor` with the API's port set to `api_port` and `PATH` set to `path`.
fn doctor(api_port: u16, path: &std::ffi::OsStr) -> Output {
    Command::new(lab())
        .arg("doctor")
        .env("PATH", path)
        .env("LAB_API_PORT", api_port.to_string())
        .env("LAB_REDIS_PORT", lab_testkit::free_port().to_string())
        .env("LAB_PROVIDER_PORT", lab_testkit::free_port().to_string())
        .env(
            "LAB_STATE_DIR",
            std::env::temp_dir().join("lab-doctor-state"),
        )
        .output()
        .expect("run ./lab doctor")
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

// A port another program holds, and no redis-server: two problems, each with
// its fix, and a non-zero exit; the same machine with both fixed is ready.
#[test]
fn doctor_names_a_taken_port_and_a_missing_redis_server_with_their_fixes() {
    // Every program on PATH but redis-server and redis-cli, as on a laptop without them.
    let bin = std::env::temp_dir().join(format!("lab-doctor-bin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&bin);
    std::fs::create_dir_all(&bin).unwrap();
    let path = std::env::var_os("PATH").unwrap();
    for dir in std::env::split_paths(&path) {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if name == "redis-server" || name == "redis-cli" || bin.join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(entry.path(), bin.join(&name));
        }
    }
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();

    let out = doctor(port, bin.as_os_str());
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "FIX   port {port} (api) is used by another program"
        )) && said.contains(&format!("LAB_API_PORT={} ./lab up", port + 1)),
        "{said}"
    );
    assert!(
        said.contains("FIX   redis-server not found: sudo apt-get install redis-server"),
        "{said}"
    );
    assert!(said.contains("doctor: 2 to fix before class"), "{said}");

    drop(taken);
    let out = doctor(port, &path);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("doctor: this machine is ready"), "{said}");
    let _ = std::fs::remove_dir_all(&bin);
}
