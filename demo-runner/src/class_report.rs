//! `class-report DIR`: the whole class on one page, from the result files
//! `./lab grade` wrote (`lab_schema::grade`). Per exercise: the mistakes
//! ranked by how many students made them (each with verify's sentence and the
//! instructor guide's row to discuss), the fix rate per check, and students x
//! checks. Written as Markdown and as one self-contained HTML file (no script,
//! no download) that the API serves at `/class-report` for the projector.
//! Students need not edit this file.
//!
//! Files that are not usable are named with the reason, never fatal: corrupt
//! JSON, a file of another format, a result of another lab version. The same
//! student graded twice on one exercise keeps one result by a stated rule (a
//! sealed result over an unsealed one, then the latest), and the others are named.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use lab_schema::Exercise;
use lab_schema::grade::{self, GradeResult, Outcome, Unreadable};

use crate::grading::escape;
use crate::registry::grader;

/// A result read from the class folder.
#[derive(Debug, Clone)]
pub struct Read {
    pub result: GradeResult,
    pub path: PathBuf,
    /// Its seal holds under the grading machine's key: `./lab grade` wrote
    /// it there from the student's source (evidence), unedited since.
    pub sealed: bool,
}

/// Every result of a class folder, and what was left out and why.
#[derive(Debug, Default)]
pub struct Class {
    pub results: Vec<Read>,
    /// Files that could not be used, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Results replaced by another of the same student and exercise.
    pub superseded: Vec<(PathBuf, String)>,
    /// Gradescope files beside the results (written by `./lab grade`; not read).
    pub gradescope_files: usize,
}

/// Reads every `*.json` under `dir` (subfolders included). `key`: the grading
/// machine's seal key (`None`: every result is a claim). Errors only when
/// `dir` cannot be read.
pub fn load(dir: &Path, key: Option<&[u8]>) -> anyhow::Result<Class> {
    std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read the class folder {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    let mut class = Class::default();
    json_files(dir, &mut files, &mut class.skipped, 0);
    files.sort();
    let mut all = Vec::new();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                class.skipped.push((path, format!("unreadable: {e}")));
                continue;
            }
        };
        match grade::parse(&text) {
            Ok(result) => {
                let sealed = key.is_some_and(|k| result.seal_holds(k));
                all.push(Read {
                    result,
                    path,
                    sealed,
                });
            }
            Err(Unreadable::Foreign) if is_gradescope(&text) => class.gradescope_files += 1,
            Err(why) => class.skipped.push((path, why.to_string())),
        }
    }
    // One result per (student, exercise): sealed first, then the latest.
    all.sort_by(|a, b| {
        (&a.result.student, a.result.exercise)
            .cmp(&(&b.result.student, b.result.exercise))
            .then(b.sealed.cmp(&a.sealed))
            .then(b.result.graded_at.cmp(&a.result.graded_at))
    });
    for read in all {
        match class.results.last() {
            Some(kept)
                if kept.result.student == read.result.student
                    && kept.result.exercise == read.result.exercise =>
            {
                let why = format!(
                    "{} graded twice on exercise {}: kept {} ({}{})",
                    read.result.student,
                    read.result.exercise,
                    kept.path.display(),
                    if kept.sealed && !read.sealed {
                        "sealed by this machine's grader, "
                    } else {
                        ""
                    },
                    kept.result.graded_at
                );
                class.superseded.push((read.path, why));
            }
            _ => class.results.push(read),
        }
    }
    Ok(class)
}

impl Class {
    /// The results of one exercise, in the order read.
    pub fn of(&self, exercise: Exercise) -> Vec<&Read> {
        self.results
            .iter()
            .filter(|r| r.result.exercise == exercise.number())
            .collect()
    }
}

fn is_gradescope(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .is_ok_and(|v| v["tests"].is_array() && v.get("format").is_none())
}

/// The `*.json` files under `dir`, to three folders down (DIR/<student>/<file>
/// and an upload folder beside them), never into a build folder (`target`);
/// a folder that cannot be read is named in `skipped`.
fn json_files(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    skipped: &mut Vec<(PathBuf, String)>,
    depth: usize,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            skipped.push((dir.to_path_buf(), format!("folder not readable: {e}")));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if depth < 3 && path.file_name().is_some_and(|n| n != "target") {
                json_files(&path, out, skipped, depth + 1);
            }
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

/// How one diagnosis spread over an exercise's students.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked {
    /// The diagnosis code, or the outcome's (`build-failed`, `timed-out`, ...).
    pub code: String,
    /// The students who made it, sorted.
    pub students: Vec<String>,
    /// The checks it failed.
    pub checks: Vec<String>,
    /// What verify said, for the first of them.
    pub example: String,
}

/// The diagnoses of one exercise's results, ranked by how many students made
/// them (then by code). `same-mistake` (a check failed by a mistake another
/// check names) is not a mistake of its own. Results that were not graded rank
/// under their outcome.
pub fn ranked(results: &[&Read]) -> Vec<Ranked> {
    let mut by_code: BTreeMap<String, Ranked> = BTreeMap::new();
    for read in results {
        let result = &read.result;
        let mut add = |code: &str, check: Option<&str>, example: &str| {
            let entry = by_code.entry(code.to_string()).or_insert_with(|| Ranked {
                code: code.to_string(),
                students: Vec::new(),
                checks: Vec::new(),
                example: format!("{}: {example}", result.student),
            });
            if !entry.students.contains(&result.student) {
                entry.students.push(result.student.clone());
            }
            if let Some(check) = check
                && !entry.checks.iter().any(|c| c == check)
            {
                entry.checks.push(check.to_string());
            }
        };
        if result.outcome != Outcome::Graded {
            add(
                result.outcome.code(),
                None,
                result.reason.as_deref().unwrap_or(""),
            );
            continue;
        }
        for check in result.failed() {
            let code = check.diagnosis.as_deref().unwrap_or("failed");
            if code == crate::verify::SAME_MISTAKE {
                continue;
            }
            add(
                code,
                Some(&check.name),
                check.meaning.as_deref().unwrap_or(&check.numbers),
            );
        }
    }
    let mut ranked: Vec<Ranked> = by_code.into_values().collect();
    for r in &mut ranked {
        r.students.sort();
    }
    ranked.sort_by(|a, b| {
        b.students
            .len()
            .cmp(&a.students.len())
            .then(a.code.cmp(&b.code))
    });
    ranked
}

/// The instructor guide's row for a diagnosis code: the mistake as the guide
/// names it, and the section it is in (`None`: no guide, or no row).
pub fn guide_row(source_dir: &Path, exercise: Exercise, code: &str) -> Option<(String, String)> {
    guide_row_quoting(source_dir, exercise, &format!("`{code}`"))
}

/// The instructor guide's first table row that contains `needle` (a
/// "Mistakes students make" row first): its first cell and its section.
fn guide_row_quoting(
    source_dir: &Path,
    exercise: Exercise,
    needle: &str,
) -> Option<(String, String)> {
    if needle.trim().is_empty() {
        return None;
    }
    let guide = std::fs::read_to_string(source_dir.join(exercise.instructor_guide())).ok()?;
    let mut section = String::new();
    let mut found = None;
    for line in guide.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            section = heading.trim().to_string();
        } else if line.starts_with('|') && line.contains(needle) {
            let mistake = line
                .trim_matches('|')
                .split('|')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let row = (mistake, section.clone());
            // The "Mistakes students make" table first; any other table otherwise.
            if section.starts_with("Mistakes") {
                return Some(row);
            }
            found.get_or_insert(row);
        }
    }
    found
}

/// One block of the report, rendered to Markdown and to HTML alike.
enum Block {
    Heading(u8, String),
    Text(String),
    /// Header, then rows; a cell `PASS ...`/`FAIL ...` is coloured in HTML.
    Table(Vec<String>, Vec<Vec<String>>),
    List(Vec<String>),
}

/// The report's blocks: the class, then each exercise, then the files left out.
fn blocks(class: &Class, title: &str, source_dir: &Path) -> Vec<Block> {
    let mut out = vec![Block::Heading(1, format!("Class report: {title}"))];
    let students: std::collections::BTreeSet<&str> = class
        .results
        .iter()
        .map(|r| r.result.student.as_str())
        .collect();
    let sealed = class.results.iter().filter(|r| r.sealed).count();
    let n = |count: usize, noun: &str| lab_schema::summary::plural(count as u64, noun);
    out.push(Block::Text(format!(
        "{}, {}. Evidence: {} graded by `./lab grade` on this machine from the students' source (sealed, unedited). Claims: {} not sealed here (uploaded, made elsewhere, or edited), marked \"claim\" below.",
        n(students.len(), "student"),
        n(class.results.len(), "result"),
        n(sealed, "result"),
        n(class.results.len() - sealed, "result"),
    )));
    for &exercise in Exercise::ALL {
        let results = class.of(exercise);
        if results.is_empty() {
            continue;
        }
        exercise_blocks(&mut out, exercise, &results, source_dir);
    }
    if !class.skipped.is_empty() || !class.superseded.is_empty() {
        out.push(Block::Heading(2, "Files not used".to_string()));
        out.push(Block::List(
            class
                .skipped
                .iter()
                .chain(&class.superseded)
                .map(|(path, why)| format!("{}: {why}", path.display()))
                .collect(),
        ));
    }
    out
}

fn exercise_blocks(out: &mut Vec<Block>, exercise: Exercise, results: &[&Read], source: &Path) {
    let info = exercise.info();
    let passed = results.iter().filter(|r| r.result.passed).count();
    out.push(Block::Heading(
        2,
        format!(
            "Exercise {} ({}): {passed} of {} pass",
            info.number,
            info.slug,
            results.len()
        ),
    ));
    out.push(Block::Heading(
        3,
        "Mistakes to discuss, most common first".to_string(),
    ));
    let ranked = ranked(results);
    if ranked.is_empty() {
        out.push(Block::Text("No mistakes: every check passed.".to_string()));
    } else {
        let guide = exercise.instructor_guide();
        let rows = ranked
            .iter()
            .map(|r| {
                let discuss = match guide_row(source, exercise, &r.code) {
                    Some((mistake, section)) => format!("{guide}, {section}: {mistake}"),
                    None if r.code == Outcome::BuildFailed.code() => {
                        // The compile-error table quotes the compiler's message.
                        let message = r
                            .example
                            .split_once("]: ")
                            .map_or("", |(_, m)| m.rsplit_once(" (").map_or(m, |(m, _)| m));
                        match guide_row_quoting(source, exercise, message) {
                            Some((mistake, section)) => format!("{guide}, {section}: {mistake}"),
                            None => format!("{guide}, Compile errors students hit"),
                        }
                    }
                    None => String::new(),
                };
                vec![
                    format!("`{}`", r.code),
                    format!("{} ({})", r.students.len(), r.students.join(", ")),
                    r.checks.join(", "),
                    r.example.clone(),
                    discuss,
                ]
            })
            .collect();
        out.push(Block::Table(
            [
                "diagnosis",
                "students",
                "checks",
                "what verify said (first student)",
                "discuss",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        ));
    }
    out.push(Block::Heading(3, "Fix rate per check".to_string()));
    let checks = grader(exercise).checks;
    let rows = checks
        .iter()
        .map(|check| {
            let of: Vec<bool> = results
                .iter()
                .filter_map(|r| r.result.checks.iter().find(|c| c.name == *check))
                .map(|c| c.passed)
                .collect();
            let pass = of.iter().filter(|p| **p).count();
            let rate = if of.is_empty() {
                0
            } else {
                pass * 100 / of.len()
            };
            vec![
                check.to_string(),
                format!("{pass} of {}", of.len()),
                format!("{rate}%"),
            ]
        })
        .collect();
    out.push(Block::Table(
        ["check", "passed", "rate"].map(String::from).to_vec(),
        rows,
    ));
    out.push(Block::Heading(3, "Students x checks".to_string()));
    let mut header = vec![
        "student".to_string(),
        "result".to_string(),
        "code".to_string(),
    ];
    header.extend(checks.iter().map(|c| c.to_string()));
    let rows = results
        .iter()
        .map(|read| {
            let r = &read.result;
            let mut row = vec![
                r.student.clone(),
                format!(
                    "{} ({})",
                    match (r.outcome, r.passed) {
                        (Outcome::Graded, true) => "PASS".to_string(),
                        (Outcome::Graded, false) => "FAIL".to_string(),
                        (outcome, _) => format!("FAIL {}", outcome.label()),
                    },
                    if read.sealed { "evidence" } else { "claim" }
                ),
                format!("#{}", r.fingerprint),
            ];
            for check in checks {
                row.push(match r.checks.iter().find(|c| c.name == *check) {
                    Some(c) if c.passed => "PASS".to_string(),
                    Some(_) if r.outcome != Outcome::Graded => "FAIL not run".to_string(),
                    Some(c) => format!("FAIL {}", c.diagnosis.as_deref().unwrap_or("")),
                    None => "-".to_string(),
                });
            }
            row
        })
        .collect();
    out.push(Block::Table(header, rows));
}

/// The report as Markdown.
pub fn markdown(class: &Class, title: &str, source_dir: &Path) -> String {
    let cell = |c: &str| c.replace('|', "\\|").replace('\n', " ");
    let mut md = String::new();
    for block in blocks(class, title, source_dir) {
        match block {
            Block::Heading(level, text) => {
                let _ = writeln!(md, "{} {text}\n", "#".repeat(level as usize));
            }
            Block::Text(text) => {
                let _ = writeln!(md, "{text}\n");
            }
            Block::List(items) => {
                for item in items {
                    let _ = writeln!(md, "- {item}");
                }
                md.push('\n');
            }
            Block::Table(header, rows) => {
                let _ = writeln!(
                    md,
                    "| {} |\n|{}",
                    header
                        .iter()
                        .map(|h| cell(h))
                        .collect::<Vec<_>>()
                        .join(" | "),
                    "---|".repeat(header.len())
                );
                for row in rows {
                    let _ = writeln!(
                        md,
                        "| {} |",
                        row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
                    );
                }
                md.push('\n');
            }
        }
    }
    md
}

/// The report as one HTML page: inline style, no script, nothing to download.
pub fn html(class: &Class, title: &str, source_dir: &Path) -> String {
    let code_spans = |text: &str| {
        // `x` in the Markdown text becomes <code>x</code>.
        let mut out = String::new();
        for (i, part) in escape(text).split('`').enumerate() {
            if i % 2 == 1 {
                let _ = write!(out, "<code>{part}</code>");
            } else {
                out.push_str(part);
            }
        }
        out
    };
    let mut page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>Class report: {}</title>\n<style>\n{STYLE}</style></head><body>\n",
        escape(title)
    );
    for block in blocks(class, title, source_dir) {
        match block {
            Block::Heading(level, text) => {
                let _ = writeln!(page, "<h{level}>{}</h{level}>", code_spans(&text));
            }
            Block::Text(text) => {
                let _ = writeln!(page, "<p>{}</p>", code_spans(&text));
            }
            Block::List(items) => {
                page.push_str("<ul>\n");
                for item in items {
                    let _ = writeln!(page, "<li>{}</li>", escape(&item));
                }
                page.push_str("</ul>\n");
            }
            Block::Table(header, rows) => {
                page.push_str("<table>\n<tr>");
                for h in header {
                    let _ = write!(page, "<th>{}</th>", escape(&h));
                }
                page.push_str("</tr>\n");
                for row in rows {
                    page.push_str("<tr>");
                    for c in row {
                        let class = if c.starts_with("PASS") {
                            " class=\"pass\""
                        } else if c.starts_with("FAIL") {
                            " class=\"fail\""
                        } else {
                            ""
                        };
                        let _ = write!(page, "<td{class}>{}</td>", code_spans(&c));
                    }
                    page.push_str("</tr>\n");
                }
                page.push_str("</table>\n");
            }
        }
    }
    page.push_str("</body></html>\n");
    page
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0 0 1.5em}
th,td{border:1px solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#eee}
td.pass{background:#d9f2d9}
td.fail{background:#f8d7d7}
code{font-size:.95em}
";

/// `class-report DIR`: writes `DIR/class-report.md` and `DIR/class-report.html`;
/// returns what to print (the paths, the counts, the top mistakes).
pub fn write(dir: &Path, key: Option<&[u8]>, source_dir: &Path) -> anyhow::Result<String> {
    let class = load(dir, key)?;
    if class.results.is_empty() {
        anyhow::bail!(
            "no result files in {} ({} other files skipped): ./lab grade writes them there",
            dir.display(),
            class.skipped.len()
        );
    }
    let title = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    let md_path = dir.join("class-report.md");
    let html_path = dir.join("class-report.html");
    std::fs::write(&md_path, markdown(&class, &title, source_dir))?;
    std::fs::write(&html_path, html(&class, &title, source_dir))?;
    let mut said = format!(
        "wrote {} and {} ({} results; {} files not used)\n",
        md_path.display(),
        html_path.display(),
        class.results.len(),
        class.skipped.len() + class.superseded.len()
    );
    for &exercise in Exercise::ALL {
        let results = class.of(exercise);
        if results.is_empty() {
            continue;
        }
        let passed = results.iter().filter(|r| r.result.passed).count();
        let _ = writeln!(
            said,
            "exercise {}: {passed} of {} pass",
            exercise.number(),
            results.len()
        );
        for r in ranked(&results).iter().take(5) {
            let _ = writeln!(said, "  {:>3}  {}", r.students.len(), r.code);
        }
    }
    for (path, why) in class.skipped.iter().chain(&class.superseded) {
        let _ = writeln!(said, "not used: {}: {why}", path.display());
    }
    Ok(said)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grading::tests::{not_built, result};

    fn root() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
    }

    /// A fixture's header: the checks it must fail and its first diagnosis.
    fn header(path: &Path) -> (Vec<String>, String) {
        let text = std::fs::read_to_string(path).unwrap();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("{} has no {name}", path.display()))
                .trim()
                .to_string()
        };
        let fails = field("Fails:")
            .split(',')
            .map(str::trim)
            .filter(|c| !c.ends_with('?'))
            .map(str::to_string)
            .collect();
        (fails, field("Diagnosis:"))
    }

    fn patches(exercise: Exercise, folder: &str, prefix: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> =
            std::fs::read_dir(root().join(exercise.folder()).join(folder))
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    name.starts_with(prefix) && name.ends_with(".patch")
                })
                .collect();
        found.sort();
        found
    }

    fn stem(path: &Path) -> String {
        path.file_stem().unwrap().to_string_lossy().into_owned()
    }

    // A synthetic class, one "student" per fixture and variant of every
    // exercise, each failing as its header says: the report's counts are the
    // headers' counts, and every file that is not a usable result is named.
    #[test]
    fn the_report_counts_what_the_fixtures_headers_say() {
        let dir = std::env::temp_dir().join(format!("lab-class-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key = b"the grading machine's key";
        // Per exercise: students per diagnosis, failures per check, students.
        type Expected = (
            Exercise,
            BTreeMap<String, usize>,
            BTreeMap<&'static str, usize>,
            usize,
        );
        let mut expected: Vec<Expected> = Vec::new();
        for &exercise in Exercise::ALL {
            let mut diagnoses = BTreeMap::new();
            let mut fails_per_check: BTreeMap<&str, usize> = BTreeMap::new();
            let mut students = 0;
            let write = |student: String, mut r: GradeResult| {
                r.student = student.clone();
                r.seal_with(key);
                let folder = dir.join(&student);
                std::fs::create_dir_all(&folder).unwrap();
                std::fs::write(
                    folder.join(format!("exercise-{}.json", exercise.number())),
                    serde_json::to_string(&r).unwrap(),
                )
                .unwrap();
            };
            let wrong = patches(exercise, "fixtures", "wrong-");
            let expect = root()
                .join(exercise.folder())
                .join("fixtures/starter.expect");
            for path in wrong.iter().chain([&expect]) {
                let (fails, diagnosis) = header(path);
                let student = format!("{}-{}", exercise.number(), stem(path));
                let failing: Vec<&str> = fails.iter().map(String::as_str).collect();
                write(student, result("", exercise, &failing, &diagnosis));
                *diagnoses.entry(diagnosis).or_default() += 1;
                for check in grader(exercise).checks {
                    if fails.iter().any(|f| f == check) {
                        *fails_per_check.entry(check).or_default() += 1;
                    }
                }
                students += 1;
            }
            for path in patches(exercise, "variants", "right-") {
                write(
                    format!("{}-{}", exercise.number(), stem(&path)),
                    result("", exercise, &[], ""),
                );
                students += 1;
            }
            let compile = patches(exercise, "fixtures", "compile-");
            for path in &compile {
                write(
                    format!("{}-{}", exercise.number(), stem(path)),
                    not_built("", exercise),
                );
                for check in grader(exercise).checks {
                    *fails_per_check.entry(check).or_default() += 1;
                }
                students += 1;
            }
            if !compile.is_empty() {
                diagnoses.insert("build-failed".to_string(), compile.len());
            }
            expected.push((exercise, diagnoses, fails_per_check, students));
        }
        // What a class folder also holds.
        std::fs::write(dir.join("corrupt.json"), "{\"format\": ").unwrap();
        std::fs::write(dir.join("package.json"), "{\"name\": \"x\"}").unwrap();
        std::fs::write(dir.join("gradescope-results.json"), "{\"tests\": []}").unwrap();
        let mut old = result("1-wrong-get-then-set", Exercise::DuplicateDelivery, &[], "");
        old.graded_at = "2026-01-01T00:00:00Z".to_string();
        old.seal_with(key);
        std::fs::write(dir.join("old.json"), serde_json::to_string(&old).unwrap()).unwrap();
        let mut claimed = result("a-claim", Exercise::DuplicateDelivery, &[], "");
        claimed.seal_with(key);
        // Edited after it was sealed: any change of its text counts.
        let text = serde_json::to_string(&claimed)
            .unwrap()
            .replace("numbers of sequential-duplicates", "all good, trust me");
        std::fs::write(dir.join("claim.json"), text).unwrap();

        let class = load(&dir, Some(key)).unwrap();
        let named = |name: &str| {
            class
                .skipped
                .iter()
                .chain(&class.superseded)
                .find(|(p, _)| p.ends_with(name))
                .map(|(_, why)| why.clone())
        };
        assert!(
            named("corrupt.json")
                .unwrap()
                .contains("not a readable result")
        );
        assert!(
            named("package.json")
                .unwrap()
                .contains("not a result of this lab")
        );
        assert!(
            named("old.json")
                .unwrap()
                .contains("graded twice on exercise 1")
        );
        assert_eq!(named("gradescope-results.json"), None);
        assert_eq!(class.gradescope_files, 1);
        let claim = class
            .results
            .iter()
            .find(|r| r.result.student == "a-claim")
            .unwrap();
        assert!(!claim.sealed, "an edited result is a claim");
        assert_eq!(class.results.iter().filter(|r| !r.sealed).count(), 1);

        for (exercise, diagnoses, fails_per_check, students) in expected {
            let results: Vec<&Read> = class
                .results
                .iter()
                .filter(|r| r.result.exercise == exercise.number() && r.result.student != "a-claim")
                .collect();
            assert_eq!(results.len(), students, "{exercise}");
            let got: BTreeMap<String, usize> = ranked(&results)
                .into_iter()
                .map(|r| (r.code, r.students.len()))
                .collect();
            assert_eq!(got, diagnoses, "{exercise}: diagnoses per student");
            let md = markdown(&class, "class", &root());
            // The claim passes every check of exercise 1.
            let all = students + usize::from(exercise == Exercise::DuplicateDelivery);
            for check in grader(exercise).checks {
                let failed = fails_per_check.get(check).copied().unwrap_or(0);
                let row = format!("| {check} | {} of {all} |", all - failed);
                let section = md
                    .split("## Exercise ")
                    .find(|s| s.starts_with(&format!("{} ", exercise.number())))
                    .unwrap();
                assert!(
                    section.contains(&row),
                    "{exercise}: no `{row}` in\n{section}"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Each mistake the report ranks points to its row of the instructor guide.
    #[test]
    fn the_guide_row_of_a_diagnosis_is_found() {
        let (mistake, section) =
            guide_row(&root(), Exercise::DuplicateDelivery, "check-then-set").unwrap();
        assert!(section.starts_with("Mistakes students make"), "{section}");
        assert!(
            mistake.contains("GET, then the effect, then SET"),
            "{mistake}"
        );
        assert_eq!(
            guide_row(&root(), Exercise::DuplicateDelivery, "no-such-code"),
            None
        );
        assert_eq!(
            guide_row(
                Path::new("/nowhere"),
                Exercise::DuplicateDelivery,
                "check-then-set"
            ),
            None
        );
    }

    #[test]
    fn html_escapes_and_colours() {
        let dir = std::env::temp_dir().join(format!("lab-class-html-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = result(
            "<script>x</script>",
            Exercise::DuplicateDelivery,
            &["claim-expires"],
            "claim-never-expires",
        );
        r.seal = None;
        std::fs::write(dir.join("a.json"), serde_json::to_string(&r).unwrap()).unwrap();
        let class = load(&dir, None).unwrap();
        let page = html(&class, "t", &root());
        assert!(!page.contains("<script>"), "escaped");
        assert!(page.contains("&lt;script&gt;"));
        assert!(
            page.contains("<td class=\"fail\">FAIL <code>")
                || page.contains("<td class=\"fail\">FAIL claim-never-expires")
        );
        assert!(!page.contains("http"), "nothing to download");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
