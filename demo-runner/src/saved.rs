//! Summaries saved with `--save FILE` (or `--json > FILE`), read back by
//! `compare` and `evidence`. Students need not edit this file.
//!
//! The file is the one summary type (`lab_schema::RunSummary`) plus the verdict
//! and the printed output: every scenario that offers `--save` writes a file
//! `compare` accepts.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use lab_schema::RunSummary;
use lab_schema::summary::{SavedSummary, show};
use serde_json::Value;

/// A saved summary and where it came from.
#[derive(Debug, Clone)]
pub struct Saved {
    pub summary: RunSummary,
    /// The summary's `#` line (absent from `--json` output).
    pub verdict: Option<String>,
    /// What the scenario printed (absent from `--json` output).
    pub output: Option<String>,
    pub path: PathBuf,
}

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
        if !value.is_object() {
            bail!(
                "{} is not a saved summary: not a JSON object",
                shown.display()
            );
        }
        let saved: SavedSummary = serde_json::from_value(value).map_err(|err| {
            anyhow::anyhow!(
                "{} is not a saved demo-runner summary: {err}",
                shown.display()
            )
        })?;
        let Some(scenario) = saved.summary.scenario.as_deref() else {
            bail!(
                "{} holds no scenario: save it with a scenario's --save (or --json), not from GET /runs",
                shown.display()
            );
        };
        if !crate::scenario_names().contains(&scenario) {
            bail!(
                "{} holds an unknown scenario {scenario:?} (one of {})",
                shown.display(),
                crate::scenario_names().join(", ")
            );
        }
        Ok(Saved {
            summary: saved.summary,
            verdict: saved.verdict,
            output: saved.output,
            path: shown,
        })
    }

    pub fn scenario(&self) -> &str {
        self.summary.scenario.as_deref().unwrap_or_default()
    }

    /// The text the scenario printed, or (for a `--json` file) its `key=value` lines.
    pub fn text(&self) -> String {
        if let Some(output) = &self.output {
            return output.clone();
        }
        let mut out = String::new();
        for (key, value) in self.summary.fields() {
            out.push_str(&format!("{key}={}\n", show(&value)));
        }
        if let Some(verdict) = &self.verdict {
            out.push_str(&format!("# {verdict}\n"));
        }
        out
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
