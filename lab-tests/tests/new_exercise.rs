//! What adding an exercise takes: `new-exercise.patch` adds exercise 7, a
//! throwaway, to a scratch copy of the lab (its folder, its student file, its
//! grader and one entry per binary), and the copy builds it, runs its
//! scenario, grades it and lists it. Nothing else of the lab is edited: the
//! test fails if the patch touches another file.

use std::path::Path;
use std::process::Command;

use lab_testkit::{Profile, built_programs, workspace_root};
use lab_tests::{Stack, Workers, text};
use serde_json::Value;

const PATCH: &str = "lab-tests/tests/new-exercise.patch";

/// The files an exercise has of its own.
const OWN: [&str; 3] = [
    "exercises/07-throwaway/",
    "worker/src/throwaway.rs",
    "demo-runner/src/verify/throwaway.rs",
];

/// The registries: one entry per binary (the demo-runner's grader also needs
/// its `mod` line).
const ENTRIES: [&str; 4] = [
    "lab-schema/src/exercise.rs",
    "worker/src/registry.rs",
    "demo-runner/src/registry.rs",
    "demo-runner/src/verify/mod.rs",
];

/// The files the patch touches, and its hunks per file.
fn touched(patch: &str) -> Vec<(String, usize)> {
    let mut files: Vec<(String, usize)> = Vec::new();
    for line in patch.lines() {
        if let Some(paths) = line.strip_prefix("diff --git a/") {
            let file = paths.split(" b/").next().unwrap_or_default().to_string();
            files.push((file, 0));
        } else if line.starts_with("@@ ")
            && let Some(last) = files.last_mut()
        {
            last.1 += 1;
        }
    }
    files
}

fn demo(binary: &Path, stack: &Stack, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(binary)
        .args([
            "--api-url",
            &stack.api_url,
            "--provider-url",
            &stack.provider_url,
        ])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run the copy's demo-runner");
    (out.status.code(), text(&out.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_exercise_is_its_folder_its_files_and_one_entry_per_binary() {
    // 1. What it touches: its own files, and the registries' entries.
    let patch = std::fs::read_to_string(workspace_root().join(PATCH)).unwrap();
    let files = touched(&patch);
    for (file, _) in &files {
        let own = OWN.iter().any(|own| file.starts_with(own));
        assert!(
            own || ENTRIES.contains(&file.as_str()),
            "adding an exercise edits {file}, which is neither the exercise's own nor a registry"
        );
    }
    let entries: Vec<String> = files
        .iter()
        .filter(|(file, _)| ENTRIES.contains(&file.as_str()))
        .map(|(file, hunks)| format!("{file} ({hunks})"))
        .collect();
    eprintln!(
        "adding exercise 7: {} files of its own; entries in {} files, places (hunks) per file: {}",
        files.len() - entries.len(),
        entries.len(),
        entries.join(", ")
    );

    // 2. Built: the API (which accepts its jobs), the worker and the demo-runner.
    let [api, worker, demo_runner] = built_programs(
        ["api", "worker", "demo-runner"],
        Some(PATCH),
        Profile::Debug,
    );
    let stack = Stack::with_api_and(&api, Workers::Binary(&worker)).await;

    // 3. Documented: listed by `exercises` and its scenario by `--help`.
    let (code, listed) = demo(&demo_runner, &stack, &["exercises"]);
    assert_eq!(code, Some(0));
    assert!(
        listed.contains(
            "7\t07-throwaway\ta throwaway\tworker/src/throwaway.rs\tworker\tthrowaway-load"
        ),
        "{listed}"
    );
    let (_, help) = demo(&demo_runner, &stack, &["--help"]);
    assert!(help.contains("throwaway-load"), "{help}");

    // 4. Run: its scenario sends jobs of exercise 7, which the starter handles
    // without a guard (one effect per delivery), and the summary names its file.
    let (code, json) = demo(
        &demo_runner,
        &stack,
        &["throwaway-load", "3", "2", "--json"],
    );
    assert_eq!(code, Some(0), "{json}");
    let summary: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(summary["scenario"], "throwaway-load");
    assert_eq!(summary["unique_jobs"], 3);
    assert_eq!(summary["observed_effects_total"], 6);
    assert_eq!(summary["duplicate_effects"], 3);
    let code_label = summary["worker_code"].as_str().unwrap_or_default();
    assert!(code_label.starts_with("throwaway.rs#"), "{summary}");

    // 5. Graded: its one check fails the starter, with its diagnosis.
    let (code, report) = demo(&demo_runner, &stack, &["verify", "--exercise", "7"]);
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("FAIL one-effect-per-job"), "{report}");
    assert!(
        report.contains("claim the job before the effect"),
        "{report}"
    );
    assert!(report.contains("verdict: FAIL"), "{report}");
}
