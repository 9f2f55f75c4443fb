//! `verify` against real workers: the starter and every wrong fix in
//! `exercises/01-duplicate-delivery/fixtures/` fail, each on the check that
//! targets its mistake; the reference fix passes every check. Each patch is
//! applied to a copy of the workspace and built (lab_schema::testing::patched_worker).

mod support;

use serde_json::Value;
use support::{Stack, Workers, scratch_dir, text};

/// Runs `verify --json` against two workers; returns the exit code, the names
/// of the failed checks, and the text output of a second, human-readable form.
async fn verify(workers: Workers<'_>) -> (Option<i32>, Vec<String>, Value) {
    let stack = Stack::start(workers).await;
    // 3 s is longer than the 2 s TTL of the short-TTL fixture; the workers
    // redeliver after 1 s, so 15 s is plenty for the failed effect.
    let out = stack
        .demo(
            &scratch_dir("verify"),
            &[
                "verify",
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
    let failed = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    (out.status.code(), failed, report)
}

/// A wrong fix: verify exits 1 and fails exactly `expected` (the first named is the one
/// the fixture is about).
async fn wrong_fix_fails(fixture: &str, expected: &[&str]) {
    let patch = format!("exercises/01-duplicate-delivery/fixtures/{fixture}.patch");
    let binary = lab_schema::testing::patched_worker(&patch);
    let (code, failed, report) = verify(Workers::Binary(&binary)).await;
    assert_eq!(code, Some(1), "{fixture}: {report}");
    assert_eq!(failed, expected, "{fixture}: {report:#}");
    assert_eq!(report["passed"], false);
}

// The starter has no guard: four checks fail, and the first says the guard is missing.
#[tokio::test(flavor = "multi_thread")]
async fn starter_fails_with_the_guard_missing() {
    let (code, failed, report) = verify(Workers::Starter).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        failed,
        [
            "sequential-duplicates",
            "concurrent-duplicates",
            "late-duplicate",
            "skip-recorded"
        ]
    );
    let meaning = report["checks"][0]["meaning"].as_str().unwrap();
    assert!(meaning.contains("the guard is missing"), "{meaning}");
}

// The reference fix passes all five checks; the human output is one line per check and a verdict.
#[tokio::test(flavor = "multi_thread")]
async fn reference_fix_passes_every_check() {
    let binary = lab_schema::testing::fixed_worker();
    let (code, failed, report) = verify(Workers::Binary(&binary)).await;
    assert_eq!((code, failed.len()), (Some(0), 0), "{report:#}");
    assert_eq!(report["checks_passed"], 5);
    let concurrent = &report["checks"][1]["data"];
    assert!(
        concurrent["inFlightTogether"].as_u64().unwrap() >= 2,
        "copies overlapped: {concurrent}"
    );

    let stack = Stack::start(Workers::Binary(&binary)).await;
    let out = stack
        .demo(&scratch_dir("verify-text"), &["verify", "--late-secs", "1"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    assert!(
        lines[..5].iter().all(|l| l.starts_with("PASS ")),
        "{stdout}"
    );
    assert!(
        lines[5].starts_with("verdict: PASS, 5 of 5 checks passed"),
        "{stdout}"
    );
}

// Effect before the claim: every copy sends the email before finding the claim taken.
#[tokio::test(flavor = "multi_thread")]
async fn effect_before_the_claim_fails() {
    wrong_fix_fails(
        "wrong-effect-before-claim",
        &[
            "sequential-duplicates",
            "concurrent-duplicates",
            "late-duplicate",
        ],
    )
    .await;
}

// GET then SET: only copies in flight together get through, and the concurrent check sends them.
#[tokio::test(flavor = "multi_thread")]
async fn get_then_set_fails_the_concurrent_check() {
    wrong_fix_fails("wrong-get-then-set", &["concurrent-duplicates"]).await;
}

// GET, then SET, then the effect: the SET comes first, but the check and the claim
// are still two commands, and copies in flight together all pass the GET.
#[tokio::test(flavor = "multi_thread")]
async fn get_set_then_effect_fails_the_concurrent_check() {
    wrong_fix_fails("wrong-get-set-then-effect", &["concurrent-duplicates"]).await;
}

// The delivery id as the key: every copy wins its own claim.
#[tokio::test(flavor = "multi_thread")]
async fn delivery_id_as_key_fails() {
    wrong_fix_fails(
        "wrong-delivery-id-key",
        &[
            "sequential-duplicates",
            "concurrent-duplicates",
            "late-duplicate",
            "skip-recorded",
        ],
    )
    .await;
}

// A TTL of two seconds: the copy that comes three seconds later applies the effect again.
#[tokio::test(flavor = "multi_thread")]
async fn short_ttl_fails_the_late_check() {
    wrong_fix_fails("wrong-short-ttl", &["late-duplicate"]).await;
}

// The claim works but the skip is not recorded: no duplicateSkips, no log line.
#[tokio::test(flavor = "multi_thread")]
async fn unrecorded_skip_fails_the_metadata_check() {
    wrong_fix_fails("wrong-skip-not-recorded", &["skip-recorded"]).await;
}

// A claim never released when the effect fails: the redelivery is skipped, no email at all.
#[tokio::test(flavor = "multi_thread")]
async fn claim_never_released_fails_the_failure_check() {
    wrong_fix_fails(
        "wrong-claim-never-released",
        &["effect-failure-redelivered"],
    )
    .await;
}
