//! `./lab grade SUBMISSION... [options]`: grades students' exercise files on
//! this machine and writes one result file per submission and exercise (see
//! `lab-tests/src/grade.rs` and `docs/grading.md`). Students need not edit this file.

use std::path::PathBuf;
use std::time::Duration;

use lab_schema::Exercise;
use lab_tests::grade::{Options, Task, grade_all, tasks_of};

const USAGE: &str =
    "usage: ./lab grade SUBMISSION... [--exercise N]... [--student NAME] [--out DIR]
                  [--jobs N] [--build-limit SECS] [--check-limit SECS] [--gradescope FILE]
  SUBMISSION: a student's exercise file (job.rs), a folder of them, or a folder or git
  repository of the lab (only the exercise files are taken from it)";

struct Args {
    submissions: Vec<PathBuf>,
    prepare: bool,
    /// `--import FILE`: seal and write the results a grading container printed.
    import: Option<PathBuf>,
    exercises: Vec<Exercise>,
    student: Option<String>,
    options: Options,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        submissions: Vec::new(),
        prepare: false,
        import: None,
        exercises: Vec::new(),
        student: None,
        options: Options {
            out: PathBuf::from("grades"),
            key_file: PathBuf::from(".lab/grade-key"),
            jobs: 2,
            build_limit: Duration::from_secs(300),
            check_limit: Duration::from_secs(300),
            gradescope: None,
            summary: std::env::var_os("GITHUB_STEP_SUMMARY").map(PathBuf::from),
            to_stdout: false,
        },
    };
    let number = |flag: &str, value: Option<String>, max: u64| -> Result<u64, String> {
        value
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("{flag} needs a number from 1 to {max}\n{USAGE}"))
    };
    let value = |flag: &str, value: Option<String>| {
        value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exercise" => {
                let n = number("--exercise", args.next(), 99)?;
                let exercise = lab_tests::bench::exercise_numbered(n as u32)?;
                if !parsed.exercises.contains(&exercise) {
                    parsed.exercises.push(exercise);
                }
            }
            "--student" => parsed.student = Some(value("--student", args.next())?),
            "--out" => parsed.options.out = PathBuf::from(value("--out", args.next())?),
            "--key" => parsed.options.key_file = PathBuf::from(value("--key", args.next())?),
            "--jobs" => parsed.options.jobs = number("--jobs", args.next(), 16)? as usize,
            "--build-limit" => {
                parsed.options.build_limit =
                    Duration::from_secs(number("--build-limit", args.next(), 3600)?)
            }
            "--check-limit" => {
                parsed.options.check_limit =
                    Duration::from_secs(number("--check-limit", args.next(), 3600)?)
            }
            "--gradescope" => {
                parsed.options.gradescope = Some(PathBuf::from(value("--gradescope", args.next())?))
            }
            "--prepare" => parsed.prepare = true,
            "--results-stdout" => parsed.options.to_stdout = true,
            "--import" => parsed.import = Some(PathBuf::from(value("--import", args.next())?)),
            "-h" | "--help" => return Err(USAGE.to_string()),
            flag if flag.starts_with("--") => {
                return Err(format!("unknown option {flag:?}\n{USAGE}"));
            }
            path => parsed.submissions.push(PathBuf::from(path)),
        }
    }
    if parsed.prepare && !parsed.submissions.is_empty() {
        return Err(format!("--prepare takes no submission\n{USAGE}"));
    }
    if parsed.submissions.is_empty() && !parsed.prepare && parsed.import.is_none() {
        return Err(format!("no submission given\n{USAGE}"));
    }
    if parsed.student.is_some() && parsed.submissions.len() > 1 {
        return Err(format!(
            "--student names one submission; {} were given (each is named after its folder or repository)",
            parsed.submissions.len()
        ));
    }
    Ok(parsed)
}

fn main() -> std::process::ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.prepare {
        return match lab_tests::grade::prepare() {
            Ok(secs) => {
                eprintln!(
                    "grade: the starter is built ({secs:.0} s): a submission now compiles its own crate only"
                );
                std::process::ExitCode::SUCCESS
            }
            Err(why) => {
                eprintln!("grade: the starter does not build: {why}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(file) = &args.import {
        let imported = std::fs::read_to_string(file)
            .map_err(anyhow::Error::from)
            .and_then(|lines| lab_tests::grade::import(&lines, &args.options));
        return match imported {
            Ok(results) if results.iter().all(|r| r.passed) => std::process::ExitCode::SUCCESS,
            Ok(_) => std::process::ExitCode::FAILURE,
            Err(err) => {
                eprintln!("grade: error: {err:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let root = lab_testkit::workspace_root();
    // Every submission is read before anything is built: a bad one is named
    // now, and the others are still graded.
    let mut tasks: Vec<Task> = Vec::new();
    let mut unreadable = 0u64;
    for path in &args.submissions {
        match tasks_of(path, &args.exercises, args.student.as_deref(), &root) {
            Ok(found) => {
                for task in found {
                    if tasks
                        .iter()
                        .any(|t| t.student == task.student && t.exercise == task.exercise)
                    {
                        eprintln!(
                            "grade: {}: {} is already graded on exercise {} by another submission of this run: name it with --student, or grade it alone",
                            path.display(),
                            task.student,
                            task.exercise.number()
                        );
                        unreadable += 1;
                    } else {
                        tasks.push(task);
                    }
                }
            }
            Err(why) => {
                eprintln!("grade: not graded: {why}");
                unreadable += 1;
            }
        }
    }
    if tasks.is_empty() {
        return std::process::ExitCode::from(2);
    }
    for task in &tasks {
        if !task.submission.ignored.is_empty() {
            eprintln!(
                "grade: {}: took {} only; ignored {}{}",
                task.student,
                task.submission.taken_from,
                task.submission.ignored.join(", "),
                match task.submission.ignored_more {
                    0 => String::new(),
                    n => format!(" and {n} more"),
                }
            );
        }
    }
    // A stack that panics (the student's API cannot start) becomes that
    // student's result, with the panic's message: one line on the terminal,
    // no backtrace (any other panic says where it happened, too).
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        let at = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("grade: {}{at}", message.lines().next().unwrap_or(""));
    }));
    // The student's programs in process groups of their own, killed with what
    // they started; Ctrl-C stops them too before the grader exits.
    lab_tests::isolate_student_programs();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            lab_tests::kill_student_programs();
            eprintln!("grade: interrupted: the results written so far are kept");
            std::process::exit(130);
        }
    });
    match runtime.block_on(grade_all(tasks, &args.options)) {
        Ok(results) if unreadable > 0 => {
            let _ = results;
            eprintln!(
                "grade: {} not graded (above)",
                lab_schema::summary::plural(unreadable, "submission")
            );
            std::process::ExitCode::from(2)
        }
        Ok(results) if results.iter().all(|r| r.passed) => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::FAILURE,
        Err(err) => {
            eprintln!("grade: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
