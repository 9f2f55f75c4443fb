//! The student always knows which code runs: every worker publishes the
//! fingerprint of the exercise files it was built from (`GET /workers`), every
//! summary names it (`worker_code=`), and a summary warns when the file on disk
//! is newer than what runs (a rebuild that failed). Students need not edit this file.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lab_schema::code::{RunningWorkers, fingerprint};
use lab_testkit::workspace_root;
use lab_tests::{Stack, Workers, demo_binary, get_json, scratch_dir, text};

/// The demo-runner binary against `stack`, in `dir`, with `LAB_SOURCE_DIR=source`.
async fn demo_with_source(
    stack: &Stack,
    dir: &Path,
    source: &Path,
    args: &[&str],
) -> (i32, String) {
    let mut all = vec![
        "--api-url".to_string(),
        stack.api_url.clone(),
        "--provider-url".to_string(),
        stack.provider_url.clone(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let (dir, source) = (dir.to_path_buf(), source.to_path_buf());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(demo_binary())
            .args(&all)
            .current_dir(dir)
            .env("LAB_SOURCE_DIR", source)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    (out.status.code().unwrap_or(-1), text(&out.stdout))
}

#[tokio::test(flavor = "multi_thread")]
async fn summaries_name_the_running_code_and_warn_when_the_file_is_newer() {
    let stack = Stack::with_two(Workers::Starter).await;
    let root = workspace_root();
    let on_disk = fingerprint(&std::fs::read(root.join("worker/src/job.rs")).unwrap());

    // Both workers publish the fingerprints of the files they were built from.
    let url = format!("{}/workers", stack.api_url);
    stack
        .wait_for("two workers registered", Duration::from_secs(10), || {
            let url = url.clone();
            async move { get_json::<RunningWorkers>(url).await.workers.len() == 2 }
        })
        .await;
    let running: RunningWorkers = get_json(url.clone()).await;
    for worker in &running.workers {
        assert_eq!(
            worker.fingerprint_of("worker/src/job.rs"),
            Some(on_disk.as_str()),
            "{running:?}"
        );
        // Every exercise file built into the worker (exercise 4's is in the API).
        let in_worker = lab_schema::Exercise::ALL
            .iter()
            .filter(|e| e.info().component == lab_schema::exercise::Component::Worker)
            .count();
        assert_eq!(worker.code.len(), in_worker, "{running:?}");
    }
    let api = running.api.as_ref().expect("the API names its code");
    let api_file = lab_schema::Exercise::RetriedPost.info().student_file;
    assert_eq!(
        api.fingerprint_of(api_file),
        Some(fingerprint(&std::fs::read(workspace_root().join(api_file)).unwrap()).as_str()),
        "{running:?}"
    );

    // The summary names the code, in a key and in a line for a human.
    let dir = scratch_dir("code");
    let (_, out) = demo_with_source(
        &stack,
        &dir,
        &root,
        &["duplicate-load", "4", "2", "--save", "a.json"],
    )
    .await;
    assert!(
        out.contains(&format!("worker_code=job.rs#{on_disk}\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("# 2 workers running job.rs #{on_disk}, started ")),
        "{out}"
    );
    assert!(!out.contains("WARNING"), "{out}");

    // A job.rs on disk that differs from what runs (the rebuild failed): said so.
    let edited = scratch_dir("code-source");
    std::fs::create_dir_all(edited.join("worker/src")).unwrap();
    std::fs::write(
        edited.join("worker/src/job.rs"),
        "// my fix, not built yet\n",
    )
    .unwrap();
    let newer = fingerprint(b"// my fix, not built yet\n");
    let (_, out) = demo_with_source(
        &stack,
        &dir,
        &edited,
        &["duplicate-load", "4", "2", "--save", "b.json"],
    )
    .await;
    assert!(
        out.contains(&format!(
            "# WARNING: worker/src/job.rs on disk is #{newer}, but the running workers were built from another version"
        )),
        "{out}"
    );

    // Two runs made by the same code: compare says nothing changed.
    let (_, out) = demo_with_source(&stack, &dir, &root, &["compare", "a.json", "b.json"]).await;
    assert!(
        out.contains(&format!(
            "# nothing changed between these runs: both were made by the same code (job.rs #{on_disk})"
        )),
        "{out}"
    );
}
