//! Summaries saved with `--save FILE` (or `--json > FILE`), read back by
//! `compare` and `evidence`. Students need not edit this file.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

/// A saved summary: the summary keys, plus the text output when `--save` wrote it.
#[derive(Debug, Clone, Deserialize)]
pub struct Saved {
    pub scenario: String,
    pub run_id: String,
    #[serde(default)]
    pub job_id: Option<String>,
    pub unique_jobs: u64,
    pub total_submissions: u64,
    #[allow(dead_code)] // required, so a file without it is refused; shown through `fields`
    pub observed_attempts_total: u64,
    pub observed_effects_total: u64,
    pub duplicate_effects: u64,
    pub lost_effects: u64,
    pub duplicate_skips: u64,
    pub drained: bool,
    /// The summary's `#` line (absent from `--json` output).
    #[serde(default)]
    pub verdict: Option<String>,
    /// What the scenario printed (absent from `--json` output).
    #[serde(default)]
    pub output: Option<String>,
    /// The file's keys in order, for the side-by-side table.
    #[serde(skip)]
    pub fields: Vec<(String, Value)>,
    #[serde(skip)]
    pub path: PathBuf,
}

/// The summary keys shown by `compare`, in the documented order.
pub const SUMMARY_KEYS: [&str; 13] = [
    "scenario",
    "run_id",
    "job_id",
    "unique_jobs",
    "total_submissions",
    "observed_attempts_total",
    "observed_effects_total",
    "duplicate_effects",
    "lost_effects",
    "duplicate_skips",
    "processed_deliveries",
    "drained",
    "elapsed_ms",
];

impl Saved {
    /// Reads a saved summary; every problem is one clear error naming the file.
    pub fn load(path: &Path) -> anyhow::Result<Saved> {
        let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let text = std::fs::read_to_string(path).map_err(|err| {
            anyhow::anyhow!(
                "cannot read {}: {} (save a summary with e.g. `duplicate-load 8 2 --save {}`)",
                shown.display(),
                io_reason(&err),
                path.display()
            )
        })?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", shown.display()))
            .map_err(|err| anyhow::anyhow!("{err:#}"))?;
        let Value::Object(object) = &value else {
            bail!(
                "{} is not a saved summary: not a JSON object",
                shown.display()
            );
        };
        let mut saved: Saved = serde_json::from_value(value.clone()).map_err(|err| {
            anyhow::anyhow!(
                "{} is not a saved demo-runner summary: {err}",
                shown.display()
            )
        })?;
        if !matches!(
            saved.scenario.as_str(),
            "duplicate-observe" | "duplicate-load"
        ) {
            bail!(
                "{} holds an unknown scenario {:?} (duplicate-observe or duplicate-load)",
                shown.display(),
                saved.scenario
            );
        }
        saved.fields = SUMMARY_KEYS
            .iter()
            .filter_map(|key| object.get(*key).map(|v| (key.to_string(), v.clone())))
            .collect();
        saved.path = shown;
        Ok(saved)
    }

    /// The text the scenario printed, or (for a `--json` file) its `key=value` lines.
    pub fn text(&self) -> String {
        if let Some(output) = &self.output {
            return output.clone();
        }
        let mut out = String::new();
        for (key, value) in &self.fields {
            match value {
                Value::String(text) => out.push_str(&format!("{key}={text}\n")),
                other => out.push_str(&format!("{key}={other}\n")),
            }
        }
        if let Some(verdict) = &self.verdict {
            out.push_str(&format!("# {verdict}\n"));
        }
        out
    }

    /// `8 jobs x 2 copies` or `1 job x 3 copies`.
    pub fn shape(&self) -> String {
        let copies = self
            .total_submissions
            .checked_div(self.unique_jobs)
            .unwrap_or(0);
        format!("{} x {copies}", self.unique_jobs)
    }
}

/// `No such file or directory`, without the `(os error 2)` tail.
pub fn io_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Checks before a scenario runs that `--save FILE` can be written, so a bad
/// path fails before anything is submitted.
pub fn check_writable(path: &Path) -> anyhow::Result<()> {
    let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if path.is_dir() {
        bail!("cannot save to {}: it is a folder", shown.display());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        bail!(
            "cannot save to {}: the folder {} does not exist",
            shown.display(),
            parent.display()
        );
    }
    Ok(())
}

/// Writes `text` to `path` (whole, replacing an older file).
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    std::fs::write(path, text)
        .map_err(|err| anyhow::anyhow!("cannot write {}: {}", shown.display(), io_reason(&err)))?;
    give_to_folder_owner(&shown);
    Ok(())
}

/// The Docker demo container writes as root into `lab-output/`, a folder of the
/// student's: hand the file to the folder's owner, so the student can edit and
/// delete it without sudo. Best effort; nothing to do when the owners already match.
#[cfg(unix)]
fn give_to_folder_owner(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (Some(folder), Ok(file)) = (path.parent(), std::fs::metadata(path)) else {
        return;
    };
    if let Ok(folder) = std::fs::metadata(folder)
        && (folder.uid(), folder.gid()) != (file.uid(), file.gid())
    {
        let _ = std::os::unix::fs::chown(path, Some(folder.uid()), Some(folder.gid()));
    }
}

#[cfg(not(unix))]
fn give_to_folder_owner(_path: &Path) {}
