//! Grading results in the formats graders already read, from the lab's own
//! result files (`lab_schema::grade`): JUnit XML (GitHub Actions test
//! reporters, GitLab, Jenkins) and Gradescope's autograder `results.json`, with
//! points per check from `exercises/points.txt`. `./lab grade` writes them;
//! `docs/grading.md` documents them. Students need not edit this file.

use std::fmt::Write as _;

use lab_schema::Exercise;
use lab_schema::grade::{CheckResult, GradeResult, Outcome};
use serde_json::{Value, json};

use crate::registry::grader;

/// The checks and the verdict of `verify --json`'s report.
pub fn checks_of_verify_json(report: &Value) -> anyhow::Result<(Vec<CheckResult>, String)> {
    let checks = report["checks"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("verify's report has no checks"))?;
    let text = |v: &Value| v.as_str().map(str::to_string);
    let checks = checks
        .iter()
        .map(|c| CheckResult {
            name: text(&c["name"]).unwrap_or_default(),
            passed: c["passed"] == true,
            numbers: text(&c["numbers"]).unwrap_or_default(),
            diagnosis: text(&c["diagnosis"]),
            meaning: text(&c["meaning"]),
            trace: c["trace"]
                .as_array()
                .map(|lines| lines.iter().filter_map(text).collect())
                .unwrap_or_default(),
        })
        .collect();
    Ok((checks, text(&report["verdict"]).unwrap_or_default()))
}

/// The checks an exercise's grader runs, each failed for `reason`: what a
/// result that was not graded (no build, no time left) lists.
pub fn checks_not_run(exercise: Exercise, outcome: Outcome, reason: &str) -> Vec<CheckResult> {
    grader(exercise)
        .checks
        .iter()
        .map(|name| CheckResult {
            name: name.to_string(),
            passed: false,
            numbers: format!("not run: {}", outcome.label()),
            diagnosis: None,
            meaning: Some(reason.to_string()),
            trace: Vec::new(),
        })
        .collect()
}

/// Points per check: `exercises/points.txt`, lines `<exercise> <check> <points>`.
#[derive(Debug, Clone, Default)]
pub struct Points {
    rows: Vec<(u8, String, f64)>,
}

/// A check that `points.txt` does not list is worth this many points.
pub const DEFAULT_POINTS: f64 = 1.0;

impl Points {
    /// Reads the file's text; an error names the line and what is wrong with it.
    pub fn parse(text: &str) -> Result<Points, String> {
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: String| format!("points file, line {}: {why}: {line:?}", i + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [number, check, points] = fields[..] else {
                return Err(bad("expected `<exercise> <check> <points>`".into()));
            };
            let exercise = number
                .parse::<u8>()
                .ok()
                .and_then(Exercise::from_number)
                .ok_or_else(|| bad(format!("there is no exercise {number}")))?;
            if !grader(exercise).checks.contains(&check) {
                return Err(bad(format!(
                    "exercise {number} has no check {check:?} (its checks: {})",
                    grader(exercise).checks.join(", ")
                )));
            }
            let points = points
                .parse::<f64>()
                .ok()
                .filter(|p| p.is_finite() && *p >= 0.0)
                .ok_or_else(|| bad("points must be a number, 0 or more".into()))?;
            rows.push((exercise.number(), check.to_string(), points));
        }
        Ok(Points { rows })
    }

    /// The points of one check.
    pub fn of(&self, exercise: u8, check: &str) -> f64 {
        self.rows
            .iter()
            .rev()
            .find(|(e, c, _)| *e == exercise && c == check)
            .map_or(DEFAULT_POINTS, |(_, _, p)| *p)
    }
}

/// What a failed check says to the student: the numbers, the diagnosis, the trace.
fn failure_text(check: &CheckResult) -> String {
    let mut text = check.numbers.clone();
    if let Some(meaning) = &check.meaning {
        text.push_str("\n=> ");
        text.push_str(meaning);
    }
    if !check.trace.is_empty() {
        text.push_str("\nwhat your code did (from the trace):");
        for line in &check.trace {
            text.push_str("\n    ");
            text.push_str(line);
        }
    }
    text
}

/// Gradescope's autograder `results.json` for one student's results: one test
/// per check (`exercise N: check`), scored from `points`.
pub fn gradescope(results: &[GradeResult], points: &Points) -> Value {
    let mut tests = Vec::new();
    let mut score = 0.0;
    let mut output = Vec::new();
    for result in results {
        output.push(format!(
            "exercise {} ({}): {}",
            result.exercise,
            result.submission.file,
            if result.outcome == Outcome::Graded {
                result.verdict.clone()
            } else {
                format!(
                    "{}: {}",
                    result.outcome.label(),
                    result.reason.as_deref().unwrap_or("")
                )
            }
        ));
        for check in &result.checks {
            let max = points.of(result.exercise, &check.name);
            let got = if check.passed { max } else { 0.0 };
            score += got;
            let text = if check.passed {
                check.numbers.clone()
            } else {
                failure_text(check)
            };
            tests.push(json!({
                "name": format!("exercise {}: {}", result.exercise, check.name),
                "score": got,
                "max_score": max,
                "status": if check.passed { "passed" } else { "failed" },
                "output": text,
                "visibility": "visible",
            }));
        }
    }
    for result in results.iter().filter(|r| !r.log.is_empty()) {
        output.push(format!(
            "what your programs printed (exercise {}, the last lines that are not routine logging):",
            result.exercise
        ));
        output.extend(result.log.iter().map(|l| format!("    {l}")));
    }
    json!({
        "score": score,
        "output": output.join("\n"),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    })
}

/// JUnit XML for results (one `<testsuite>` per result, one `<testcase>` per
/// check): a failed check is a `<failure>` whose type is its diagnosis code; a
/// result that was not graded makes every check an `<error>` with the reason.
pub fn junit(results: &[GradeResult]) -> String {
    let count = |f: &dyn Fn(&GradeResult, &CheckResult) -> bool| -> usize {
        results
            .iter()
            .map(|r| r.checks.iter().filter(|c| f(r, c)).count())
            .sum()
    };
    let graded = |r: &GradeResult| r.outcome == Outcome::Graded;
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"idempotency-lab\" tests=\"{}\" failures=\"{}\" errors=\"{}\">",
        count(&|_, _| true),
        count(&|r, c| graded(r) && !c.passed),
        count(&|r, _| !graded(r)),
    );
    for result in results {
        let failures = result.failed().count();
        let (failures, errors) = if graded(result) {
            (failures, 0)
        } else {
            (0, result.checks.len())
        };
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{:.3}\" timestamp=\"{}\">",
            escape(&format!(
                "exercise {} ({}): {}",
                result.exercise, result.exercise_name, result.student
            )),
            result.checks.len(),
            result.duration_ms as f64 / 1000.0,
            escape(result.graded_at.trim_end_matches('Z')),
        );
        let classname = format!("exercise-{}", result.exercise);
        for check in &result.checks {
            let open = format!(
                "    <testcase classname=\"{classname}\" name=\"{}\"",
                escape(&check.name)
            );
            if !graded(result) {
                let _ = writeln!(
                    xml,
                    "{open}>\n      <error type=\"{}\" message=\"{}\">{}</error>\n    </testcase>",
                    result.outcome.code(),
                    escape(result.outcome.label()),
                    escape(result.reason.as_deref().unwrap_or("")),
                );
            } else if check.passed {
                let _ = writeln!(xml, "{open}/>");
            } else {
                let _ = writeln!(
                    xml,
                    "{open}>\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>",
                    escape(check.diagnosis.as_deref().unwrap_or("failed")),
                    escape(check.meaning.as_deref().unwrap_or(&check.numbers)),
                    escape(&failure_text(check)),
                );
            }
        }
        if !result.log.is_empty() {
            let _ = writeln!(
                xml,
                "    <system-err>{}</system-err>",
                escape(&result.log.join("\n"))
            );
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// `text` for XML or HTML: the five special characters escaped, and control
/// characters (which XML 1.0 forbids) dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' | '\r' => out.push(c),
            // What XML 1.0 forbids: control characters, U+FFFE and U+FFFF.
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// A short Markdown summary of results (GitHub Actions' job summary).
pub fn markdown_summary(results: &[GradeResult]) -> String {
    let mut md = String::new();
    for result in results {
        let _ = writeln!(
            md,
            "### Exercise {} ({}): {}\n",
            result.exercise,
            result.submission.file,
            if result.passed { "PASS" } else { "FAIL" }
        );
        if result.outcome != Outcome::Graded {
            let _ = writeln!(
                md,
                "{}: `{}`\n",
                result.outcome.label(),
                result.reason.as_deref().unwrap_or("")
            );
            continue;
        }
        let _ = writeln!(md, "{}\n", result.verdict);
        for check in result.failed() {
            let _ = writeln!(
                md,
                "- **{}** ({}): {}",
                check.name,
                check.diagnosis.as_deref().unwrap_or("failed"),
                check.meaning.as_deref().unwrap_or(&check.numbers)
            );
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lab_schema::grade::Submission;

    /// A result as `./lab grade` writes it, for `student`, failing `failed`
    /// checks of `exercise` with `diagnosis` (the first) and `same-mistake`.
    pub(crate) fn result(
        student: &str,
        exercise: Exercise,
        failed: &[&str],
        diagnosis: &str,
    ) -> GradeResult {
        let checks: Vec<CheckResult> = grader(exercise)
            .checks
            .iter()
            .map(|name| {
                let fails = failed.contains(name);
                let first = failed.first() == Some(name);
                CheckResult {
                    name: name.to_string(),
                    passed: !fails,
                    numbers: format!("numbers of {name}"),
                    diagnosis: fails.then(|| {
                        if first {
                            diagnosis.to_string()
                        } else {
                            "same-mistake".to_string()
                        }
                    }),
                    meaning: fails.then(|| format!("{diagnosis} <in words> & more")),
                    trace: if first {
                        vec!["SET k 1 NX EX 86400 -> OK".to_string()]
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        GradeResult {
            submission: Submission {
                path: format!("class/{student}"),
                file: exercise.info().student_file.to_string(),
                taken_from: exercise.info().student_file.to_string(),
                ignored: Vec::new(),
                ignored_more: 0,
            },
            fingerprint: "3fa9c1".to_string(),
            passed: failed.is_empty(),
            checks,
            verdict: if failed.is_empty() {
                "verdict: PASS".to_string()
            } else {
                format!("verdict: FAIL, {} failed", failed.len())
            },
            graded_at: "2026-12-06T10:00:00Z".to_string(),
            duration_ms: 12_345,
            ..GradeResult::new(
                student,
                exercise.number(),
                exercise.info().slug,
                Outcome::Graded,
            )
        }
    }

    pub(crate) fn not_built(student: &str, exercise: Exercise) -> GradeResult {
        let reason = "error[E0425]: cannot find value `key` in this scope";
        GradeResult {
            outcome: Outcome::BuildFailed,
            reason: Some(reason.to_string()),
            passed: false,
            checks: checks_not_run(exercise, Outcome::BuildFailed, reason),
            verdict: reason.to_string(),
            ..result(student, exercise, &[], "")
        }
    }

    #[test]
    fn points_parse_and_name_bad_lines() {
        let points = Points::parse(
            "# comment\n1 concurrent-duplicates 3 # the race\n\n6 claim-expires 0.5\n",
        )
        .unwrap();
        assert_eq!(points.of(1, "concurrent-duplicates"), 3.0);
        assert_eq!(points.of(6, "claim-expires"), 0.5);
        assert_eq!(points.of(1, "claim-expires"), DEFAULT_POINTS);
        for (bad, says) in [
            ("1 concurrent-duplicates", "expected"),
            ("9 claim-expires 1", "no exercise 9"),
            ("1 no-such-check 1", "has no check"),
            ("1 claim-expires -1", "0 or more"),
            ("1 claim-expires many", "0 or more"),
        ] {
            let err = Points::parse(bad).unwrap_err();
            assert!(err.contains("line 1") && err.contains(says), "{bad}: {err}");
        }
    }

    // The points file the lab ships names real checks of every exercise.
    #[test]
    fn the_shipped_points_file_is_valid_and_complete() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../exercises/points.txt");
        let text = std::fs::read_to_string(path).unwrap();
        Points::parse(&text).unwrap();
        for &exercise in Exercise::ALL {
            for check in grader(exercise).checks {
                assert!(
                    text.lines()
                        .any(|l| l.starts_with(&format!("{} {check} ", exercise.number()))),
                    "points.txt has no line for exercise {} {check}",
                    exercise.number()
                );
            }
        }
    }

    #[test]
    fn gradescope_scores_each_check() {
        let exercise = Exercise::DuplicateDelivery;
        let failing = result(
            "bob",
            exercise,
            &["concurrent-duplicates"],
            "check-then-set",
        );
        let points = Points::parse("1 concurrent-duplicates 4").unwrap();
        let json = gradescope(std::slice::from_ref(&failing), &points);
        let tests = json["tests"].as_array().unwrap();
        assert_eq!(tests.len(), grader(exercise).checks.len());
        let race = tests
            .iter()
            .find(|t| t["name"] == "exercise 1: concurrent-duplicates")
            .unwrap();
        assert_eq!(race["status"], "failed");
        assert_eq!(race["score"], 0.0);
        assert_eq!(race["max_score"], 4.0);
        assert!(race["output"].as_str().unwrap().contains("SET k 1 NX"));
        assert_eq!(json["score"], (tests.len() - 1) as f64);
        let broken = gradescope(&[not_built("bob", exercise)], &points);
        assert_eq!(broken["score"], 0.0);
        assert!(
            broken["output"]
                .as_str()
                .unwrap()
                .contains("does not compile: error[E0425]")
        );
    }

    #[test]
    fn junit_has_a_case_per_check_and_escapes() {
        let exercise = Exercise::DuplicateDelivery;
        let xml = junit(&[
            result(
                "bob",
                exercise,
                &["concurrent-duplicates"],
                "check-then-set",
            ),
            not_built("carol", exercise),
        ]);
        let n = grader(exercise).checks.len();
        assert_eq!(xml.matches("<testcase ").count(), 2 * n);
        assert!(xml.contains(&format!(
            "tests=\"{}\" failures=\"1\" errors=\"{n}\"",
            2 * n
        )));
        assert!(xml.contains("<failure type=\"check-then-set\" message=\"check-then-set &lt;in words&gt; &amp; more\">"));
        assert!(xml.contains("<error type=\"build-failed\" message=\"does not compile\">"));
        assert!(!xml.contains("<in words>"));
        assert_eq!(escape("a\u{1}b\"'\u{FFFF}"), "ab&quot;&#39;");
    }
}
