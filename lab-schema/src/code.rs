//! Which exercise code a worker runs: a short fingerprint of each student file,
//! computed when the worker is built and published when it starts, so that a
//! summary can say which code made it, and a stale worker (a failed rebuild, a
//! worker not restarted) is noticed. Students need not edit this file.
//!
//! The fingerprint of a file is the first 6 hex digits of the SHA-256 of its
//! bytes: `sha256sum worker/src/job.rs | cut -c1-6` gives the same.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Exercise;

/// A worker is counted as running while its heartbeat is younger than this.
pub const ALIVE_WITHIN_MS: u64 = 15_000;

/// `GET /workers`: the workers running now and the code each runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningWorkers {
    pub workers: Vec<RunningWorker>,
    /// The API answering, and the exercise code built into it (exercise 4's
    /// student file is in the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<RunningWorker>,
}

/// One running worker process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningWorker {
    /// Its consumer name, e.g. `worker-1`.
    pub name: String,
    /// When this process started (unix ms).
    pub started_ms: u64,
    pub heartbeat_age_ms: u64,
    /// Student file (from the repository root) -> fingerprint, as it was built.
    pub code: std::collections::BTreeMap<String, String>,
}

impl RunningWorker {
    /// The fingerprint of `student_file` in this worker.
    pub fn fingerprint_of(&self, student_file: &str) -> Option<&str> {
        self.code.get(student_file).map(String::as_str)
    }
}

/// Hex digits of a fingerprint.
pub const FINGERPRINT_LEN: usize = 6;

/// The fingerprint of a file's bytes, e.g. `3fa9c1`.
pub fn fingerprint(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(FINGERPRINT_LEN);
    for byte in digest.iter().take(FINGERPRINT_LEN.div_ceil(2)) {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex.truncate(FINGERPRINT_LEN);
    hex
}

/// The fingerprints of every exercise's student file, in registry order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Code {
    /// (student file from the repository root, fingerprint)
    pub files: Vec<(String, String)>,
}

impl Code {
    /// Reads the student files under `root` (the repository root); a file that
    /// cannot be read is left out.
    pub fn of_sources(root: &std::path::Path) -> Code {
        let files = Exercise::ALL
            .iter()
            .filter_map(|e| {
                let path = e.info().student_file;
                let bytes = std::fs::read(root.join(path)).ok()?;
                Some((path.to_string(), fingerprint(&bytes)))
            })
            .collect();
        Code { files }
    }

    /// `worker/src/job.rs=3fa9c1,worker/src/crash_window.rs=77aa01`: how a
    /// worker publishes it (`worker-code` hash).
    pub fn to_field(&self) -> String {
        self.files
            .iter()
            .map(|(path, hash)| format!("{path}={hash}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The inverse of [`Code::to_field`]; malformed parts are skipped.
    pub fn parse(field: &str) -> Code {
        let files = field
            .split(',')
            .filter_map(|part| {
                let (path, hash) = part.split_once('=')?;
                Some((path.to_string(), hash.to_string()))
            })
            .collect();
        Code { files }
    }

    /// The fingerprint of one student file, if known.
    pub fn of(&self, student_file: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(path, _)| path == student_file)
            .map(|(_, hash)| hash.as_str())
    }
}

/// `job.rs#3fa9c1`: the student file of `exercise` and its fingerprint, as a
/// summary shows it (`worker_code=`).
pub fn label(exercise: Exercise, fingerprint: &str) -> String {
    let file = exercise.info().student_file;
    let name = file.rsplit('/').next().unwrap_or(file);
    format!("{name}#{fingerprint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_the_start_of_the_sha256() {
        // sha256("") = e3b0c442...
        assert_eq!(fingerprint(b""), "e3b0c4");
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
    }

    #[test]
    fn the_field_round_trips() {
        let code = Code {
            files: vec![
                ("worker/src/job.rs".into(), "3fa9c1".into()),
                ("worker/src/crash_window.rs".into(), "77aa01".into()),
            ],
        };
        assert_eq!(Code::parse(&code.to_field()), code);
        assert_eq!(code.of("worker/src/job.rs"), Some("3fa9c1"));
        assert_eq!(
            label(Exercise::DuplicateDelivery, "3fa9c1"),
            "job.rs#3fa9c1"
        );
    }
}
