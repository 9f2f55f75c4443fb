//! `./lab bench grade [--exercise N]... [--students N] [--jobs N]`: how long
//! `./lab grade` takes for a class: a synthetic class of N students (default
//! 30) per exercise, made from the exercise's reference solution, correct
//! variants, wrong fixes, compile errors and starter in turn, each file made
//! distinct (so each is built, as thirty students' files are), graded as
//! `./lab grade` grades. Prints the total and the time per submission. Students
//! need not edit this file.

use std::time::Instant;

use lab_schema::Exercise;
use lab_schema::grade::Submission;
use lab_testkit::workspace_root;
use lab_tests::grade::{Options, Task, grade_all, patched_student_file};

const USAGE: &str = "usage: bench-grade [--exercise N]... [--students N] [--jobs N]";

struct Args {
    exercises: Vec<Exercise>,
    students: usize,
    jobs: usize,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        exercises: Vec::new(),
        students: 30,
        jobs: 2,
    };
    let number = |flag: &str, value: Option<String>| -> Result<u32, String> {
        value
            .as_deref()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| format!("{flag} needs a number from 1 to 200\n{USAGE}"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exercise" => {
                let n = number("--exercise", args.next())?;
                parsed
                    .exercises
                    .push(lab_tests::bench::exercise_numbered(n)?);
            }
            "--students" => parsed.students = number("--students", args.next())? as usize,
            "--jobs" => parsed.jobs = number("--jobs", args.next())? as usize,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if parsed.exercises.is_empty() {
        parsed.exercises = vec![Exercise::ALL[0]];
    }
    Ok(parsed)
}

/// The exercise's patches a class is made of: the reference, then its
/// variants, wrong fixes and compile errors (`None`: the starter).
fn sources(exercise: Exercise) -> Vec<(String, Option<String>)> {
    let mut all = vec![("reference".to_string(), Some(exercise.solution_patch()))];
    for (folder, prefix) in [
        ("variants", "right-"),
        ("fixtures", "wrong-"),
        ("fixtures", "compile-"),
    ] {
        let dir = workspace_root().join(exercise.folder()).join(folder);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(prefix) && n.ends_with(".patch"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        for name in names {
            let stem = name.trim_end_matches(".patch").to_string();
            all.push((stem, Some(format!("{}/{folder}/{name}", exercise.folder()))));
        }
    }
    all.push(("starter".to_string(), None));
    all
}

fn main() -> std::process::ExitCode {
    lab_tests::bench::bench_main(
        "bench-grade",
        parse(std::env::args().skip(1)),
        |args| async move {
            let out = lab_tests::scratch_dir("bench-grade");
            let mut lines = Vec::new();
            for &exercise in &args.exercises {
                let sources = sources(exercise);
                let file = exercise.info().student_file;
                let tasks: Vec<Task> = (0..args.students)
                    .map(|i| {
                        let (name, patch) = &sources[i % sources.len()];
                        let mut content = match patch {
                            Some(patch) => patched_student_file(exercise, patch),
                            None => {
                                std::fs::read(workspace_root().join(file)).expect("the starter")
                            }
                        };
                        // Thirty students never hand in the same bytes: each file is built.
                        content.extend(format!("\n// student {i:02}\n").as_bytes());
                        Task {
                            student: format!("s{i:02}-{name}"),
                            exercise,
                            submission: Submission {
                                path: name.clone(),
                                file: file.to_string(),
                                taken_from: file.to_string(),
                                ..Submission::default()
                            },
                            content,
                        }
                    })
                    .collect();
                let options = Options {
                    out: out.join(exercise.info().slug),
                    key_file: out.join("grade-key"),
                    jobs: args.jobs,
                    build_limit: std::time::Duration::from_secs(600),
                    check_limit: std::time::Duration::from_secs(600),
                    gradescope: None,
                    summary: None,
                    to_stdout: false,
                };
                let started = Instant::now();
                let results = grade_all(tasks, &options).await?;
                let secs = started.elapsed().as_secs_f64();
                let passed = results.iter().filter(|r| r.passed).count();
                let slowest = results.iter().map(|r| r.duration_ms).max().unwrap_or(0);
                lines.push(format!(
                "exercise {}: {} submissions graded in {:.0} s ({:.1} s per submission; the slowest {:.1} s, build and checks); {passed} passed; --jobs {}",
                exercise.number(),
                results.len(),
                secs,
                secs / results.len() as f64,
                slowest as f64 / 1000.0,
                args.jobs,
            ));
            }
            for line in lines {
                println!("{line}");
            }
            let _ = std::fs::remove_dir_all(&out);
            Ok(())
        },
    )
}
