//! `./lab crates save` and `./lab crates load`: the crates a class is handed on bad
//! Wi-Fi, so that a laptop's first build downloads none. Students need not edit this file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lab_testkit::workspace_root as root;
use lab_tests::{scratch_dir, text};

fn said(output: &Output) -> String {
    text(&output.stdout) + &text(&output.stderr)
}

/// `./lab ARGS` in the lab folder `dir`, with `cargo_home` as the machine's cargo home.
fn lab(dir: &Path, cargo_home: &Path, args: &[&str]) -> Output {
    Command::new(dir.join("lab"))
        .args(args)
        .current_dir(dir)
        .env("CARGO_HOME", cargo_home)
        .env("LAB_STATE_DIR", dir.join(".lab"))
        .env("LAB_API_PORT", lab_testkit::free_port().to_string())
        .env("LAB_REDIS_PORT", lab_testkit::free_port().to_string())
        .env("LAB_PROVIDER_PORT", lab_testkit::free_port().to_string())
        .output()
        .expect("run ./lab")
}

/// Whether cargo, with `cargo_home` as its home and without the network, has every
/// crate this lab's build needs (`cargo fetch --offline` downloads nothing).
fn fetches_offline(cargo_home: &Path) -> Result<(), String> {
    let out = Command::new("cargo")
        .args(["fetch", "--locked", "--offline", "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .env("CARGO_HOME", cargo_home)
        .output()
        .expect("run cargo fetch");
    if out.status.success() {
        Ok(())
    } else {
        Err(said(&out))
    }
}

fn tar(args: &[&str], dir: &Path) {
    let status = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar {args:?}");
}

// The instructor saves the crates; a laptop with an empty cargo home loads them, and
// cargo then has every crate of the lab without the network. A file saved from another
// version of the lab, a crate changed on the way, or not a crates file at all, is
// refused and changes nothing.
#[test]
fn a_laptop_that_loads_the_crates_builds_without_downloading_them() {
    let scratch = scratch_dir("crates");
    let file = scratch.join("lab-crates.tar.gz");

    // The instructor's machine: this checkout and its cargo home.
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let out = lab(&root(), &home, &["crates", "save", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", said(&out));
    let crates = std::fs::read_to_string(root().join("Cargo.lock"))
        .unwrap()
        .matches("source = \"registry+")
        .count();
    assert!(
        said(&out).contains(&format!("saved the {crates} crates of Cargo.lock")),
        "{}",
        said(&out)
    );

    // A laptop: a lab folder of its own, and a cargo home that has never downloaded a crate.
    let laptop = scratch.join("laptop");
    std::fs::create_dir_all(&laptop).unwrap();
    for name in ["lab", "Cargo.toml", "Cargo.lock"] {
        std::fs::copy(root().join(name), laptop.join(name)).unwrap();
    }
    let empty_home = scratch.join("cargo-home");
    std::fs::create_dir_all(&empty_home).unwrap();
    assert!(
        fetches_offline(&empty_home).is_err(),
        "an empty cargo home fetched offline: the check below would prove nothing"
    );

    let out = lab(
        &laptop,
        &empty_home,
        &["crates", "load", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", said(&out));
    assert!(laptop.join("lab-crates/registry").is_dir());
    if let Err(why) = fetches_offline(&empty_home) {
        panic!("after ./lab crates load, cargo still lacks crates offline:\n{why}");
    }
    let out = lab(&laptop, &empty_home, &["doctor"]);
    assert!(
        said(&out).contains(&format!(
            "ok    crates: the {crates} of Cargo.lock are in lab-crates/"
        )),
        "{}",
        said(&out)
    );

    // A file saved from another version of the lab: one crate short. Refused, and the
    // crates loaded before stay as they were.
    let stale = scratch.join("stale");
    std::fs::create_dir_all(&stale).unwrap();
    tar(&["-xzf", file.to_str().unwrap()], &stale);
    let cache = std::fs::read_dir(stale.join("lab-crates/registry/cache"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let gone = std::fs::read_dir(&cache)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "crate"))
        .unwrap();
    std::fs::remove_file(&gone).unwrap();
    // Loading `file` on the laptop is refused with `reason`, and nothing loaded.
    let refused = |file: &Path, reason: &str| {
        let out = lab(
            &laptop,
            &empty_home,
            &["crates", "load", file.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(1), "{}", said(&out));
        assert!(
            said(&out).contains(reason) && said(&out).contains("nothing loaded"),
            "{}",
            said(&out)
        );
    };
    let stale_file = scratch.join("stale.tar.gz");
    tar(
        &["-czf", stale_file.to_str().unwrap(), "lab-crates"],
        &stale,
    );
    refused(&stale_file, "lacks 1 crates of this lab's Cargo.lock");
    // A crate changed on the way (one byte of its archive): cargo would not check it,
    // since it checks only what it downloads; load compares it with Cargo.lock's SHA-256.
    tar(&["-xzf", file.to_str().unwrap()], &stale);
    let mut bytes = std::fs::read(&gone).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&gone, bytes).unwrap();
    let damaged_file = scratch.join("damaged.tar.gz");
    tar(
        &["-czf", damaged_file.to_str().unwrap(), "lab-crates"],
        &stale,
    );
    refused(&damaged_file, "1 crates that are not Cargo.lock's");
    refused(&laptop.join("Cargo.toml"), "is not a crates file");
    let out = lab(&laptop, &empty_home, &["doctor"]);
    assert!(
        said(&out).contains("ok    crates:"),
        "the refused files changed lab-crates/: {}",
        said(&out)
    );

    // A lab-crates/ folder that lacks a crate is named, with its fix.
    let name = gone.file_name().unwrap();
    let laptop_cache = laptop
        .join("lab-crates/registry/cache")
        .join(cache.file_name().unwrap());
    std::fs::remove_file(laptop_cache.join(name)).unwrap();
    let out = lab(&laptop, &empty_home, &["doctor"]);
    assert!(
        said(&out).contains("FIX   crates: lab-crates/ lacks 1 crates of Cargo.lock")
            && said(&out).contains("./lab crates load a file saved from this version"),
        "{}",
        said(&out)
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
