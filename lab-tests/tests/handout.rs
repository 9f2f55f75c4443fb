//! Every exercise's student handout (`exercises/NN-name/README.md`) shows real
//! output: each `<!-- output: NAME | WORKERS | ARGS [| exit N] -->` block is
//! what the demo-runner prints for ARGS against two workers running the
//! starter or the exercise's solution (WORKERS), run here in the handout's
//! order (the starter's blocks first). This test fails when a handout and the
//! code disagree; `REGEN_HANDOUT=1` rewrites the blocks instead (each
//! `exercises/regen.sh`). A new exercise's handout is tested by being there.
//!
//! What legitimately differs from run to run is masked before comparing: run and
//! job ids, `elapsed_ms`, the observation timestamps, the observation lines
//! between the first and the last (how many state changes a poll catches depends
//! on timing), and the trace lines under a failed check (their header stays).
//! A marker can add `| varies KEY,KEY` (those lines' numbers vary) and
//! `| varies-detail KEY,KEY` (those check lines are compared by their name and
//! verdict only: what a storm's check saw, banned or not, depends on the machine).

use std::path::Path;

use lab_schema::Exercise;
use lab_testkit::{solution_binary, workspace_root};
use lab_tests::{Stack, scratch_dir, text};

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
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let is_id = i > 0
            && bytes[i - 1] == b'-'
            && i + 20 <= bytes.len()
            && bytes[i..i + 13].iter().all(u8::is_ascii_digit)
            && bytes[i + 13] == b'-'
            && bytes[i + 14..i + 20].iter().all(u8::is_ascii_hexdigit);
        if is_id {
            out.extend_from_slice(b"<id>");
            i += 20;
        } else {
            // Byte by byte, so that a character such as "—" stays itself.
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("ids are ASCII, so the rest stays UTF-8")
}

/// Masks what changes whenever a student file changes or time passes: the
/// fingerprints (`#3fa9c1`) and the workers' age (`started 35 s ago`).
fn mask_code(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find('#') {
        out.push_str(&rest[..=at]);
        let after = &rest[at + 1..];
        let hex = after
            .bytes()
            .take_while(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            .count();
        if hex == 6 && !after[6..].starts_with(|c: char| c.is_ascii_alphanumeric()) {
            out.push_str("<code>");
            rest = &after[6..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    if let Some(at) = out.find("started ")
        && let Some(end) = out[at..].find(" ago")
    {
        out.replace_range(at + 8..at + end, "<t>");
    }
    out
}

/// What `verify` prints above the trace lines of a failed check.
const TRACE_HEADER: &str = "what your code did (from the trace):";

/// The block with what varies between runs masked (see the file's header).
fn masked(block: &str) -> Vec<String> {
    let lines: Vec<&str> = block.lines().collect();
    let narration: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with('['))
        .collect();
    let mut out = Vec::new();
    let mut in_trace = false;
    for (i, line) in lines.iter().enumerate() {
        // The trace lines under a failed check name deliveries, tokens and
        // times of their run: their header is compared, not their content.
        if in_trace && line.starts_with("    ") {
            continue;
        }
        in_trace = line.trim_start() == TRACE_HEADER;
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
        line = mask_code(&line);
        if let Some(at) = line.find("up to ") {
            let end = line[at + 6..].find(' ').map_or(line.len(), |e| at + 6 + e);
            line.replace_range(at + 6..end, "N");
        }
        out.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    out
}

/// One output block of a handout: its name, which workers, the command, the exit
/// code, and the keys whose numbers vary from run to run (`| varies KEY,KEY`).
#[derive(Debug, Clone)]
struct Block {
    name: String,
    /// Which code prints it: the starter's workers, the solution's, or the
    /// compiler (`compile`: ARGS is a `fixtures/compile-*.patch` of the exercise).
    solution: bool,
    compile: bool,
    args: Vec<String>,
    exit: i32,
    varies: Vec<String>,
    /// Check lines compared up to their " — " (name and verdict only).
    varies_detail: Vec<String>,
    body: String,
}

/// The handout's output blocks, in order: `<!-- output: ... -->` then a fenced block.
fn blocks(handout: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut rest = handout;
    while let Some(at) = rest.find("<!-- output: ") {
        let after = &rest[at + 13..];
        let marker_end = after.find(" -->").expect("closing -->");
        let parts: Vec<&str> = after[..marker_end].split(" | ").map(str::trim).collect();
        assert!(
            parts.len() >= 3,
            "an output marker needs NAME | starter|solution | ARGS: {}",
            &after[..marker_end]
        );
        let mut exit = 0;
        let mut varies = Vec::new();
        let mut varies_detail = Vec::new();
        for option in &parts[3..] {
            if let Some(code) = option.strip_prefix("exit ") {
                exit = code
                    .parse()
                    .unwrap_or_else(|_| panic!("bad exit in marker: {option}"));
            } else if let Some(keys) = option.strip_prefix("varies-detail ") {
                varies_detail.extend(keys.split(',').map(|k| k.trim().to_string()));
            } else if let Some(keys) = option.strip_prefix("varies ") {
                varies.extend(keys.split(',').map(|k| k.trim().to_string()));
            } else {
                panic!(
                    "unknown marker option {option:?} \
                     (exit N, varies KEY,KEY, varies-detail KEY,KEY)"
                );
            }
        }
        let fence = after.find("```text\n").expect("```text after the marker") + 8;
        let body_end = after[fence..].find("```").expect("closing fence");
        found.push(Block {
            name: parts[0].to_string(),
            solution: match parts[1] {
                "starter" | "compile" => false,
                "solution" => true,
                other => panic!("workers must be starter, solution or compile, not {other}"),
            },
            compile: parts[1] == "compile",
            args: parts[2].split_whitespace().map(str::to_string).collect(),
            exit,
            varies,
            varies_detail,
            body: after[fence..fence + body_end].to_string(),
        });
        rest = &after[fence + body_end..];
    }
    found
}

/// The handout with the block `name` replaced by `body`.
fn replace_block(handout: &str, name: &str, body: &str) -> String {
    let marker = format!("<!-- output: {name} |");
    let at = handout
        .find(&marker)
        .unwrap_or_else(|| panic!("no block {name}"));
    let fence = at + handout[at..].find("```text\n").unwrap() + 8;
    let end = fence + handout[fence..].find("```").unwrap();
    format!("{}{body}{}", &handout[..fence], &handout[end..])
}

/// Runs every block of one exercise's handout (the starter's first); returns
/// (name, fresh output) pairs.
async fn fresh_outputs(exercise: Exercise, shown: &[Block]) -> Vec<(String, String)> {
    let dir = scratch_dir(&format!("handout-{}", exercise.number()));
    let mut fresh = Vec::new();
    for block in shown.iter().filter(|b| b.compile) {
        let patch = format!("{}/{}", exercise.folder(), block.args.join(" "));
        fresh.push((block.name.clone(), first_compile_error(exercise, &patch)));
    }
    for solution in [false, true] {
        let mine: Vec<&Block> = shown
            .iter()
            .filter(|b| b.solution == solution && !b.compile)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let binary = solution.then(|| solution_binary(exercise));
        let stack = Stack::for_exercise(exercise, binary.as_deref()).await;
        for block in mine {
            let args: Vec<&str> = block.args.iter().map(String::as_str).collect();
            let out = output(&stack, &dir, &args, block.exit).await;
            fresh.push((block.name.clone(), out));
        }
        if solution && exercise == Exercise::DuplicateDelivery {
            check_evidence(&stack, &dir).await;
        } else if solution {
            check_later_evidence(exercise, &stack, &dir).await;
        }
    }
    fresh
}

/// The compiler's first error (up to its blank line) when the worker is built
/// with `patch`, as `./lab check` or a failed `docker compose up --build` shows it.
fn first_compile_error(exercise: Exercise, patch: &str) -> String {
    let errors = lab_testkit::build_errors(exercise.info().component, patch)
        .unwrap_or_else(|| panic!("{patch} builds; a compile-error block needs one that does not"));
    let mut out = String::new();
    for line in errors
        .lines()
        .skip_while(|l| !l.starts_with("error"))
        .take_while(|l| !l.trim().is_empty())
    {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Exercise 1's `evidence` builds the turn-in file from the saved files.
async fn check_evidence(stack: &Stack, dir: &Path) {
    let wrote = output(stack, dir, &["evidence", "--out", "evidence.md"], 0).await;
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
        "# compare judges these two runs' numbers only; verify --exercise 1 checks what they cannot show",
        "`duplicate-load` after the fix: 8 duplicate skips",
        "## `verify --exercise 1`, run when this file was made",
        "verdict: PASS, 6 of 6 checks passed",
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
    let context = std::fs::read_to_string(workspace_root().join("worker/src/context.rs")).unwrap();
    assert!(context.contains("duplicate delivery skipped: side effect NOT applied"));
}

/// A later exercise's `evidence --exercise N` builds the turn-in file from the
/// two runs the handout saved (`<name>-before.json`, `<name>-after.json`) and
/// verify's report, run then.
async fn check_later_evidence(exercise: Exercise, stack: &Stack, dir: &Path) {
    let n = exercise.number().to_string();
    let out = format!("evidence-{n}.md");
    let wrote = output(
        stack,
        dir,
        &["evidence", "--exercise", &n, "--out", &out],
        0,
    )
    .await;
    assert!(wrote.starts_with("wrote "), "{wrote}");
    let evidence = std::fs::read_to_string(dir.join(&out)).unwrap();
    let scenario = exercise.info().scenarios[0];
    for heading in [
        format!("# Evidence: {} (exercise {n})", exercise.info().title),
        "## My explanation".to_string(),
        format!("## `{scenario}` before the fix"),
        format!("## `{scenario}` after the fix"),
        format!("## `{scenario}` before and after"),
        "# fixed: ".to_string(),
        "## What the workers recorded in the after run".to_string(),
        format!("## `verify --exercise {n}`, run when this file was made"),
        "verdict: PASS".to_string(),
    ] {
        assert!(
            evidence.contains(&heading),
            "{exercise}: missing {heading:?} in\n{evidence}"
        );
    }
}

// Every handout's outputs are what the starter and the solution print today.
#[tokio::test(flavor = "multi_thread")]
async fn handout_outputs_match_the_code() {
    for exercise in Exercise::ALL.iter().copied() {
        let path = workspace_root().join(exercise.folder()).join("README.md");
        let mut handout = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{exercise} has no handout at {}", path.display()));
        let shown = blocks(&handout);
        assert!(!shown.is_empty(), "{exercise}: the handout shows no output");
        let mut fresh = fresh_outputs(exercise, &shown).await;
        let differs = |fresh: &[(String, String)]| {
            fresh.iter().any(|(name, new)| {
                let block = shown.iter().find(|b| &b.name == name).unwrap();
                masked_varying(&block.body, block) != masked_varying(new, block)
            })
        };
        if std::env::var_os("REGEN_HANDOUT").is_none() && differs(&fresh) {
            // What a storm does depends on the machine's speed: on a machine
            // the rest of the suite starves of CPU, exercise 5's starter can
            // retry slower than the provider's budget and never be banned. One
            // more run before failing; a handout that is out of date fails both.
            eprintln!("{exercise}: an output differs from the handout; running them once more");
            fresh = fresh_outputs(exercise, &shown).await;
        }
        if std::env::var_os("REGEN_HANDOUT").is_some() {
            for (name, body) in &fresh {
                handout = replace_block(&handout, name, body);
            }
            std::fs::write(&path, &handout).unwrap();
            continue;
        }
        for (name, new) in &fresh {
            let block = shown.iter().find(|b| &b.name == name).unwrap();
            assert_eq!(
                masked_varying(&block.body, block),
                masked_varying(new, block),
                "the handout's `{name}` output ({}) differs from what the code prints now; \
                 run exercises/regen.sh and review the diff",
                path.display(),
            );
        }
    }
}

/// [`masked`], and the numbers of the lines that start with a key in the
/// marker's `varies` (e.g. attempts that depend on how often a delivery
/// retried) become one N; the lines that start with a key in `varies-detail`
/// keep only their check's name and verdict.
fn masked_varying(body: &str, block: &Block) -> Vec<String> {
    let starts = |line: &str, keys: &[String]| keys.iter().any(|k| line.starts_with(k.as_str()));
    masked(body)
        .into_iter()
        .map(|line| {
            if starts(&line, &block.varies_detail) {
                return match line.split_once(" — ") {
                    Some((check, _)) => format!("{check} — (varies)"),
                    None => line,
                };
            }
            if !starts(&line, &block.varies) {
                return line;
            }
            let mut out = String::new();
            for c in line.chars() {
                if !c.is_ascii_digit() {
                    out.push(c);
                } else if !out.ends_with('N') {
                    out.push('N');
                }
            }
            out
        })
        .collect()
}

// The masking keeps what the class compares: the numbers and the verdict lines.
#[test]
fn masking_keeps_the_numbers() {
    let a = "run_id=load-1795386768342-15d4b1\nobserved_effects_total=16\nelapsed_ms=219\n";
    let b = "run_id=load-1795386799999-aaaaaa\nobserved_effects_total=16\nelapsed_ms=1219\n";
    assert_eq!(masked(a), masked(b));
    let c = "run_id=load-1795386799999-aaaaaa\nobserved_effects_total=8\nelapsed_ms=219\n";
    assert_ne!(masked(a), masked(c));
    // The code's fingerprint and the workers' age change with every edit and run.
    let d = "worker_code=job.rs#3fa9c1\n# 2 workers running job.rs #3fa9c1, started 35 s ago\n";
    let e = "worker_code=job.rs#77aa01\n# 2 workers running job.rs #77aa01, started 4 min ago\n";
    assert_eq!(masked(d), masked(e));
    assert_ne!(
        masked(d),
        masked("worker_code=job.rs#3fa9c1\n# 1 worker running job.rs #3fa9c1, started 35 s ago\n")
    );
}

// A failed check's trace lines differ from run to run; that there are some does not.
#[test]
fn masking_keeps_the_trace_header_not_its_lines() {
    let a = "FAIL x — n => why\n    what your code did (from the trace):\n    delivery 1-0 (attempt 1) on worker-1:\n      +0ms SET k v NX PX 3000 -> OK\nverdict: FAIL\n";
    let b = "FAIL x — n => why\n    what your code did (from the trace):\n    delivery 2-0 (attempt 2) on worker-2:\nverdict: FAIL\n";
    let c = "FAIL x — n => why\nverdict: FAIL\n";
    assert_eq!(masked(a), masked(b));
    assert_ne!(masked(a), masked(c));
}

// A storm's check can see a ban on one run and none on the next: a marker's
// `varies-detail` compares those check lines by name and verdict, and only those.
#[test]
fn varies_detail_keeps_the_checks_name_and_verdict() {
    let handout = "<!-- output: v | starter | verify | exit 1 | varies-detail FAIL storm -->\n\
                   ```text\nFAIL storm — 429s: 12 (account BANNED) => banned\nPASS other — 3 ms\n```\n";
    let block = &blocks(handout)[0];
    let banned = masked_varying(&block.body, block);
    let not_banned = "FAIL storm — 429s: 4 => rate-limited 4 times\nPASS other — 3 ms\n";
    assert_eq!(banned, masked_varying(not_banned, block));
    assert_eq!(banned[0], "FAIL storm — (varies)");
    let passed = "PASS storm — 429s: 0\nPASS other — 3 ms\n";
    assert_ne!(banned, masked_varying(passed, block));
    let other_changed = "FAIL storm — 429s: 4\nPASS other — 9 ms\n";
    assert_ne!(banned, masked_varying(other_changed, block));
}

/// `text` without `//` comments and whitespace: how a snippet is compared with a file.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<String>()
        .split_whitespace()
        .collect()
}

/// The student file of `exercise` with its reference solution applied.
fn reference_file(exercise: Exercise) -> String {
    let file = exercise.info().student_file;
    let dir = scratch_dir(&format!("reference-{}", exercise.number()));
    let copy = dir.join(file);
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(workspace_root().join(file), &copy).unwrap();
    let applied = std::process::Command::new("git")
        .arg("apply")
        .arg(workspace_root().join(exercise.solution_patch()))
        .current_dir(&dir)
        .env("GIT_CEILING_DIRECTORIES", dir.parent().unwrap())
        .status()
        .unwrap();
    assert!(
        applied.success(),
        "{exercise}: the solution no longer applies"
    );
    std::fs::read_to_string(copy).unwrap()
}

// Every piece of Rust a handout prints (its ```rust blocks, and each inline
// statement: a `...;` with a call in it) is code that runs as printed: it is in
// the reference solution (which compiles and passes verify, see the exercises
// test) or in the starter, word for word but for spaces and comments. A snippet
// that drops a `.await?` or renames a variable fails here, not in class.
#[test]
fn every_rust_snippet_in_a_handout_is_in_the_reference_or_the_starter() {
    let mut missing = Vec::new();
    let mut seen = 0;
    for exercise in Exercise::ALL.iter().copied() {
        let handout =
            std::fs::read_to_string(workspace_root().join(exercise.folder()).join("README.md"))
                .unwrap();
        let starter =
            std::fs::read_to_string(workspace_root().join(exercise.info().student_file)).unwrap();
        let files = [code_only(&reference_file(exercise)), code_only(&starter)];
        let mut snippets: Vec<String> = Vec::new();
        // The fenced blocks (```rust ones are snippets), and the prose around them.
        let mut prose = String::new();
        for (i, part) in handout.split("```").enumerate() {
            if i % 2 == 0 {
                prose.push_str(part);
            } else if let Some(code) = part.strip_prefix("rust\n") {
                snippets.push(code.to_string());
            }
        }
        for (i, part) in prose.split('`').enumerate() {
            let statement = part.trim_end();
            if i % 2 == 1 && !part.contains('\n') && statement.ends_with(';') && part.contains('(')
            {
                snippets.push(part.to_string());
            }
        }
        for snippet in snippets {
            seen += 1;
            if !files.iter().any(|f| f.contains(&code_only(&snippet))) {
                missing.push(format!("{exercise}: {snippet}"));
            }
        }
    }
    assert!(
        seen > 10,
        "only {seen} snippets found: is the parsing right?"
    );
    assert!(
        missing.is_empty(),
        "these snippets are in neither the reference nor the starter:\n{}",
        missing.join("\n---\n")
    );
}
