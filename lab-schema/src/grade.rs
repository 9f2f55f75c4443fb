//! The result file `./lab grade` writes for one submission and exercise, and
//! `class-report` reads: versioned, so that a report never mixes two meanings.
//! Students need not edit this file.
//!
//! One JSON object per (student, exercise), documented in `docs/grading.md`:
//! who, which exercise, how it went (graded, or why not: the build failed, the
//! time ran out, the stack did not start), each check's outcome with its
//! diagnosis code and sentence, the code's fingerprint, the lab's version and
//! when. A result `./lab grade` wrote carries a seal: an HMAC-SHA-256 of its
//! content under a key kept on the grading machine (`.lab/grade-key`), so the
//! class report tells a result graded there (evidence) from a file that was
//! edited or made elsewhere (a claim).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `format` every result file names.
pub const FORMAT: &str = "idempotency-lab-grade-result";

/// The version of this format: a reader skips files of another version.
pub const VERSION: u32 = 1;

/// The lab's version that graded a result (results of other versions may run
/// other checks: the class report names them and leaves them out).
pub const LAB_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How grading one submission went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The checks ran: `checks` says how each went.
    Graded,
    /// The student's code does not compile: `reason` is the compiler's first error.
    BuildFailed,
    /// The build or the checks went past the time budget: `reason` says which.
    TimedOut,
    /// The stack with the student's code did not start or the checks could not run.
    StackFailed,
}

impl Outcome {
    /// Its name in the result file (`build-failed`).
    pub fn code(self) -> &'static str {
        match self {
            Outcome::Graded => "graded",
            Outcome::BuildFailed => "build-failed",
            Outcome::TimedOut => "timed-out",
            Outcome::StackFailed => "stack-failed",
        }
    }

    /// A few words for a table.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Graded => "graded",
            Outcome::BuildFailed => "does not compile",
            Outcome::TimedOut => "timed out",
            Outcome::StackFailed => "did not run",
        }
    }
}

/// One check's outcome, as `verify --json` reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    /// The numbers behind the outcome, in one line.
    pub numbers: String,
    /// On failure: the diagnosis code (`check-then-set`, ...).
    pub diagnosis: Option<String>,
    /// On failure: the diagnosis in a sentence, as the student read it.
    pub meaning: Option<String>,
    /// On failure: what the student's code did, from its trace.
    #[serde(default)]
    pub trace: Vec<String>,
}

/// What was taken from the submission, and what was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The path graded, as given on the command line.
    pub path: String,
    /// The exercise's student file, from the repository root (`worker/src/job.rs`).
    pub file: String,
    /// Where in the submission it was found.
    pub taken_from: String,
    /// Files of the submission that differ from the lab and were not used
    /// (a `Cargo.toml`, a `build.rs`, another exercise's file): at most 20.
    #[serde(default)]
    pub ignored: Vec<String>,
    /// How many more were ignored than `ignored` lists.
    #[serde(default)]
    pub ignored_more: usize,
}

/// One result file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradeResult {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] when written.
    pub version: u32,
    /// [`LAB_VERSION`] of the grader.
    pub lab_version: String,
    /// The git commit of the grading checkout, when known.
    #[serde(default)]
    pub lab_commit: Option<String>,
    pub student: String,
    pub exercise: u8,
    /// The exercise's folder name (`01-duplicate-delivery`).
    pub exercise_name: String,
    pub submission: Submission,
    /// The fingerprint of the student file graded (as `./lab status` shows it).
    pub fingerprint: String,
    pub outcome: Outcome,
    /// Why it was not graded (the compiler's first error, the budget that ran out).
    #[serde(default)]
    pub reason: Option<String>,
    /// Every check passed (false when not graded).
    pub passed: bool,
    pub checks: Vec<CheckResult>,
    /// The verdict line `verify` printed, or the reason.
    pub verdict: String,
    /// What the student's programs wrote that is not the lab's routine
    /// logging (their own output, warnings, errors, panics, restarts): the
    /// last 20 lines. A blocked connection or file shows here.
    #[serde(default)]
    pub log: Vec<String>,
    /// When grading finished: RFC 3339, UTC.
    pub graded_at: String,
    /// Build and checks, in milliseconds.
    pub duration_ms: u64,
    /// The grading machine's seal ([`GradeResult::seal_with`]); absent when unsealed.
    #[serde(default)]
    pub seal: Option<String>,
}

impl GradeResult {
    /// A result of this format and lab version for `student` on exercise
    /// `exercise` (`exercise_name`: its folder), with `outcome` and nothing
    /// else yet (no checks, not passed, `graded_at` empty).
    pub fn new(student: &str, exercise: u8, exercise_name: &str, outcome: Outcome) -> GradeResult {
        GradeResult {
            format: FORMAT.to_string(),
            version: VERSION,
            lab_version: LAB_VERSION.to_string(),
            lab_commit: None,
            student: student.to_string(),
            exercise,
            exercise_name: exercise_name.to_string(),
            submission: Submission::default(),
            fingerprint: String::new(),
            outcome,
            reason: None,
            passed: false,
            checks: Vec::new(),
            verdict: String::new(),
            log: Vec::new(),
            graded_at: String::new(),
            duration_ms: 0,
            seal: None,
        }
    }

    /// The checks that failed, in order.
    pub fn failed(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// Seals the result with `key`: an HMAC-SHA-256 of its JSON without the seal.
    pub fn seal_with(&mut self, key: &[u8]) {
        self.seal = None;
        self.seal = Some(self.mac(key));
    }

    /// Whether the seal is this result's under `key` (not edited since it was sealed).
    pub fn seal_holds(&self, key: &[u8]) -> bool {
        let Some(seal) = &self.seal else {
            return false;
        };
        let mut unsealed = self.clone();
        unsealed.seal = None;
        // Compared without stopping at the first difference.
        let expected = unsealed.mac(key);
        expected.len() == seal.len()
            && expected
                .bytes()
                .zip(seal.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    fn mac(&self, key: &[u8]) -> String {
        let text = serde_json::to_string(self).expect("a result serializes");
        hex(&hmac_sha256(key, text.as_bytes()))
    }
}

/// HMAC-SHA-256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a file of a class folder is not one of this lab's results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// Not JSON, or JSON of another shape.
    Corrupt(String),
    /// JSON, but not a result of this lab.
    Foreign,
    /// A result of another format or lab version.
    OtherVersion { version: u32, lab_version: String },
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Corrupt(why) => write!(f, "not a readable result ({why})"),
            Unreadable::Foreign => write!(f, "not a result of this lab (no format {FORMAT:?})"),
            Unreadable::OtherVersion {
                version,
                lab_version,
            } => write!(
                f,
                "graded by another version (format {version}, lab {lab_version}; this is format {VERSION}, lab {LAB_VERSION})"
            ),
        }
    }
}

/// Reads one result file's text.
pub fn parse(text: &str) -> Result<GradeResult, Unreadable> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Unreadable::Corrupt(e.to_string()))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(Unreadable::Foreign);
    }
    let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
    let lab_version = value
        .get("lab_version")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    if version != VERSION || lab_version != LAB_VERSION {
        return Err(Unreadable::OtherVersion {
            version,
            lab_version,
        });
    }
    serde_json::from_value(value).map_err(|e| Unreadable::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> GradeResult {
        GradeResult {
            fingerprint: "3fa9c1".into(),
            checks: vec![CheckResult {
                name: "concurrent-duplicates".into(),
                passed: false,
                numbers: "8 jobs x 8 copies: 9 emails".into(),
                diagnosis: Some("check-then-set".into()),
                meaning: Some("GET then SET".into()),
                trace: vec![],
            }],
            verdict: "verdict: FAIL".into(),
            graded_at: "2026-12-06T10:00:00Z".into(),
            duration_ms: 1,
            ..GradeResult::new("alice", 1, "01-duplicate-delivery", Outcome::Graded)
        }
    }

    // RFC 4231, test case 2.
    #[test]
    fn hmac_matches_the_rfc_vector() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    // A sealed result holds its seal; any edit (a FAIL turned into a PASS) or another key breaks it.
    #[test]
    fn an_edited_result_loses_its_seal() {
        let mut result = sample();
        assert!(!result.seal_holds(b"key"), "unsealed");
        result.seal_with(b"key");
        assert!(result.seal_holds(b"key"));
        assert!(!result.seal_holds(b"another key"));
        let text = serde_json::to_string(&result).unwrap();
        let read = parse(&text).unwrap();
        assert!(read.seal_holds(b"key"), "the seal survives a round trip");
        let edited = text.replacen("\"passed\":false", "\"passed\":true", 1);
        assert!(!parse(&edited).unwrap().seal_holds(b"key"));
    }

    #[test]
    fn parse_names_what_a_file_is_not() {
        assert!(matches!(parse("{not json"), Err(Unreadable::Corrupt(_))));
        assert_eq!(parse(r#"{"tests": []}"#), Err(Unreadable::Foreign));
        let mut other = serde_json::to_value(sample()).unwrap();
        other["version"] = 99.into();
        assert!(matches!(
            parse(&other.to_string()),
            Err(Unreadable::OtherVersion { version: 99, .. })
        ));
        let mut broken = serde_json::to_value(sample()).unwrap();
        broken["checks"] = "none".into();
        assert!(matches!(
            parse(&broken.to_string()),
            Err(Unreadable::Corrupt(_))
        ));
        assert_eq!(
            parse(&serde_json::to_string(&sample()).unwrap()),
            Ok(sample())
        );
    }
}
