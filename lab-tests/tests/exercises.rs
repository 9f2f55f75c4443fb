//! Every exercise, tested by being there: for each exercise of the registry,
//! `verify --exercise N` against real workers fails the starter, passes the
//! reference solution and every correct variant (`variants/right-*.patch`), and
//! fails every wrong fix (`fixtures/wrong-*.patch`) on the checks its header
//! names, with the diagnosis it names. Each patch is applied to a copy of the
//! workspace and built (`lab_testkit::patched_worker`).
//!
//! A fixture's header says what `verify` must find:
//! `Fails: a, b?, c` (the checks that fail; `?`: may fail, depending on which
//! worker got which copy) and `Diagnosis: code` (the diagnosis of the first
//! failing check, the one a student reads first). The starter's expectation is
//! `fixtures/starter.expect`.
//!
//! A compile-error fixture (`fixtures/compile-*.patch`: a mistake students make
//! that does not build) names the first line of the compiler's first error
//! (`Error:`) and the fix (`Fix:`); the exercise's instructor guide lists each.

use std::path::{Path, PathBuf};

use lab_schema::Exercise;
use lab_testkit::{build_errors, patched_binary, solution_binary, workspace_root};
use lab_tests::{Stack, Workers, scratch_dir, text};
use serde_json::Value;

/// What a fixture's header asks of `verify`.
#[derive(Debug, Clone)]
struct Expect {
    must_fail: Vec<String>,
    may_fail: Vec<String>,
    diagnosis: String,
}

fn expectation(path: &Path) -> Expect {
    let text = std::fs::read_to_string(path).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{} has no `{name}` line", path.display()))
            .trim()
            .to_string()
    };
    let mut expect = Expect {
        must_fail: Vec::new(),
        may_fail: Vec::new(),
        diagnosis: field("Diagnosis:"),
    };
    for check in field("Fails:").split(',').map(str::trim) {
        match check.strip_suffix('?') {
            Some(optional) => expect.may_fail.push(optional.to_string()),
            None => expect.must_fail.push(check.to_string()),
        }
    }
    expect
}

/// The patches in `exercises/NN-name/<folder>/` whose names start with `prefix`, sorted.
fn patches(exercise: Exercise, folder: &str, prefix: &str) -> Vec<PathBuf> {
    let dir = workspace_root().join(exercise.folder()).join(folder);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    name.starts_with(prefix) && name.ends_with(".patch")
                })
                .collect()
        })
        .unwrap_or_default();
    // `FIXTURE=token-delivery` runs only the patches whose paths contain it
    // (while writing a fixture, or an exercise: `FIXTURE=05-`; the suite runs
    // them all).
    if let Ok(only) = std::env::var("FIXTURE") {
        found.retain(|p| p.to_string_lossy().contains(&only));
    }
    found.sort();
    found
}

/// Runs `verify --exercise N --json` against two workers and the API, one of
/// them built from `binary` (the program the exercise's student file is in;
/// `None`: the starter of everything); returns the exit code and the report.
async fn verify(exercise: Exercise, binary: Option<&Path>) -> (Option<i32>, Value) {
    let stack = Stack::for_exercise(exercise, binary).await;
    // 3 s is longer than the 2 s TTL of the short-TTL fixture; the workers
    // redeliver after 1 s, so 15 s is plenty for the failed effect.
    let number = exercise.number().to_string();
    let out = stack
        .demo(
            &scratch_dir("verify"),
            &[
                "verify",
                "--exercise",
                &number,
                "--json",
                "--late-secs",
                "3",
                "--redelivery-wait",
                "15",
            ],
        )
        .await;
    let stdout = text(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|_| panic!("not JSON: {stdout}\n{}", text(&out.stderr)));
    (out.status.code(), report)
}

fn failed_checks(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["diagnosis"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Panics unless the report fails as `expect` says.
fn assert_fails_as(what: &str, code: Option<i32>, report: &Value, expect: &Expect) {
    if let Err(problem) = fails_as(what, code, report, expect) {
        panic!("{problem}");
    }
}

/// Whether the report fails as `expect` says; the error says how it does not.
fn fails_as(what: &str, code: Option<i32>, report: &Value, expect: &Expect) -> Result<(), String> {
    if code != Some(1) {
        return Err(format!(
            "{what}: verify must exit 1, exited {code:?}\n{report:#}"
        ));
    }
    let failed = failed_checks(report);
    let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
    for check in &expect.must_fail {
        if !names.contains(&check.as_str()) {
            return Err(format!("{what}: {check} must fail\n{report:#}"));
        }
    }
    for name in &names {
        if !expect
            .must_fail
            .iter()
            .chain(&expect.may_fail)
            .any(|c| c == name)
        {
            return Err(format!(
                "{what}: {name} failed, which the header does not name\n{report:#}"
            ));
        }
    }
    if failed[0].1 != expect.diagnosis {
        return Err(format!(
            "{what}: the first failing check names {} where {} was expected\n{report:#}",
            failed[0].1, expect.diagnosis
        ));
    }
    Ok(())
}

// The starter of every exercise fails verify, with the diagnosis its expectation names.
#[tokio::test(flavor = "multi_thread")]
async fn every_starter_fails_verify() {
    for exercise in Exercise::ALL.iter().copied() {
        let expect_path = workspace_root()
            .join(exercise.folder())
            .join("fixtures/starter.expect");
        let expect = expectation(&expect_path);
        let (code, report) = verify(exercise, None).await;
        assert_fails_as(&format!("{exercise} starter"), code, &report, &expect);
    }
}

// Every exercise's reference solution applies to its starter, builds, and passes every check.
#[tokio::test(flavor = "multi_thread")]
async fn every_solution_passes_verify() {
    for exercise in Exercise::ALL.iter().copied() {
        let binary = solution_binary(exercise);
        let (code, report) = verify(exercise, Some(&binary)).await;
        assert_eq!(code, Some(0), "{exercise} solution\n{report:#}");
        assert_eq!(report["passed"], true);
        assert_eq!(report["checks_failed"], 0);
    }
}

// Correct variants a student might write (another command shape, another value,
// SETNX then EXPIRE, ...) pass: a grader that fails a correct student is wrong too.
#[tokio::test(flavor = "multi_thread")]
async fn every_correct_variant_passes_verify() {
    for exercise in Exercise::ALL.iter().copied() {
        for patch in patches(exercise, "variants", "right-") {
            let rel = patch.strip_prefix(workspace_root()).unwrap();
            let binary = patched_binary(exercise.info().component, &rel.to_string_lossy());
            let (code, report) = verify(exercise, Some(&binary)).await;
            assert_eq!(code, Some(0), "{} must pass\n{report:#}", rel.display());
        }
    }
}

// Every wrong fix fails the checks its header names, and the first failing check
// names its actual cause.
#[tokio::test(flavor = "multi_thread")]
async fn every_wrong_fix_fails_with_its_diagnosis() {
    let mut cases = Vec::new();
    for exercise in Exercise::ALL.iter().copied() {
        let fixtures = patches(exercise, "fixtures", "wrong-");
        assert!(
            !fixtures.is_empty() || std::env::var("FIXTURE").is_ok(),
            "{exercise} has no wrong-fix fixtures"
        );
        for patch in fixtures {
            let rel = patch.strip_prefix(workspace_root()).unwrap().to_path_buf();
            let binary = patched_binary(exercise.info().component, &rel.to_string_lossy());
            cases.push((exercise, rel, expectation(&patch), binary));
        }
    }
    // Two at a time: the checks measure real concurrency, so the machine must
    // not be swamped with workers. The next starts as soon as one ends (a long
    // storm does not hold a short one back). Every fixture runs; the failures
    // are listed together.
    let mut problems = Vec::new();
    let mut waiting = cases.into_iter();
    let mut set = tokio::task::JoinSet::new();
    loop {
        while set.len() < 2
            && let Some((exercise, rel, expect, binary)) = waiting.next()
        {
            set.spawn(async move {
                let (code, report) = verify(exercise, Some(&binary)).await;
                fails_as(&rel.display().to_string(), code, &report, &expect)
            });
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        if let Err(problem) = done.unwrap() {
            problems.push(problem);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

// The human output is one line per check and a verdict; the JSON names the diagnosis.
#[tokio::test(flavor = "multi_thread")]
async fn verify_prints_one_line_per_check_then_the_verdict() {
    let exercise = Exercise::DuplicateDelivery;
    let binary = solution_binary(exercise);
    let stack = Stack::with_two(Workers::Binary(&binary)).await;
    let out = stack
        .demo(&scratch_dir("verify-text"), &["verify", "--late-secs", "1"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 8, "{stdout}");
    assert!(
        lines[..6].iter().all(|l| l.starts_with("PASS ")),
        "{stdout}"
    );
    assert!(
        lines[6].starts_with("verdict: PASS, 6 of 6 checks passed"),
        "{stdout}"
    );
    // Then which code was checked: the solution's job.rs.
    assert!(
        lines[7].starts_with("# 2 workers running job.rs #"),
        "{stdout}"
    );
    let claim = lines[4];
    assert!(
        claim.starts_with("PASS claim-expires") && claim.contains("expires in about 24 h"),
        "{claim}"
    );
    let out = stack
        .demo(&scratch_dir("verify-bad"), &["verify", "--exercise", "99"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("there is no exercise 99"));
}

// Every compile error an instructor guide lists is real: the fixture does not
// build, the compiler's first error is the one its header names, and the guide's
// table has its row.
#[test]
fn every_compile_error_fixture_gives_its_message() {
    for exercise in Exercise::ALL.iter().copied() {
        let guide_path = workspace_root()
            .join(exercise.folder())
            .join("INSTRUCTOR.md");
        let guide = std::fs::read_to_string(&guide_path).unwrap();
        let fixtures = patches(exercise, "fixtures", "compile-");
        assert!(
            !fixtures.is_empty() || std::env::var("FIXTURE").is_ok(),
            "{exercise} has no compile-error fixtures"
        );
        for patch in fixtures {
            let rel = patch.strip_prefix(workspace_root()).unwrap().to_path_buf();
            let header = std::fs::read_to_string(&patch).unwrap();
            let field = |name: &str| {
                header
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_else(|| panic!("{} has no `{name}` line", rel.display()))
                    .trim()
                    .to_string()
            };
            let (expected, fix) = (field("Error:"), field("Fix:"));
            let errors = build_errors(exercise.info().component, &rel.to_string_lossy())
                .unwrap_or_else(|| panic!("{} builds; it must not", rel.display()));
            let first = errors
                .lines()
                .find(|l| l.starts_with("error"))
                .unwrap_or_else(|| panic!("{}: no error line in\n{errors}", rel.display()));
            assert_eq!(
                first,
                expected,
                "{}: the compiler said\n{errors}",
                rel.display()
            );
            let name = patch.file_name().unwrap().to_string_lossy();
            let row = guide
                .lines()
                .find(|l| l.starts_with('|') && l.contains(name.as_ref()))
                .unwrap_or_else(|| panic!("{} has no row for {name}", guide_path.display()));
            let message = expected
                .split_once(": ")
                .map_or(expected.as_str(), |(_, m)| m);
            assert!(
                row.contains(message) && !fix.is_empty(),
                "{}: the row of {name} must quote `{message}`:\n{row}",
                guide_path.display()
            );
        }
    }
}
