//! Which exercise code the running workers (or the API, whose file exercise 4
//! is) were built from, said with every result: a fingerprint of the student
//! file (`worker_code=job.rs#3fa9c1`), a line for a human, and a warning when
//! the workers disagree, when none runs, or when the file on disk is newer than
//! what runs (a rebuild that failed, workers not restarted). Students need not
//! edit this file.
//!
//! The file on disk is read from `LAB_SOURCE_DIR` (the repository: `./lab` sets
//! it, and compose mounts the repository there, read-only, in the demo container).

use std::path::PathBuf;

use lab_schema::Exercise;
use lab_schema::code::{Code, RunningWorker, label};
use lab_schema::exercise::Component;
use lab_schema::summary::plural;

use crate::client::Api;

/// Where `./lab` and compose say the repository is.
const SOURCE_DIR_ENV: &str = "LAB_SOURCE_DIR";

/// The repository, as `./lab` and compose say (`None`: not said).
pub fn source_dir() -> Option<PathBuf> {
    std::env::var_os(SOURCE_DIR_ENV).map(PathBuf::from)
}

/// What the running workers say of the code of one exercise.
#[derive(Debug, Clone, Default)]
pub struct CodeReport {
    /// `job.rs#3fa9c1` when every running worker runs the same code.
    pub label: Option<String>,
    /// `# ...` lines for a human: who runs what, and any warning.
    pub lines: Vec<String>,
}

/// What runs an exercise's code: its name and how to rebuild and restart it, on both paths.
struct Runner {
    noun: &'static str,
    /// Who was built from another version, when all of them were.
    all_stale: &'static str,
    rebuild: &'static str,
}

const WORKERS: Runner = Runner {
    noun: "worker",
    all_stale: "the running workers were",
    rebuild: "docker compose up --build -d (natively ./lab restart worker), and read the compiler's errors if it fails",
};

const API: Runner = Runner {
    noun: "API",
    all_stale: "the running API was",
    rebuild: "docker compose up --build -d api (natively ./lab restart api), and read the compiler's errors if it fails",
};

/// How to rebuild and restart what runs `exercise`'s code, on both paths.
/// The compiler's warnings about `exercise`'s student file, as `./lab` saved
/// them at its last build (`LAB_WARNINGS_FILE`; none when it is not set, as
/// under compose).
pub fn compiler_warnings(exercise: Exercise) -> Vec<String> {
    let Some(path) = std::env::var_os("LAB_WARNINGS_FILE") else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    warnings_about(&text, exercise.info().student_file)
}

/// The warnings about the students' files in cargo's human output: each
/// `warning: <what>` whose `--> <file>:<line>:<col>` is a student file, as
/// `<file>:<line>:<col>: warning: <what>`.
pub fn student_warnings(cargo_output: &str) -> Vec<String> {
    let files: Vec<&str> = Exercise::ALL
        .iter()
        .map(|e| e.info().student_file)
        .collect();
    let mut what: Option<&str> = None;
    let mut out = Vec::new();
    for line in cargo_output.lines() {
        if line.starts_with("warning: ") {
            what = Some(line);
        } else if let Some(at) = line.trim_start().strip_prefix("--> ") {
            let file = at.split(':').next().unwrap_or("");
            if let Some(warning) = what.take()
                && files.contains(&file)
            {
                out.push(format!("{at}: {warning}"));
            }
        } else if line.starts_with("error") {
            what = None;
        }
    }
    out
}

/// The lines of `text` (saved by [`student_warnings`]) that warn about `file`.
fn warnings_about(text: &str, file: &str) -> Vec<String> {
    let prefix = format!("{file}:");
    text.lines()
        .filter(|line| line.starts_with(&prefix) && line.contains(": warning"))
        .map(str::to_string)
        .collect()
}

pub fn rebuild_hint(exercise: Exercise) -> &'static str {
    runner(exercise).rebuild
}

fn runner(exercise: Exercise) -> Runner {
    match exercise.info().component {
        Component::Worker => WORKERS,
        Component::Api => API,
    }
}

/// Reads the running workers and compares their code with the file on disk.
pub async fn report(api: &Api, exercise: Exercise) -> CodeReport {
    let source_dir = source_dir();
    match api.workers().await {
        Ok(running) => judge(
            exercise,
            &match exercise.info().component {
                Component::Worker => running.workers,
                Component::Api => running.api.into_iter().collect(),
            },
            source_dir.map(|dir| Code::of_sources(&dir)).as_ref(),
            lab_schema::now_ms(),
        ),
        Err(err) => CodeReport {
            label: None,
            lines: vec![format!(
                "# could not read which code the workers run: {err:#}"
            )],
        },
    }
}

/// One `WARNING` line for each running process (the workers, the API) whose
/// build of a student file differs from the file on disk: what `./lab status`
/// says. Errors when the API cannot be asked or `LAB_SOURCE_DIR` is not set.
pub async fn stale(api: &Api) -> anyhow::Result<Vec<String>> {
    let Some(dir) = std::env::var_os(SOURCE_DIR_ENV).map(PathBuf::from) else {
        anyhow::bail!("{SOURCE_DIR_ENV} is not set: where is the repository?");
    };
    let running = api.workers().await?;
    Ok(stale_lines(&running, &Code::of_sources(&dir)))
}

/// The student files (paths from the repository's root) that the built
/// `binaries` (each answers `--print-code`: `<file> #<fingerprint>` lines) were
/// built from another version of than the one on disk: cargo judges freshness
/// by file times, and a source older than its last build (an archive
/// extracted, `cp -p`, a target folder shared by two copies) is taken as built.
/// With `touch`, each file named is also marked modified now (for the next build).
pub fn built_from_other_files(binaries: &[PathBuf], touch: bool) -> anyhow::Result<Vec<String>> {
    let Some(dir) = std::env::var_os(SOURCE_DIR_ENV).map(PathBuf::from) else {
        anyhow::bail!("{SOURCE_DIR_ENV} is not set: where is the repository?");
    };
    let on_disk = Code::of_sources(&dir);
    let mut printed = String::new();
    for binary in binaries {
        let out = std::process::Command::new(binary)
            .arg("--print-code")
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", binary.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "{} --print-code failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        printed.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    let files = other_files(&printed, &on_disk);
    if touch {
        for file in &files {
            let path = dir.join(file);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()))
                .map_err(|e| anyhow::anyhow!("cannot touch {}: {e}", path.display()))?;
        }
    }
    Ok(files)
}

/// The files of `printed` (`<file> #<fingerprint>` lines) whose fingerprint on disk differs.
fn other_files(printed: &str, on_disk: &Code) -> Vec<String> {
    printed
        .lines()
        .filter_map(|line| line.split_once(" #"))
        .filter(|(file, built)| on_disk.of(file).is_some_and(|disk| disk != built.trim()))
        .map(|(file, _)| file.to_string())
        .collect()
}

fn stale_lines(running: &lab_schema::code::RunningWorkers, on_disk: &Code) -> Vec<String> {
    let mut lines = Vec::new();
    for &exercise in Exercise::ALL {
        let file = exercise.info().student_file;
        let Some(disk) = on_disk.of(file) else {
            continue;
        };
        let processes: Vec<&RunningWorker> = match exercise.info().component {
            Component::Worker => running.workers.iter().collect(),
            Component::Api => running.api.iter().collect(),
        };
        for process in processes {
            match process.fingerprint_of(file) {
                Some(ran) if ran != disk => lines.push(format!(
                    "WARNING: {} runs {file} #{ran}, but the file on disk is #{disk}: it was built \
                     from another version of your file (./lab check shows whether the file builds; {})",
                    process.name,
                    rebuild_hint(exercise)
                )),
                _ => {}
            }
        }
    }
    lines
}

fn judge(
    exercise: Exercise,
    workers: &[RunningWorker],
    on_disk: Option<&Code>,
    now_ms: u64,
) -> CodeReport {
    let file = exercise.info().student_file;
    let runner = runner(exercise);
    let (noun, rebuild) = (runner.noun, runner.rebuild);
    if workers.is_empty() {
        return CodeReport {
            label: None,
            lines: vec![format!(
                "# WARNING: no {noun} is running: nothing processes the jobs (docker compose up -d, natively ./lab up)"
            )],
        };
    }
    let fingerprint = |w: &RunningWorker| w.fingerprint_of(file).unwrap_or("?").to_string();
    let mut kinds: Vec<String> = workers.iter().map(fingerprint).collect();
    kinds.sort();
    kinds.dedup();
    let mut lines = Vec::new();
    let label_of = |hash: &str| label(exercise, hash).replace('#', " #");
    let agreed = (kinds.len() == 1).then(|| kinds[0].clone());
    match &agreed {
        Some(hash) => {
            let newest = workers.iter().map(|w| w.started_ms).max().unwrap_or(now_ms);
            lines.push(format!(
                "# {} running {}, started {}",
                plural(workers.len() as u64, noun),
                label_of(hash),
                ago(now_ms.saturating_sub(newest))
            ));
        }
        None => {
            let each: Vec<String> = workers
                .iter()
                .map(|w| {
                    format!(
                        "{} runs {} (started {})",
                        w.name,
                        label_of(&fingerprint(w)),
                        ago(now_ms.saturating_sub(w.started_ms))
                    )
                })
                .collect();
            lines.push(format!(
                "# WARNING: the {noun}s run different code: {}. Restart them all: {rebuild}",
                each.join(", ")
            ));
        }
    }
    if let Some(disk) = on_disk.and_then(|code| code.of(file)) {
        let stale: Vec<&str> = workers
            .iter()
            .filter(|w| w.fingerprint_of(file) != Some(disk))
            .map(|w| w.name.as_str())
            .collect();
        if !stale.is_empty() {
            let who = if stale.len() == workers.len() {
                runner.all_stale.to_string()
            } else {
                format!(
                    "{} {}",
                    stale.join(", "),
                    if stale.len() == 1 { "was" } else { "were" }
                )
            };
            lines.push(format!(
                "# WARNING: {file} on disk is #{disk}, but {who} built from another version: these numbers are NOT from your file. Did the last build fail? Rebuild: {rebuild}"
            ));
        }
    }
    CodeReport {
        label: agreed.map(|hash| label(exercise, &hash)),
        lines,
    }
}

/// `35 s ago`, `4 min ago`, `2 h ago`.
fn ago(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..=119 => format!("{secs} s ago"),
        120..=7199 => format!("{} min ago", secs / 60),
        _ => format!("{} h ago", secs / 3600),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn worker(name: &str, hash: &str, started_ms: u64) -> RunningWorker {
        RunningWorker {
            name: name.to_string(),
            started_ms,
            heartbeat_age_ms: 0,
            code: BTreeMap::from([("worker/src/job.rs".to_string(), hash.to_string())]),
        }
    }

    #[test]
    fn cargo_warnings_about_student_files_are_read_from_its_human_output() {
        let cargo = "warning: unused implementer of `Future` that must be used\n  \
                     --> worker/src/job.rs:40:5\n   |\n40 |     ctx.apply_side_effect(job);\n\n\
                     warning: unused import: `std::fmt`\n --> worker/src/effects.rs:3:5\n\n\
                     warning: `worker` (lib) generated 2 warnings\n";
        assert_eq!(
            student_warnings(cargo),
            ["worker/src/job.rs:40:5: warning: unused implementer of `Future` that must be used"]
        );
    }

    #[test]
    fn only_the_exercise_files_warnings_are_its_clues() {
        let text = "worker/src/job.rs:40:9: warning: unused `Result` that must be used\n\
                    worker/src/crash_window.rs:3:5: warning: unused import\n\
                    worker/src/job.rs:41:1: error: not a warning\n";
        assert_eq!(
            warnings_about(text, "worker/src/job.rs"),
            ["worker/src/job.rs:40:9: warning: unused `Result` that must be used"]
        );
    }

    #[test]
    fn agreeing_workers_give_one_line_and_a_label() {
        let workers = [
            worker("worker-1", "3fa9c1", 0),
            worker("worker-2", "3fa9c1", 5_000),
        ];
        let report = judge(Exercise::DuplicateDelivery, &workers, None, 40_000);
        assert_eq!(report.label.as_deref(), Some("job.rs#3fa9c1"));
        assert_eq!(
            report.lines,
            ["# 2 workers running job.rs #3fa9c1, started 35 s ago"]
        );
    }

    #[test]
    fn disagreeing_stale_and_missing_workers_are_warned_about() {
        let workers = [
            worker("worker-1", "3fa9c1", 0),
            worker("worker-2", "77aa01", 0),
        ];
        let report = judge(Exercise::DuplicateDelivery, &workers, None, 300_000);
        assert_eq!(report.label, None);
        assert!(report.lines[0].starts_with("# WARNING: the workers run different code: worker-1 runs job.rs #3fa9c1 (started 5 min ago), worker-2 runs job.rs #77aa01"), "{:?}", report.lines);

        let disk = Code {
            files: vec![("worker/src/job.rs".to_string(), "a1b2c3".to_string())],
        };
        let same = [worker("worker-1", "3fa9c1", 0)];
        let report = judge(Exercise::DuplicateDelivery, &same, Some(&disk), 1_000);
        assert!(report.lines[1].starts_with("# WARNING: worker/src/job.rs on disk is #a1b2c3, but the running workers were built from another version"), "{:?}", report.lines);

        let none = judge(Exercise::DuplicateDelivery, &[], Some(&disk), 0);
        assert!(none.lines[0].contains("no worker is running"));
    }

    // What `--print-code` printed, against the files on disk: only the files
    // built from another version are named (`./lab` touches and rebuilds them).
    #[test]
    fn a_build_of_another_version_names_the_files_to_rebuild() {
        let on_disk = Code {
            files: vec![
                ("worker/src/job.rs".to_string(), "aaaaaa".to_string()),
                (
                    "worker/src/crash_window.rs".to_string(),
                    "bbbbbb".to_string(),
                ),
            ],
        };
        let printed = "worker/src/job.rs #aaaaaa\nworker/src/crash_window.rs #0f0f0f\nworker/src/gone.rs #123456\n";
        assert_eq!(
            other_files(printed, &on_disk),
            ["worker/src/crash_window.rs"]
        );
        assert!(other_files("worker/src/job.rs #aaaaaa\n", &on_disk).is_empty());
    }

    #[test]
    fn stale_names_each_process_that_runs_another_version_of_a_student_file() {
        let on_disk = Code {
            files: vec![
                ("worker/src/job.rs".to_string(), "aaaaaa".to_string()),
                ("api/src/idempotency.rs".to_string(), "cccccc".to_string()),
            ],
        };
        let mut api = worker("api", "x", 0);
        api.code = BTreeMap::from([("api/src/idempotency.rs".to_string(), "dddddd".to_string())]);
        let running = lab_schema::code::RunningWorkers {
            workers: vec![
                worker("worker-1", "aaaaaa", 0),
                worker("worker-2", "bbbbbb", 0),
            ],
            api: Some(api),
        };
        let lines = stale_lines(&running, &on_disk);
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[0].starts_with(
            "WARNING: worker-2 runs worker/src/job.rs #bbbbbb, but the file on disk is #aaaaaa"
        ));
        assert!(lines[0].contains("./lab restart worker"));
        assert!(lines[1].starts_with(
            "WARNING: api runs api/src/idempotency.rs #dddddd, but the file on disk is #cccccc"
        ));
        assert!(lines[1].contains("./lab restart api"));
        // All agree: nothing to say.
        let agreed = lab_schema::code::RunningWorkers {
            workers: vec![worker("worker-1", "aaaaaa", 0)],
            api: None,
        };
        assert!(stale_lines(&agreed, &on_disk).is_empty());
    }
}
