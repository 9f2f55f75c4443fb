//! The student handout (`exercises/01-duplicate-delivery/README.md`) shows real
//! output: its `<!-- output: NAME -->` blocks come from the commands it names,
//! run here against the starter and the reference fix. This test fails when
//! the handout and the code disagree; `REGEN_HANDOUT=1` rewrites the blocks
//! instead (`exercises/01-duplicate-delivery/regen.sh`).
//!
//! What legitimately differs from run to run is masked before comparing: run and
//! job ids, `elapsed_ms`, the observation timestamps, and the observation lines
//! between the first and the last (how many state changes a poll catches depends
//! on timing).

use std::path::{Path, PathBuf};

use lab_schema::Exercise;
use lab_tests::{Stack, Workers, scratch_dir, text};

fn handout_path() -> PathBuf {
    lab_schema::testing::workspace_root().join("exercises/01-duplicate-delivery/README.md")
}

/// Runs a demo-runner command in `dir`; panics unless it exits as expected.
async fn output(stack: &Stack, dir: &Path, args: &[&str], code: i32) -> String {
    let out = stack.demo(dir, args).await;
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Masks a 13-digit millisecond stamp and the 6 hex digits after it in ids
/// such as `load-1795386768342-15d4b1-job-3`.
fn mask_ids(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let is_id = i > 0
            && bytes[i - 1] == b'-'
            && i + 20 <= bytes.len()
            && bytes[i..i + 13].iter().all(u8::is_ascii_digit)
            && bytes[i + 13] == b'-'
            && bytes[i + 14..i + 20].iter().all(u8::is_ascii_hexdigit);
        if is_id {
            out.push_str("<id>");
            i += 20;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

/// The block with what varies between runs masked (see the file's header).
fn masked(block: &str) -> Vec<String> {
    let lines: Vec<&str> = block.lines().collect();
    let narration: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with('['))
        .collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let mut line = mask_ids(line);
        if line.starts_with('[') {
            if Some(&i) != narration.last() {
                continue;
            }
            line = line
                .split_once(']')
                .map(|(_, rest)| rest.to_string())
                .unwrap_or(line);
        }
        if line.starts_with("elapsed_ms") {
            // Each run of digits becomes one N: 219 and 1219 mask alike.
            let mut digits_masked = String::new();
            for c in line.chars() {
                if !c.is_ascii_digit() {
                    digits_masked.push(c);
                } else if !digits_masked.ends_with('N') {
                    digits_masked.push('N');
                }
            }
            line = digits_masked;
        }
        if let Some(at) = line.find("up to ") {
            let end = line[at + 6..].find(' ').map_or(line.len(), |e| at + 6 + e);
            line.replace_range(at + 6..end, "N");
        }
        out.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    out
}

/// The handout's output blocks, by name: `<!-- output: NAME -->` then a fenced block.
fn blocks(handout: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = handout;
    while let Some(at) = rest.find("<!-- output: ") {
        let after = &rest[at + 13..];
        let name_end = after.find(" -->").expect("closing -->");
        let name = after[..name_end].to_string();
        let fence = after.find("```text\n").expect("```text after the marker") + 8;
        let body_end = after[fence..].find("```").expect("closing fence");
        found.push((name, after[fence..fence + body_end].to_string()));
        rest = &after[fence + body_end..];
    }
    found
}

/// The handout with the block `name` replaced by `body`.
fn replace_block(handout: &str, name: &str, body: &str) -> String {
    let marker = format!("<!-- output: {name} -->");
    let at = handout
        .find(&marker)
        .unwrap_or_else(|| panic!("no block {name}"));
    let fence = at + handout[at..].find("```text\n").unwrap() + 8;
    let end = fence + handout[fence..].find("```").unwrap();
    format!("{}{body}{}", &handout[..fence], &handout[end..])
}

// The handout's outputs are what the starter and the reference fix print today;
// evidence builds the turn-in file from the same saved files.
#[tokio::test(flavor = "multi_thread")]
async fn handout_outputs_match_the_code() {
    let dir = scratch_dir("handout");
    let mut fresh: Vec<(&str, String)> = Vec::new();
    {
        let starter = Stack::with_two(Workers::Starter).await;
        let o = &["duplicate-observe", "--save", "observe-before.json"];
        fresh.push(("observe-before", output(&starter, &dir, o, 0).await));
        let o = &["duplicate-load", "8", "2", "--save", "load-before.json"];
        fresh.push(("load-before", output(&starter, &dir, o, 0).await));
        fresh.push((
            "verify-starter",
            output(&starter, &dir, &["verify"], 1).await,
        ));
    }
    let fixed = lab_schema::testing::solution_worker(Exercise::DuplicateDelivery);
    let stack = Stack::with_two(Workers::Binary(&fixed)).await;
    let o = &["duplicate-observe", "--save", "observe-after.json"];
    fresh.push(("observe-after", output(&stack, &dir, o, 0).await));
    let o = &["duplicate-load", "8", "2", "--save", "load-after.json"];
    fresh.push(("load-after", output(&stack, &dir, o, 0).await));
    let o = &["compare", "load-before.json", "load-after.json"];
    fresh.push(("compare", output(&stack, &dir, o, 0).await));
    fresh.push(("verify-fix", output(&stack, &dir, &["verify"], 0).await));

    // evidence: one file with everything the handout asks to turn in.
    let wrote = output(&stack, &dir, &["evidence", "--out", "evidence.md"], 0).await;
    assert!(
        wrote.starts_with("wrote ") && wrote.contains("evidence.md"),
        "{wrote}"
    );
    let evidence = std::fs::read_to_string(dir.join("evidence.md")).unwrap();
    for heading in [
        "## My idempotency strategy",
        "## `duplicate-observe` before the fix",
        "## `duplicate-observe` after the fix",
        "## `duplicate-load` after the fix",
        "## `duplicate-load` before and after",
        "# fixed: effects now equal unique jobs, 8 duplicate deliveries skipped",
        "`duplicate-load` after the fix: 8 duplicate skips",
    ] {
        assert!(
            evidence.contains(heading),
            "missing {heading:?} in\n{evidence}"
        );
    }
    let skip_lines = evidence
        .lines()
        .filter(|l| l.contains("duplicate delivery skipped: side effect NOT applied"))
        .count();
    assert_eq!(
        skip_lines,
        2 + 8,
        "2 in the observed job, 8 in the load run\n{evidence}"
    );

    // The log line the handout tells students to look for is the one the worker writes.
    let context = std::fs::read_to_string(
        lab_schema::testing::workspace_root().join("worker/src/context.rs"),
    )
    .unwrap();
    assert!(context.contains("duplicate delivery skipped: side effect NOT applied"));

    let path = handout_path();
    let mut handout = std::fs::read_to_string(&path).unwrap();
    if std::env::var_os("REGEN_HANDOUT").is_some() {
        for (name, body) in &fresh {
            handout = replace_block(&handout, name, body);
        }
        std::fs::write(&path, &handout).unwrap();
        return;
    }
    let mut shown = blocks(&handout);
    shown.sort();
    fresh.sort();
    let names: Vec<&str> = shown.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<&str> = fresh.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, expected, "the handout's output blocks");
    for ((name, body), (_, new)) in shown.iter().zip(&fresh) {
        assert_eq!(
            masked(body),
            masked(new),
            "the handout's `{name}` output differs from what the code prints now; \
             run exercises/01-duplicate-delivery/regen.sh and review the diff"
        );
    }
}

// The masking keeps what the class compares: the numbers and the verdict lines.
#[test]
fn masking_keeps_the_numbers() {
    let a = "run_id=load-1795386768342-15d4b1\nobserved_effects_total=16\nelapsed_ms=219\n";
    let b = "run_id=load-1795386799999-aaaaaa\nobserved_effects_total=16\nelapsed_ms=1219\n";
    assert_eq!(masked(a), masked(b));
    let c = "run_id=load-1795386799999-aaaaaa\nobserved_effects_total=8\nelapsed_ms=219\n";
    assert_ne!(masked(a), masked(c));
}
