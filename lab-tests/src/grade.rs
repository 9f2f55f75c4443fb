//! `./lab grade SUBMISSION...`: grades students' code on the instructor's
//! machine. Students need not edit this file.
//!
//! A submission is a student's exercise file (`job.rs`), a folder of such
//! files (a Gradescope submission), or a folder or git repository of the lab.
//! Only the exercise's student file is taken from it (never a `Cargo.toml`, a
//! `build.rs` or another file: those are listed as ignored); it is written over
//! a scratch copy of this checkout and built there (one build folder, so only
//! the student's crate recompiles), then the exercise's grader, this checkout's
//! own `verify`, runs against it on a private stack (its own Redis on a free
//! port). Every submission ends as a result file, also when its code does not
//! compile, runs past the time budget or does not start: grading never stops at
//! one student. Builds take turns; a build overlaps the checks of the
//! submission before it, and `--jobs` sets how many checks run at once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lab_schema::Exercise;
use lab_schema::grade::{GradeResult, Outcome, Submission};
use lab_testkit::{NotBuilt, built_with_files, workspace_root};

use crate::Stack;

/// At most this many ignored files are listed in a result.
const IGNORED_LISTED: usize = 20;

/// A student file larger than this is not a student file.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// What not to look into in a submission.
const NOT_SEARCHED: [&str; 6] = [
    "target",
    ".git",
    ".lab",
    "lab-output",
    "node_modules",
    ".github",
];

/// One exercise of one submission, ready to build.
#[derive(Debug, Clone)]
pub struct Task {
    pub student: String,
    pub exercise: Exercise,
    pub submission: Submission,
    /// The student file's content.
    pub content: Vec<u8>,
}

/// How grading runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where result files go: `<out>/<student>/exercise-N.json` and beside it.
    pub out: PathBuf,
    /// The seal key (created when missing).
    pub key_file: PathBuf,
    /// Checks of this many submissions run at once.
    pub jobs: usize,
    /// The longest a build may take.
    pub build_limit: Duration,
    /// The longest the checks may take.
    pub check_limit: Duration,
    /// Also write Gradescope's `results.json` of this run's results here.
    pub gradescope: Option<PathBuf>,
    /// Also append a Markdown summary here (GitHub Actions' `$GITHUB_STEP_SUMMARY`).
    pub summary: Option<PathBuf>,
    /// Print each result as one JSON line on stdout instead of writing files
    /// (unsealed: `./lab grade --docker` seals them outside the container).
    pub to_stdout: bool,
}

/// `name` as a folder name: letters, digits, `.`, `_` and `-`.
pub fn student_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches(|c| c == '.' || c == '-').to_string();
    if clean.is_empty() {
        "student".to_string()
    } else {
        clean
    }
}

/// The student's name for a submission: its folder's name (for a file, the
/// folder it is in), which the instructor chose, never something the
/// student's files say.
fn name_of(path: &Path) -> String {
    let folder = if path.is_dir() {
        path.to_path_buf()
    } else {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    let folder = folder.canonicalize().unwrap_or(folder);
    student_name(
        &folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )
}

fn basename(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}

/// The exercise whose student file has this name (`job.rs`).
fn exercise_of_file_name(name: &str) -> Option<Exercise> {
    Exercise::ALL
        .iter()
        .copied()
        .find(|e| basename(e.info().student_file) == name)
}

/// Every file under `dir` (relative paths, sorted), not looking into build
/// output or version control, nor following a link; at most `limit`.
fn files_under(dir: &Path, limit: usize) -> Vec<PathBuf> {
    lab_testkit::files_below(
        dir,
        |_, name| NOT_SEARCHED.iter().any(|n| name == *n),
        limit,
    )
}

fn read_student_file(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{}: {} bytes is too large for a student file",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| format!("{}: cannot read it: {e}", path.display()))
}

/// The tasks of one submission: which exercises, from which files. `wanted`
/// (`--exercise`): those exercises (an error when the submission lacks one);
/// empty: every exercise whose file the submission changed. `root`: this
/// checkout (the starters, and what a lab folder is compared with).
pub fn tasks_of(
    path: &Path,
    wanted: &[Exercise],
    student: Option<&str>,
    root: &Path,
) -> Result<Vec<Task>, String> {
    let given = path.display().to_string();
    let student = student.map_or_else(|| name_of(path), student_name);
    let task = |exercise: Exercise, from: &Path, shown: String, ignored: Vec<String>| {
        let content = read_student_file(from)?;
        let more = ignored.len().saturating_sub(IGNORED_LISTED);
        Ok::<Task, String>(Task {
            student: student.clone(),
            exercise,
            submission: Submission {
                path: given.clone(),
                file: exercise.info().student_file.to_string(),
                taken_from: shown,
                ignored: ignored.into_iter().take(IGNORED_LISTED).collect(),
                ignored_more: more,
            },
            content,
        })
    };
    let changed = |exercise: Exercise, content: &[u8]| {
        std::fs::read(root.join(exercise.info().student_file))
            .ok()
            .as_deref()
            != Some(content)
    };
    let meta = std::fs::metadata(path).map_err(|e| format!("{given}: {e}"))?;
    if meta.is_file() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let exercise = exercise_of_file_name(&name).ok_or_else(|| {
            format!(
                "{given}: not an exercise file (they are {})",
                Exercise::ALL
                    .iter()
                    .map(|e| basename(e.info().student_file))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        if !wanted.is_empty() && !wanted.contains(&exercise) {
            return Err(format!(
                "{given} is exercise {}'s file; --exercise asked for another",
                exercise.number()
            ));
        }
        return Ok(vec![task(exercise, path, name.into_owned(), Vec::new())?]);
    }
    // Regular files only: a symbolic link (to another student's folder, to
    // /etc) is never followed.
    let files = files_under(path, 20_000);
    // A lab: the folder, or one below it (an archive's `lab-main/`), with an
    // exercise's file at its place; the shallowest if there are several.
    let lab_root: Option<PathBuf> = files
        .iter()
        .filter_map(|f| {
            Exercise::ALL.iter().find_map(|e| {
                let file = Path::new(e.info().student_file);
                f.ends_with(file)
                    .then(|| f.ancestors().nth(file.components().count()))
                    .flatten()
                    .map(Path::to_path_buf)
            })
        })
        .min_by_key(|base| base.components().count());
    let considered: Vec<Exercise> = if wanted.is_empty() {
        Exercise::ALL.to_vec()
    } else {
        wanted.to_vec()
    };
    // Where each exercise's file is in the submission.
    let mut found: Vec<(Exercise, PathBuf)> = Vec::new();
    for &exercise in &considered {
        let file = exercise.info().student_file;
        if let Some(base) = &lab_root {
            let rel = base.join(file);
            if files.contains(&rel) {
                found.push((exercise, rel));
            }
            continue;
        }
        let named: Vec<&PathBuf> = files
            .iter()
            .filter(|f| f.file_name().is_some_and(|n| n == basename(file)))
            .collect();
        match named[..] {
            [] => {}
            [one] => found.push((exercise, one.clone())),
            _ => {
                return Err(format!(
                    "{given}: {} files are named {} ({}): keep one",
                    named.len(),
                    basename(file),
                    named
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    let chosen: Vec<(Exercise, PathBuf)> = if wanted.is_empty() {
        let changed: Vec<(Exercise, PathBuf)> = found
            .iter()
            .filter(|(e, rel)| read_student_file(&path.join(rel)).is_ok_and(|c| changed(*e, &c)))
            .cloned()
            .collect();
        if changed.is_empty() {
            return Err(format!(
                "{given}: {}: --exercise N grades one anyway (its starter fails)",
                if found.is_empty() {
                    "no exercise file in it".to_string()
                } else {
                    "no exercise file in it differs from its starter".to_string()
                }
            ));
        }
        changed
    } else {
        let mut chosen = Vec::new();
        for &exercise in wanted {
            let file = exercise.info().student_file;
            match found.iter().find(|(e, _)| *e == exercise) {
                Some(hit) => chosen.push(hit.clone()),
                None => {
                    return Err(format!(
                        "{given}: no {} in it (exercise {}'s file)",
                        if lab_root.is_some() {
                            file
                        } else {
                            basename(file)
                        },
                        exercise.number()
                    ));
                }
            }
        }
        chosen
    };
    let mut tasks = Vec::new();
    for (exercise, rel) in chosen {
        // What else the submission holds that differs from this checkout: never used.
        let ignored: Vec<String> = files
            .iter()
            .filter(|f| **f != rel)
            .filter(|f| {
                let in_lab = lab_root.as_ref().and_then(|base| f.strip_prefix(base).ok());
                match in_lab {
                    Some(at) => {
                        std::fs::read(root.join(at)).ok() != std::fs::read(path.join(f)).ok()
                    }
                    None => true,
                }
            })
            .map(|f| f.display().to_string())
            .collect();
        tasks.push(task(
            exercise,
            &path.join(&rel),
            rel.display().to_string(),
            ignored,
        )?);
    }
    Ok(tasks)
}

/// `exercise`'s student file with `patch` (a path from the repository root,
/// e.g. a fixture) applied: a student's file, for tests and the benchmark.
pub fn patched_student_file(exercise: Exercise, patch: &str) -> Vec<u8> {
    let dir = crate::scratch_dir("student-file");
    let file = exercise.info().student_file;
    std::fs::create_dir_all(dir.join(file).parent().expect("a folder")).expect("scratch");
    std::fs::copy(workspace_root().join(file), dir.join(file)).expect("the starter");
    let applied = Command::new("git")
        .arg("apply")
        .arg(workspace_root().join(patch))
        .current_dir(&dir)
        .env("GIT_CEILING_DIRECTORIES", dir.parent().expect("temp"))
        .status()
        .expect("git");
    assert!(applied.success(), "{patch} does not apply");
    let content = std::fs::read(dir.join(file)).expect("the patched file");
    let _ = std::fs::remove_dir_all(&dir);
    content
}

/// The compiler's first error and where it is: what a result says of code that does not compile.
pub fn first_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let Some(at) = lines.iter().position(|l| l.starts_with("error")) else {
        return lines
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map_or_else(|| "the build failed".to_string(), |l| l.trim().to_string());
    };
    let mut out = lines[at].to_string();
    if let Some(place) = lines[at + 1..]
        .iter()
        .take(3)
        .find(|l| l.trim_start().starts_with("-->"))
    {
        out.push_str(&format!(
            " ({})",
            place.trim_start().trim_start_matches("--> ")
        ));
    }
    out
}

/// The grading machine's seal key: read, or made (32 random bytes, readable by its owner only).
pub fn seal_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    if let Ok(key) = std::fs::read(path)
        && key.len() >= 32
    {
        return Ok(key);
    }
    let mut key = vec![0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut file, &key)?;
    Ok(key)
}

/// The checkout's commit (`-dirty` when it has changes), when git can say:
/// asked once per grading run, not once per result.
fn lab_commit() -> Option<String> {
    static COMMIT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    COMMIT.get_or_init(|| commit_of(&workspace_root())).clone()
}

fn commit_of(root: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}

/// A result with the fields every outcome shares.
fn result_of(task: &Task, outcome: Outcome, started: Instant) -> GradeResult {
    GradeResult {
        lab_commit: lab_commit(),
        submission: task.submission.clone(),
        fingerprint: lab_schema::code::fingerprint(&task.content),
        graded_at: demo_runner::utc_timestamp(lab_schema::now_ms()),
        duration_ms: started.elapsed().as_millis() as u64,
        ..GradeResult::new(
            &task.student,
            task.exercise.number(),
            task.exercise.info().slug,
            outcome,
        )
    }
}

/// A result that was not graded: every check listed as not run, with why.
fn not_graded(task: &Task, outcome: Outcome, reason: String, started: Instant) -> GradeResult {
    let mut result = result_of(task, outcome, started);
    result.checks = demo_runner::grading::checks_not_run(task.exercise, outcome, &reason);
    result.verdict = format!("verdict: FAIL, {}: {reason}", outcome.label());
    result.reason = Some(reason);
    result
}

/// Builds a task's program (the worker, or the API for exercise 4) with its
/// student file; `Err`: the result saying why it could not be built.
fn build(
    task: &Task,
    index: usize,
    limit: Duration,
    started: Instant,
) -> Result<PathBuf, Box<GradeResult>> {
    let package = task.exercise.info().component.package();
    let files = [(
        task.exercise.info().student_file.to_string(),
        task.content.clone(),
    )];
    let name = format!("grade-{}-{index}", std::process::id());
    match built_with_files(PACKAGES, &files, &name, limit) {
        Ok(binaries) => {
            // The program the student's file is in; the other one is not needed.
            let mut chosen = None;
            for (built, binary) in PACKAGES.iter().zip(binaries) {
                if *built == package {
                    chosen = Some(binary);
                } else {
                    let _ = std::fs::remove_file(binary);
                }
            }
            Ok(chosen.expect("the student file's program is built"))
        }
        Err(NotBuilt::Errors(stderr)) => Err(Box::new(not_graded(
            task,
            Outcome::BuildFailed,
            first_error(&stderr),
            started,
        ))),
        Err(NotBuilt::TimedOut(limit)) => Err(Box::new(not_graded(
            task,
            Outcome::TimedOut,
            format!("the build took longer than {} s", limit.as_secs()),
            started,
        ))),
    }
}

/// What every grading build builds, together: the same packages each time
/// resolve the same dependency features, so a submission recompiles only its
/// own crate (built alone, the worker would recompile a dozen dependencies).
const PACKAGES: [&str; 2] = ["worker", "api"];

/// Builds the starter's programs in the scratch copy (what the first
/// submission would otherwise wait for): the seconds it took.
pub fn prepare() -> Result<f64, String> {
    let started = Instant::now();
    let name = format!("grade-prepare-{}", std::process::id());
    match built_with_files(PACKAGES, &[], &name, Duration::from_secs(3600)) {
        Ok(binaries) => {
            for binary in binaries {
                let _ = std::fs::remove_file(binary);
            }
            Ok(started.elapsed().as_secs_f64())
        }
        Err(NotBuilt::Errors(stderr)) => Err(first_error(&stderr)),
        Err(NotBuilt::TimedOut(limit)) => {
            Err(format!("still building after {} s", limit.as_secs()))
        }
    }
}

/// The verify `./lab grade` runs, on a stack with the test suite's 1 s claim idle
/// time: the late copy comes after verify's own default (5 s), as in the students'
/// verify, so that a claim's TTL between 3 and 5 s fails here as it fails there.
const VERIFY_ARGS: [&str; 4] = ["--redelivery-wait", "15", "--timeout", "60"];

/// Runs the exercise's checks against `binary` on a private stack; the result.
async fn check(task: &Task, binary: PathBuf, limit: Duration, started: Instant) -> GradeResult {
    let exercise = task.exercise;
    // A stack that cannot start (the student's API panics at start) must not
    // stop the grading run: it is started on a task of its own.
    let stack =
        tokio::spawn(async move { Stack::for_exercise(exercise, Some(&binary)).await }).await;
    let stack = match stack {
        Ok(stack) => stack,
        Err(e) => {
            return not_graded(
                task,
                Outcome::StackFailed,
                format!("the stack did not start: {}", panic_text(e)),
                started,
            );
        }
    };
    let dir = std::env::temp_dir().join(format!(
        "lab-grade-{}-{}",
        std::process::id(),
        stack.redis.port()
    ));
    let _ = std::fs::create_dir_all(&dir);
    let number = exercise.number().to_string();
    let mut args = vec![
        "--api-url".to_string(),
        stack.api_url.clone(),
        "--provider-url".to_string(),
        stack.provider_url.clone(),
        "--json".to_string(),
        "verify".to_string(),
        "--exercise".to_string(),
        number,
    ];
    args.extend(VERIFY_ARGS.iter().map(|a| a.to_string()));
    let ran = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || run_within(crate::demo_binary(), &args, &dir, limit))
            .await
            .expect("the checks' thread")
    };
    // The student's module: `worker/src/job.rs` logs as `worker::job`.
    let module = exercise
        .info()
        .student_file
        .trim_end_matches(".rs")
        .replace("/src/", "::");
    let log = stack.student_log_lines(&module, 20);
    drop(stack);
    let _ = std::fs::remove_dir_all(&dir);
    let output = match ran {
        Err(why) => {
            let mut result = not_graded(task, Outcome::StackFailed, why, started);
            result.log = log;
            return result;
        }
        Ok(None) => {
            let mut result = not_graded(
                task,
                Outcome::TimedOut,
                format!(
                    "the checks took longer than {} s (a handler that never returns?)",
                    limit.as_secs()
                ),
                started,
            );
            result.log = log;
            return result;
        }
        Ok(Some(output)) => output,
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Option<serde_json::Value> = serde_json::from_str(stdout.trim()).ok();
    let parsed = report
        .as_ref()
        .and_then(|r| demo_runner::grading::checks_of_verify_json(r).ok());
    match parsed {
        Some((checks, verdict)) => {
            let mut result = result_of(task, Outcome::Graded, started);
            result.log = log;
            result.passed = !checks.is_empty() && checks.iter().all(|c| c.passed);
            result.checks = checks;
            result.verdict = verdict;
            result
        }
        None => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output");
            let mut result = not_graded(
                task,
                Outcome::StackFailed,
                format!("the checks could not run: {last}"),
                started,
            );
            result.log = log;
            result
        }
    }
}

fn panic_text(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "it panicked".to_string())
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        Err(e) => e.to_string(),
    }
}

/// Runs `program` in `dir`; `None` when it was still running after `limit`
/// (it is killed); `Err` when it could not be started.
fn run_within(
    program: PathBuf,
    args: &[String],
    dir: &Path,
    limit: Duration,
) -> Result<Option<std::process::Output>, String> {
    let out = dir.join("stdout");
    let err = dir.join("stderr");
    let file = |path: &Path| {
        std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    let mut child = Command::new(&program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(file(&out)?)
        .stderr(file(&err)?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(Some(std::process::Output {
                status,
                stdout: std::fs::read(&out).unwrap_or_default(),
                stderr: std::fs::read(&err).unwrap_or_default(),
            }));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One line for the progress of a class: the verdict and the first failing checks' diagnoses.
pub fn progress_line(result: &GradeResult) -> String {
    if result.outcome != Outcome::Graded {
        return format!(
            "FAIL, {}: {}",
            result.outcome.label(),
            result.reason.as_deref().unwrap_or("")
        );
    }
    if result.passed {
        return format!("PASS, {} checks", result.checks.len());
    }
    let failed: Vec<String> = result
        .failed()
        .filter(|c| c.diagnosis.as_deref() != Some("same-mistake"))
        .map(|c| {
            format!(
                "{} ({})",
                c.name,
                c.diagnosis.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    format!(
        "FAIL, {} of {} checks: {}",
        result.failed().count(),
        result.checks.len(),
        failed.join(", ")
    )
}

/// Writes a result and the files made from it: `exercise-N.json` (sealed),
/// `exercise-N.junit.xml`, and the student's `gradescope-results.json` (of
/// every result in their folder).
pub fn write_result(
    out: &Path,
    result: &GradeResult,
    points: &demo_runner::grading::Points,
) -> anyhow::Result<PathBuf> {
    let folder = out.join(&result.student);
    std::fs::create_dir_all(&folder)?;
    let path = folder.join(format!("exercise-{}.json", result.exercise));
    std::fs::write(&path, serde_json::to_string_pretty(result)? + "\n")?;
    std::fs::write(
        folder.join(format!("exercise-{}.junit.xml", result.exercise)),
        demo_runner::grading::junit(std::slice::from_ref(result)),
    )?;
    let mut mine = Vec::new();
    for &exercise in Exercise::ALL {
        let file = folder.join(format!("exercise-{}.json", exercise.number()));
        if let Ok(r) = std::fs::read_to_string(&file).map(|t| lab_schema::grade::parse(&t)) {
            mine.extend(r.ok());
        }
    }
    write_gradescope(&folder.join("gradescope-results.json"), &mine, points)?;
    Ok(path)
}

/// Gradescope's `results.json` of `results`, written to `file`.
fn write_gradescope(
    file: &Path,
    results: &[GradeResult],
    points: &demo_runner::grading::Points,
) -> anyhow::Result<()> {
    let json = demo_runner::grading::gradescope(results, points);
    std::fs::write(file, serde_json::to_string_pretty(&json)? + "\n")?;
    Ok(())
}

/// Grades every task, a build at a time and `jobs` checks at once; prints a
/// line per result as it comes; returns the results in the tasks' order.
pub async fn grade_all(tasks: Vec<Task>, options: &Options) -> anyhow::Result<Vec<GradeResult>> {
    let key = if options.to_stdout {
        Vec::new()
    } else {
        std::fs::create_dir_all(&options.out)?;
        seal_key(&options.key_file)?
    };
    let points = points(&workspace_root())?;
    let total = tasks.len();
    let slots = Arc::new(tokio::sync::Semaphore::new(options.jobs.max(1)));
    let mut running = tokio::task::JoinSet::new();
    let began = Instant::now();
    for (index, task) in tasks.into_iter().enumerate() {
        let started = Instant::now();
        let built = {
            let (task, limit) = (task.clone(), options.build_limit);
            tokio::task::spawn_blocking(move || build(&task, index, limit, started))
                .await
                .expect("the build's thread")
        };
        let build_secs = started.elapsed().as_secs_f64();
        let slot = slots.clone().acquire_owned().await?;
        let limit = options.check_limit;
        running.spawn(async move {
            let result = match built {
                Ok(binary) => {
                    let result = check(&task, binary.clone(), limit, started).await;
                    let _ = std::fs::remove_file(&binary);
                    result
                }
                Err(result) => *result,
            };
            drop(slot);
            (index, result, build_secs)
        });
    }
    let mut results: Vec<(usize, GradeResult)> = Vec::new();
    while let Some(done) = running.join_next().await {
        let (index, mut result, build_secs) = done?;
        let path = if options.to_stdout {
            println!("{}", serde_json::to_string(&result)?);
            PathBuf::from("stdout")
        } else {
            result.seal_with(&key);
            write_result(&options.out, &result, &points)?
        };
        eprintln!(
            "[{}/{total}] {} exercise {}: {} ({:.1} s, build {build_secs:.1} s) -> {}",
            results.len() + 1,
            result.student,
            result.exercise,
            progress_line(&result),
            result.duration_ms as f64 / 1000.0,
            path.display()
        );
        results.push((index, result));
    }
    results.sort_by_key(|(i, _)| *i);
    let results: Vec<GradeResult> = results.into_iter().map(|(_, r)| r).collect();
    let secs = began.elapsed().as_secs_f64();
    eprintln!(
        "graded {} in {secs:.0} s ({:.1} s each); results in {}; the class on one page: ./lab demo class-report {}",
        lab_schema::summary::plural(total as u64, "submission"),
        secs / total.max(1) as f64,
        options.out.display(),
        options.out.display()
    );
    if let Some(file) = &options.gradescope {
        write_gradescope(file, &results, &points)?;
    }
    if let Some(file) = &options.summary {
        use std::io::Write;
        let mut summary = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)?;
        summary.write_all(demo_runner::grading::markdown_summary(&results).as_bytes())?;
    }
    Ok(results)
}

/// `./lab grade --docker`'s second step: the results the grading container
/// printed (JSON lines), sealed with this machine's key and written as
/// `grade_all` writes them. A line that is not a result is named and skipped.
pub fn import(lines: &str, options: &Options) -> anyhow::Result<Vec<GradeResult>> {
    let key = seal_key(&options.key_file)?;
    let points = points(&workspace_root())?;
    std::fs::create_dir_all(&options.out)?;
    let mut results = Vec::new();
    for (i, line) in lines
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match lab_schema::grade::parse(line) {
            // The grading container's own results only: a name that is a folder
            // name, a real exercise, once each (its lines name where files go).
            Ok(result)
                if student_name(&result.student) != result.student
                    || Exercise::from_number(result.exercise).is_none()
                    || results.iter().any(|r: &GradeResult| {
                        r.student == result.student && r.exercise == result.exercise
                    }) =>
            {
                eprintln!(
                    "grade: line {} of the grading container's output: student {:?}, exercise {}: not a name, not an exercise, or twice: skipped",
                    i + 1,
                    result.student,
                    result.exercise
                );
            }
            Ok(mut result) => {
                result.seal_with(&key);
                let path = write_result(&options.out, &result, &points)?;
                eprintln!(
                    "{} exercise {}: {} -> {}",
                    result.student,
                    result.exercise,
                    progress_line(&result),
                    path.display()
                );
                results.push(result);
            }
            Err(why) => eprintln!(
                "grade: line {} of the grading container's output: {why}",
                i + 1
            ),
        }
    }
    if let Some(file) = &options.gradescope {
        write_gradescope(file, &results, &points)?;
    }
    Ok(results)
}

/// The points per check (`exercises/points.txt`; every check 1 point without it).
fn points(root: &Path) -> anyhow::Result<demo_runner::grading::Points> {
    match std::fs::read_to_string(root.join("exercises/points.txt")) {
        Ok(text) => demo_runner::grading::Points::parse(&text).map_err(anyhow::Error::msg),
        Err(_) => Ok(demo_runner::grading::Points::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lab-grade-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn put(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn names_are_folder_names() {
        assert_eq!(student_name("Ada Lovelace"), "Ada-Lovelace");
        assert_eq!(student_name("../../etc"), "etc");
        assert_eq!(student_name("..."), "student");
        assert_eq!(student_name("bob_2.v1"), "bob_2.v1");
    }

    // A lab folder: only the changed exercise file is taken; a Cargo.toml and
    // build.rs the student added or changed are listed as ignored, never used.
    #[test]
    fn a_lab_folder_gives_its_changed_files_only() {
        let root = workspace_root();
        let dir = scratch("lab");
        let job = Exercise::DuplicateDelivery.info().student_file;
        let retry = Exercise::RetryStorm.info().student_file;
        put(&dir, job, "// mine\n");
        put(
            &dir,
            retry,
            &std::fs::read_to_string(root.join(retry)).unwrap(),
        );
        put(&dir, "worker/build.rs", "fn main() {}\n");
        put(&dir, "Cargo.toml", "[workspace]\n");
        put(&dir, "target/debug/junk", "x");
        let tasks = tasks_of(&dir, &[], Some("ada"), &root).unwrap();
        assert_eq!(
            tasks.len(),
            1,
            "the unchanged exercise 5 file is not graded"
        );
        let task = &tasks[0];
        assert_eq!(task.exercise, Exercise::DuplicateDelivery);
        assert_eq!(task.content, b"// mine\n");
        assert_eq!(task.submission.ignored, ["Cargo.toml", "worker/build.rs"]);
        // --exercise 5 grades the unchanged file; a missing one is an error.
        let tasks = tasks_of(&dir, &[Exercise::RetryStorm], Some("ada"), &root).unwrap();
        assert_eq!(tasks[0].exercise, Exercise::RetryStorm);
        let err = tasks_of(&dir, &[Exercise::NewJobId], Some("ada"), &root).unwrap_err();
        assert!(err.contains("no worker/src/order_email.rs"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    // An archive of the lab (`lab-main/` inside the student's folder), which also
    // holds the lab's other files of the same names (lab-schema/src/order_email.rs):
    // the lab is found one folder down. A symbolic link is never followed: a
    // `worker` folder linking to another student's is not this student's file.
    #[test]
    fn a_lab_one_folder_down_is_found_and_links_are_not_followed() {
        let root = workspace_root();
        let dir = scratch("nested");
        put(&dir, "lab-main/worker/src/job.rs", "// mine\n");
        put(
            &dir,
            "lab-main/lab-schema/src/order_email.rs",
            "// the lab's\n",
        );
        put(
            &dir,
            "lab-main/worker/src/order_email.rs",
            &std::fs::read_to_string(root.join("worker/src/order_email.rs")).unwrap(),
        );
        let tasks = tasks_of(&dir, &[Exercise::DuplicateDelivery], Some("ada"), &root).unwrap();
        assert_eq!(tasks[0].submission.taken_from, "lab-main/worker/src/job.rs");
        assert_eq!(tasks[0].content, b"// mine\n");
        let other = scratch("other");
        put(&other, "worker/src/job.rs", "// bob's\n");
        let linked = scratch("linked");
        std::os::unix::fs::symlink(other.join("worker"), linked.join("worker")).unwrap();
        let err = tasks_of(&linked, &[Exercise::DuplicateDelivery], None, &root).unwrap_err();
        assert!(err.contains("no job.rs in it"), "{err}");
        for d in [dir, other, linked] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    // A folder of files (a Gradescope submission) and a file alone.
    #[test]
    fn files_are_matched_by_name() {
        let root = workspace_root();
        let dir = scratch("flat");
        put(&dir, "sub/job.rs", "// mine\n");
        put(&dir, "notes.txt", "why");
        let tasks = tasks_of(&dir, &[], None, &root).unwrap();
        assert_eq!(tasks[0].exercise, Exercise::DuplicateDelivery);
        assert_eq!(tasks[0].submission.taken_from, "sub/job.rs");
        assert_eq!(tasks[0].submission.ignored, ["notes.txt"]);
        assert!(tasks[0].student.starts_with("lab-grade-unit-flat"));
        put(&dir, "job.rs", "// another\n");
        let err = tasks_of(&dir, &[], None, &root).unwrap_err();
        assert!(err.contains("2 files are named job.rs"), "{err}");
        let tasks = tasks_of(&dir.join("job.rs"), &[], Some("bo b"), &root).unwrap();
        assert_eq!(
            (tasks[0].student.as_str(), tasks[0].content.as_slice()),
            ("bo-b", &b"// another\n"[..])
        );
        let err = tasks_of(&dir.join("notes.txt"), &[], None, &root).unwrap_err();
        assert!(
            err.contains("not an exercise file (they are job.rs"),
            "{err}"
        );
        let empty = scratch("empty");
        let err = tasks_of(&empty, &[], None, &root).unwrap_err();
        assert!(err.contains("no exercise file in it"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&empty);
    }

    #[test]
    fn the_first_error_names_its_place() {
        let stderr = "warning: unused\nerror[E0425]: cannot find value `key` in this scope\n  --> worker/src/job.rs:42:9\n   |\n";
        assert_eq!(
            first_error(stderr),
            "error[E0425]: cannot find value `key` in this scope (worker/src/job.rs:42:9)"
        );
        assert_eq!(first_error("something odd\n\n"), "something odd");
    }

    // The sandbox's second step: the lines a grading container printed are
    // sealed here and written with their JUnit and Gradescope files; a line
    // that is not a result (noise) is skipped, never fatal.
    #[test]
    fn imported_results_are_sealed_and_written() {
        let dir = scratch("import");
        let task = Task {
            student: "ada".to_string(),
            exercise: Exercise::DuplicateDelivery,
            submission: Submission::default(),
            content: b"// mine".to_vec(),
        };
        let result = not_graded(
            &task,
            Outcome::TimedOut,
            "too long".to_string(),
            Instant::now(),
        );
        assert_eq!(result.seal, None);
        let lines = format!("{}\nnot json\n\n", serde_json::to_string(&result).unwrap());
        let options = Options {
            out: dir.join("out"),
            key_file: dir.join("key"),
            jobs: 1,
            build_limit: Duration::from_secs(1),
            check_limit: Duration::from_secs(1),
            gradescope: Some(dir.join("results.json")),
            summary: None,
            to_stdout: false,
        };
        let imported = import(&lines, &options).unwrap();
        assert_eq!(imported.len(), 1);
        let text = std::fs::read_to_string(dir.join("out/ada/exercise-1.json")).unwrap();
        let written = lab_schema::grade::parse(&text).unwrap();
        assert!(written.seal_holds(&std::fs::read(dir.join("key")).unwrap()));
        assert_eq!(written.outcome, Outcome::TimedOut);
        assert!(dir.join("out/ada/exercise-1.junit.xml").exists());
        assert!(dir.join("results.json").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_seal_key_is_made_once_and_private() {
        let dir = scratch("key");
        let path = dir.join("state/grade-key");
        let key = seal_key(&path).unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(seal_key(&path).unwrap(), key);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
