//! `./lab release DIR`: the student copy has no answers, and still builds, runs
//! and verifies. Students need not edit this file.

use std::path::Path;
use std::process::Command;

use lab_schema::Exercise;
use lab_testkit::{built_from, workspace_root};
use lab_tests::{Stack, Workers, text};

/// Every file under `dir`, relative, with `/` separators.
fn files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                found.push(rel);
            }
        }
    }
    found.sort();
    found
}

/// `verify` for exercise 1 by the copy's demo-runner against `stack`: its exit code and output.
fn verify(demo_runner: &Path, stack: &Stack) -> (Option<i32>, String) {
    let out = Command::new(demo_runner)
        .args([
            "--api-url",
            &stack.api_url,
            "--provider-url",
            &stack.provider_url,
        ])
        .arg("verify")
        .output()
        .expect("run the copy's demo-runner");
    (out.status.code(), text(&out.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_student_copy_has_no_answers_and_still_verifies() {
    let root = workspace_root();
    let dest = std::env::temp_dir().join(format!("lab-student-copy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest);
    let out = Command::new(root.join("lab"))
        .args(["release", dest.to_str().unwrap()])
        .env("LAB_STATE_DIR", dest.with_extension("state"))
        .output()
        .expect("run ./lab release");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // No answers: no instructor guide, solution, fixture or variant, nor what applies them.
    let copied = files(&dest);
    for file in &copied {
        assert!(
            !(file.ends_with("INSTRUCTOR.md")
                || file.ends_with(".patch")
                || file.contains("/fixtures/")
                || file.contains("/variants/")
                || file.starts_with("lab-tests/tests/")),
            "the student copy holds {file}"
        );
    }
    // Everything a student works with, as it is here: each handout, the background
    // it links to, the student file.
    for exercise in Exercise::ALL {
        let info = exercise.info();
        let background = format!("{}/BACKGROUND.md", exercise.folder());
        let background = root.join(&background).exists().then_some(background);
        for file in [
            format!("{}/README.md", exercise.folder()),
            info.student_file.to_string(),
        ]
        .into_iter()
        .chain(background)
        {
            assert_eq!(
                std::fs::read(dest.join(&file)).ok(),
                std::fs::read(root.join(&file)).ok(),
                "{file}"
            );
        }
    }
    assert!(copied.contains(&"lab".to_string()) && copied.contains(&"compose.yml".to_string()));
    // The class's CI grades each push with the copy's own grading program.
    assert!(copied.contains(&".github/workflows/grade.yml".to_string()));
    assert!(copied.contains(&"lab-tests/src/bin/grade.rs".to_string()));

    // It builds (locked: its lock file follows the workspace), runs, and verify
    // fails the starter...
    let [api, worker, demo_runner] = built_from(&dest, ["api", "worker", "demo-runner"]);
    let stack = Stack::with_api_and(&api, Workers::Binary(&worker)).await;
    let (code, report) = verify(&demo_runner, &stack);
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("verdict: FAIL"), "{report}");
    drop(stack);

    // ... and passes the reference solution once applied (the instructor's patch).
    let applied = Command::new("git")
        .arg("apply")
        .arg(root.join(Exercise::DuplicateDelivery.solution_patch()))
        .current_dir(&dest)
        .env("GIT_CEILING_DIRECTORIES", dest.parent().unwrap())
        .status()
        .unwrap();
    assert!(applied.success());
    let [worker] = built_from(&dest, ["worker"]);
    let stack = Stack::with_api_and(&api, Workers::Binary(&worker)).await;
    let (code, report) = verify(&demo_runner, &stack);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("verdict: PASS"), "{report}");
    drop(stack);

    // A student whose exercise 1 no longer compiles puts the file back as it was
    // handed out (no build needed), and keeps their version; bad input changes nothing.
    let job = dest.join("worker/src/job.rs");
    std::fs::write(&job, "this does not compile").unwrap();
    let reset = |args: &[&str]| {
        Command::new(dest.join("lab"))
            .args(args)
            .env("LAB_STATE_DIR", dest.with_extension("state"))
            .output()
            .expect("run ./lab reset")
    };
    let out = reset(&["reset", "--exercise", "9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("there is no exercise 9"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&job).unwrap(),
        "this does not compile"
    );
    let out = reset(&["reset", "--exercise", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(&job).unwrap(),
        std::fs::read(root.join("worker/src/job.rs")).unwrap(),
        "the starter is back"
    );
    let kept: Vec<String> = files(&dest.join("lab-output/reset"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read_to_string(dest.join("lab-output/reset").join(&kept[0])).unwrap(),
        "this does not compile"
    );
    let out = reset(&["reset", "--exercise", "1"]);
    assert!(
        text(&out.stderr).contains("already as it was handed out"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dest);
}

// `./lab release --challenge DIR`: each handout is the exercise's challenge
// (no code), and each student file loses its TODO walk-through but not a line
// of its code, so the copy builds and grades as the guided one does.
#[test]
fn the_challenge_copy_has_the_challenges_and_no_walkthrough() {
    let root = workspace_root();
    let dest = std::env::temp_dir().join(format!("lab-challenge-copy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest);
    let out = Command::new(root.join("lab"))
        .args(["release", "--challenge", dest.to_str().unwrap()])
        .env("LAB_STATE_DIR", dest.with_extension("state"))
        .output()
        .expect("run ./lab release --challenge");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let code_only = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(str::to_string)
            .collect()
    };
    for exercise in Exercise::ALL {
        let folder = exercise.folder();
        let handout = std::fs::read_to_string(dest.join(&folder).join("README.md")).unwrap();
        let challenge = std::fs::read_to_string(root.join(&folder).join("CHALLENGE.md")).unwrap();
        assert_eq!(handout, challenge, "{folder}: the handout is the challenge");
        assert!(
            !dest.join(&folder).join("BACKGROUND.md").exists(),
            "{folder}: the background, which explains the design, waits for after class"
        );
        assert!(
            !handout.contains("```rust"),
            "{folder}: the challenge shows no code"
        );
        assert!(
            handout.contains(&format!("verify --exercise {}", exercise.number()))
                || exercise.number() == 1,
            "{folder}: the challenge says how it is checked"
        );
        let file = exercise.info().student_file;
        let ours = std::fs::read_to_string(root.join(file)).unwrap();
        let theirs = std::fs::read_to_string(dest.join(file)).unwrap();
        assert_eq!(
            code_only(&theirs),
            code_only(&ours),
            "{file}: the code is unchanged"
        );
        assert!(
            theirs.lines().count() < ours.lines().count(),
            "{file}: the walk-through is gone"
        );
        let todos: Vec<&str> = theirs.lines().filter(|l| l.contains("TODO")).collect();
        assert!(
            !todos.is_empty()
                && todos
                    .iter()
                    .all(|l| l.contains("the challenge is in this exercise's README.md")),
            "{file}: {todos:?}"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("exercises/starters").join(file)).unwrap(),
            theirs,
            "{file}: ./lab reset gives the challenge's starter"
        );
    }
    let _ = std::fs::remove_dir_all(&dest);
}
