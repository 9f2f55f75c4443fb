//! `./lab grade` as an instructor runs it on a small class, then `class-report`:
//! the real grading program (`src/bin/grade.rs`) on students' files made from
//! the exercise's fixtures, each graded on a private stack. What each result
//! says is what the fixture's header says; the files `./lab grade` writes parse
//! with real consumers (junitparser, the parser GitHub's "Publish Test Results"
//! action uses, for JUnit; Gradescope's documented results format, as a JSON
//! Schema, for `results.json`).

use std::path::{Path, PathBuf};
use std::process::Command;

use lab_schema::Exercise;
use lab_schema::grade::{GradeResult, Outcome};
use lab_testkit::workspace_root;
use lab_tests::grade::patched_student_file;
use lab_tests::{scratch_dir, text};

fn put(dir: &Path, rel: &str, content: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn header(patch: &str, field: &str) -> String {
    std::fs::read_to_string(workspace_root().join(patch))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap()
        .trim()
        .to_string()
}

fn read_result(out: &Path, student: &str) -> GradeResult {
    let path = out.join(student).join("exercise-1.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("no result for {student}: {}", path.display()));
    lab_schema::grade::parse(&text).unwrap()
}

/// Runs the grading program (`./lab grade` without the build step).
fn grade(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_grade"))
        .args(args)
        .output()
        .unwrap()
}

// Five students of exercise 1: the reference as a file alone; a race (GET then
// SET) as a whole lab repository whose Cargo.toml and build.rs were changed
// too (never used: the build.rs would break the build); a compile error; a
// handler that never returns (the time budget ends it); and a folder with no
// exercise file. Every one ends as a result (the last as a named refusal), and
// the class report ranks what they did.
#[test]
fn a_class_is_graded_then_reported() {
    let exercise = Exercise::DuplicateDelivery;
    let file = exercise.info().student_file;
    let class = scratch_dir("class");
    let wrong = "exercises/01-duplicate-delivery/fixtures/wrong-get-then-set.patch";
    let compile = "exercises/01-duplicate-delivery/fixtures/compile-question-mark-on-string.patch";
    put(
        &class.join("ada"),
        "job.rs",
        &patched_student_file(exercise, &exercise.solution_patch()),
    );
    let bob = class.join("bob");
    put(&bob, file, &patched_student_file(exercise, wrong));
    put(&bob, "Cargo.toml", b"[workspace]\nmembers = []\n");
    put(
        &bob,
        "worker/build.rs",
        b"fn main() { panic!(\"a build.rs ran\") }\n",
    );
    assert!(
        Command::new("git")
            .args(["init", "-q"])
            .current_dir(&bob)
            .status()
            .unwrap()
            .success()
    );
    put(
        &class.join("cy"),
        "job.rs",
        &patched_student_file(exercise, compile),
    );
    let starter = std::fs::read_to_string(workspace_root().join(file)).unwrap();
    let hangs = starter.replacen(
        "ctx.mark_processing(job).await?;",
        "ctx.mark_processing(job).await?;\n    loop {\n        tokio::time::sleep(std::time::Duration::from_secs(60)).await;\n    }\n    #[allow(unreachable_code)]",
        1,
    );
    assert_ne!(hangs, starter);
    put(&class.join("dee"), "job.rs", hangs.as_bytes());
    put(&class.join("eve"), "notes.txt", b"I ran out of time");

    let out = scratch_dir("grades");
    let key = out.join("grade-key");
    let students: Vec<String> = ["ada", "bob", "cy", "eve"]
        .iter()
        .map(|s| class.join(s).display().to_string())
        .collect();
    let mut args: Vec<&str> = students.iter().map(String::as_str).collect();
    let (out_arg, key_arg) = (out.display().to_string(), key.display().to_string());
    // One check at a time: the suite runs other timing checks beside this test.
    args.extend([
        "--exercise",
        "1",
        "--out",
        &out_arg,
        "--key",
        &key_arg,
        "--jobs",
        "1",
    ]);
    let graded = grade(&args);
    let stderr = text(&graded.stderr);
    // eve could not be graded: exit 2, after grading the others.
    assert_eq!(graded.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("eve: no job.rs in it"), "{stderr}");
    assert!(stderr.contains("[3/3]"), "{stderr}");
    // dee's handler never returns: the time budget ends the checks (alone,
    // with a short budget; the others keep the default).
    let dee_path = class.join("dee").display().to_string();
    let graded = grade(&[
        &dee_path,
        "--exercise",
        "1",
        "--out",
        &out_arg,
        "--key",
        &key_arg,
        "--check-limit",
        "6",
    ]);
    assert_eq!(graded.status.code(), Some(1), "{}", text(&graded.stderr));

    let ada = read_result(&out, "ada");
    assert!(ada.passed && ada.outcome == Outcome::Graded, "{ada:?}");
    assert_eq!(ada.checks.len(), 6);

    let bob = read_result(&out, "bob");
    assert_eq!(bob.outcome, Outcome::Graded, "{bob:?}");
    let failed: Vec<(&str, Option<&str>)> = bob
        .failed()
        .map(|c| (c.name.as_str(), c.diagnosis.as_deref()))
        .collect();
    assert_eq!(
        failed,
        [(
            header(wrong, "Fails:").as_str(),
            Some(header(wrong, "Diagnosis:").as_str())
        )]
    );
    assert_eq!(bob.submission.ignored, ["Cargo.toml", "worker/build.rs"]);
    assert_eq!(bob.submission.taken_from, file);

    let cy = read_result(&out, "cy");
    assert_eq!(cy.outcome, Outcome::BuildFailed);
    assert!(
        cy.reason
            .as_deref()
            .unwrap()
            .starts_with(&header(compile, "Error:")),
        "{cy:?}"
    );

    let dee = read_result(&out, "dee");
    assert_eq!(dee.outcome, Outcome::TimedOut, "{dee:?}");
    assert!(dee.reason.as_deref().unwrap().contains("longer than 6 s"));

    // The files made from the results parse with real consumers.
    check_formats(&out);

    // A student's upload of an edited result (a FAIL made a PASS) is a claim:
    // the sealed result of the same student is kept, and the upload named.
    let mut edited = bob.clone();
    edited.passed = true;
    for check in &mut edited.checks {
        check.passed = true;
    }
    put(
        &out.join("uploads"),
        "bob.json",
        serde_json::to_string(&edited).unwrap().as_bytes(),
    );
    put(&out.join("uploads"), "broken.json", b"{\"format\":");
    let report = Command::new(lab_tests::demo_binary())
        .args(["class-report", &out_arg, "--key", &key_arg])
        .env("LAB_SOURCE_DIR", workspace_root())
        .output()
        .unwrap();
    let said = text(&report.stdout);
    assert!(report.status.success(), "{said}{}", text(&report.stderr));
    assert!(said.contains("exercise 1: 1 of 4 pass"), "{said}");
    let md = std::fs::read_to_string(out.join("class-report.md")).unwrap();
    for row in [
        "| ada | PASS (evidence) |",
        "| bob | FAIL (evidence) |",
        "| `check-then-set` | 1 (bob) | concurrent-duplicates |",
        "| `build-failed` | 1 (cy) |",
        "| `timed-out` | 1 (dee) |",
        "| concurrent-duplicates | 1 of 4 | 25% |",
    ] {
        assert!(md.contains(row), "no `{row}` in\n{md}");
    }
    assert!(
        md.contains("uploads/bob.json: bob graded twice on exercise 1: kept"),
        "{md}"
    );
    assert!(
        md.contains("uploads/broken.json: not a readable result"),
        "{md}"
    );
    assert!(
        md.contains(
            "Mistakes students make, and how each shows up: GET, then the effect, then SET (a race)"
        ),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&class);
    let _ = std::fs::remove_dir_all(&out);
}

/// JUnit files through junitparser, Gradescope files against the schema of
/// their documented format (docs/gradescope-results.schema.json).
fn check_formats(out: &Path) {
    let script = r#"
import glob, json, sys
try:
    import junitparser, jsonschema
except ImportError as e:
    print("MISSING", e.name)
    sys.exit(3)
out = sys.argv[1]
schema = json.load(open(sys.argv[2]))
for path in sorted(glob.glob(out + "/*/exercise-*.junit.xml")):
    xml = junitparser.JUnitXml.fromfile(path)
    for suite in xml:
        cases = list(suite)
        assert suite.tests == len(cases) == 6, (path, suite.tests)
        failed = [c.name for c in cases if any(isinstance(r, junitparser.Failure) for r in c.result)]
        print(path.split("/")[-2], suite.failures, suite.errors, ",".join(failed))
for path in sorted(glob.glob(out + "/*/gradescope-results.json")):
    results = json.load(open(path))
    jsonschema.validate(results, schema)
    print(path.split("/")[-2], "score", results["score"], "of", sum(t["max_score"] for t in results["tests"]))
"#;
    let schema: PathBuf = workspace_root().join("docs/gradescope-results.schema.json");
    let run = Command::new("python3")
        .args(["-c", script])
        .arg(out)
        .arg(&schema)
        .output()
        .expect("python3");
    let said = text(&run.stdout);
    if run.status.code() == Some(3) {
        // As root (CI), a missing checker is a failure: .ci/run installs them.
        let root = text(&Command::new("id").arg("-u").output().unwrap().stdout);
        assert_ne!(
            root.trim(),
            "0",
            "{said}: pip install junitparser jsonschema"
        );
        eprintln!("SKIPPED the format checks: {said} (pip install junitparser jsonschema)");
        return;
    }
    assert!(run.status.success(), "{said}{}", text(&run.stderr));
    let lines: Vec<&str> = said.lines().collect();
    for expected in [
        "ada 0 0 ",
        "bob 1 0 concurrent-duplicates",
        "cy 0 6 ",
        "ada score 6.0 of 6.0",
        "bob score 5.0 of 6.0",
        "cy score 0.0 of 6.0",
    ] {
        assert!(
            lines.iter().any(|l| l.trim_end() == expected.trim_end()),
            "no `{expected}` in\n{said}"
        );
    }
}

// Gradescope's run_autograder, in a folder laid out as Gradescope's image is
// (/autograder/source, submission, results): a submitted file gives a
// results.json in Gradescope's format with the checks' points; a submission
// without the exercise's file gives one that says so, never an autograder error.
#[test]
fn gradescope_run_autograder_writes_results_json() {
    let root = workspace_root();
    let autograder = scratch_dir("autograder");
    std::os::unix::fs::symlink(&root, autograder.join("source")).unwrap();
    let wrong = "exercises/01-duplicate-delivery/fixtures/wrong-no-expiry.patch";
    put(
        &autograder.join("submission"),
        "job.rs",
        &patched_student_file(Exercise::DuplicateDelivery, wrong),
    );
    let run = || {
        Command::new(root.join("docs/gradescope/run_autograder"))
            .env("AUTOGRADER", &autograder)
            .env("LAB_EXERCISE", "1")
            .env("LAB_GRADE_BIN", env!("CARGO_BIN_EXE_grade"))
            .env("LAB_STATE_DIR", autograder.join("state"))
            .output()
            .unwrap()
    };
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(autograder.join("results/results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(results["score"], 5.0, "{results:#}");
    let failed: Vec<&serde_json::Value> = results["tests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{results:#}");
    assert_eq!(failed[0]["name"], "exercise 1: claim-expires");
    assert!(
        failed[0]["output"]
            .as_str()
            .unwrap()
            .contains("never expires"),
        "{results:#}"
    );
    // No file: a result that says so.
    std::fs::remove_file(autograder.join("submission/job.rs")).unwrap();
    std::fs::remove_file(autograder.join("results/results.json")).unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(autograder.join("results/results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(results["score"], 0);
    let output = results["output"].as_str().unwrap();
    assert!(
        output.contains("Exercise 1 was not graded") && output.contains("no job.rs in it"),
        "{output}"
    );
    let _ = std::fs::remove_dir_all(&autograder);
}
