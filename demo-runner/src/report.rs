//! What a scenario prints: its summary (`key=value` lines or one JSON object,
//! see `lab_schema::summary`), the file `--save` writes, and the progress
//! display while it waits. Students need not edit this file.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use lab_schema::summary::SavedSummary;
use lab_schema::{Measured, RunSummary};

/// What a scenario measured, and the observation lines it printed on the way.
#[derive(Debug, Clone)]
pub struct ScenarioRun {
    pub summary: RunSummary,
    /// The observation lines printed while the scenario ran (duplicate-observe).
    pub narration: Vec<String>,
    /// `# ...` lines after the summary: which code the workers ran, and warnings.
    pub code_lines: Vec<String>,
}

impl ScenarioRun {
    /// The summary of a scenario, built here for every scenario: the run's
    /// totals as the API returned them, named for `scenario`, timed from
    /// `started`, with what the scenario `measured`.
    pub fn new(
        scenario: &str,
        mut summary: RunSummary,
        started: Instant,
        measured: Measured,
    ) -> ScenarioRun {
        summary.scenario = Some(scenario.to_string());
        summary.elapsed_ms = Some(started.elapsed().as_millis() as u64);
        summary.measured = measured;
        ScenarioRun {
            summary,
            narration: Vec::new(),
            code_lines: Vec::new(),
        }
    }

    /// What `--save FILE` writes: the summary plus the verdict and the whole text
    /// output (observation lines, `key=value` lines, verdict), so `compare` and
    /// `evidence` can show what the student saw.
    pub fn to_saved_json(&self) -> String {
        let mut output = String::new();
        for line in &self.narration {
            output.push_str(line);
            output.push('\n');
        }
        output.push_str(&self.summary.to_text());
        for line in &self.code_lines {
            output.push_str(line);
            output.push('\n');
        }
        let saved = SavedSummary {
            summary: self.summary.clone(),
            verdict: Some(self.summary.verdict()),
            output: Some(output),
        };
        let mut text = serde_json::to_string_pretty(&saved).unwrap_or_default();
        text.push('\n');
        text
    }

    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.summary.to_json());
        } else {
            print!("{}", self.summary.to_text());
            for line in &self.code_lines {
                println!("{line}");
            }
        }
    }
}

/// A progress display on stderr: a redrawn bar on a terminal, a line per
/// second otherwise (logs, CI).
pub struct Progress {
    label: &'static str,
    total: u64,
    done: u64,
    terminal: bool,
    last_line: Option<Instant>,
}

impl Progress {
    pub fn new(label: &'static str, total: u64) -> Progress {
        Progress {
            label,
            total,
            done: u64::MAX,
            terminal: std::io::stderr().is_terminal(),
            last_line: None,
        }
    }

    pub fn update(&mut self, done: u64) {
        if done == self.done {
            return;
        }
        self.done = done;
        let mut stderr = std::io::stderr();
        if self.terminal {
            const WIDTH: u64 = 30;
            let filled = (done.min(self.total) * WIDTH)
                .checked_div(self.total)
                .unwrap_or(WIDTH);
            let _ = write!(
                stderr,
                "\r{:>9} [{}{}] {done}/{}",
                self.label,
                "#".repeat(filled as usize),
                "-".repeat((WIDTH - filled) as usize),
                self.total
            );
            let _ = stderr.flush();
        } else if self.last_line.is_none_or(|t| t.elapsed().as_secs() >= 1) || done >= self.total {
            let _ = writeln!(stderr, "{}: {done}/{}", self.label, self.total);
            self.last_line = Some(Instant::now());
        }
    }

    pub fn finish(&mut self) {
        if self.terminal && self.done != u64::MAX {
            eprintln!();
        }
    }
}
