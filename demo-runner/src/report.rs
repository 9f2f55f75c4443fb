//! The summary a scenario prints, and the progress display while it waits.
//! Students need not edit this file.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use lab_schema::RunSummary;
use serde_json::Value;

/// What a scenario measured: the run's totals plus the scenario's own facts.
#[derive(Debug, Clone)]
pub struct Summary {
    pub scenario: &'static str,
    /// The observed job (duplicate-observe only).
    pub job_id: Option<String>,
    pub run: RunSummary,
    /// Every submission was processed before the timeout.
    pub drained: bool,
    pub elapsed_ms: u64,
    /// Facts of one scenario beyond the documented keys (e.g. `submit_retries`),
    /// printed after them.
    pub extra: Vec<(&'static str, Value)>,
    /// The observation lines printed while the scenario ran (duplicate-observe).
    pub narration: Vec<String>,
}

impl Summary {
    pub fn new(
        scenario: &'static str,
        job_id: Option<String>,
        run: RunSummary,
        started: Instant,
    ) -> Summary {
        Summary {
            scenario,
            job_id,
            drained: run.drained,
            run,
            elapsed_ms: started.elapsed().as_millis() as u64,
            extra: Vec::new(),
            narration: Vec::new(),
        }
    }

    /// The summary keys, in the documented order.
    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        let r = &self.run;
        let mut fields = vec![
            ("scenario", Value::from(self.scenario)),
            ("run_id", Value::from(r.run_id.as_str())),
        ];
        if let Some(job_id) = &self.job_id {
            fields.push(("job_id", Value::from(job_id.as_str())));
        }
        fields.extend([
            ("unique_jobs", Value::from(r.unique_jobs)),
            ("total_submissions", Value::from(r.total_submissions)),
            (
                "observed_attempts_total",
                Value::from(r.observed_attempts_total),
            ),
            (
                "observed_effects_total",
                Value::from(r.observed_effects_total),
            ),
            ("duplicate_effects", Value::from(r.duplicate_effects)),
            ("lost_effects", Value::from(r.lost_effects)),
            ("duplicate_skips", Value::from(r.duplicate_skips)),
            ("processed_deliveries", Value::from(r.processed_deliveries)),
            ("dead_lettered", Value::from(r.dead_lettered)),
            ("drained", Value::from(self.drained)),
            ("elapsed_ms", Value::from(self.elapsed_ms)),
        ]);
        fields.extend(self.extra.iter().cloned());
        fields
    }

    /// One JSON object with the keys in order.
    pub fn to_json(&self) -> String {
        let body: Vec<String> = self
            .fields()
            .into_iter()
            .map(|(key, value)| format!("{}:{value}", Value::from(key)))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    /// `key=value` lines, then one `#` line that says what the numbers mean.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (key, value) in self.fields() {
            match value {
                Value::String(text) => out.push_str(&format!("{key}={text}\n")),
                other => out.push_str(&format!("{key}={other}\n")),
            }
        }
        out.push_str(&format!("# {}\n", self.verdict()));
        out
    }

    /// The numbers in one sentence (no `=` in it, so `key=value` parsers skip it).
    pub fn verdict(&self) -> String {
        let r = &self.run;
        if !self.drained {
            return format!(
                "not drained: {} of {} submissions processed so far",
                r.processed_deliveries, r.total_submissions
            );
        }
        if r.lost_effects > 0 {
            return format!(
                "{} jobs finished with NO effect: a guard that skips too much loses work",
                r.lost_effects
            );
        }
        if r.dead_lettered > 0 {
            return format!(
                "{} dead-lettered: process_job failed on every delivery of them (see the worker log)",
                plural(r.dead_lettered, "submission")
            );
        }
        let effects = plural(r.observed_effects_total, "effect");
        let jobs = plural(r.unique_jobs, "unique job");
        if r.duplicate_effects > 0 {
            return format!(
                "{effects} for {jobs}: {} (the bug)",
                plural(r.duplicate_effects, "duplicate side effect")
            );
        }
        let duplicates = r.total_submissions.saturating_sub(r.unique_jobs);
        if r.duplicate_skips < duplicates {
            return format!(
                "{effects} for {jobs}, but only {} of {duplicates} duplicate deliveries recorded as \
                 skipped: call ctx.record_duplicate_skip when the claim fails",
                r.duplicate_skips
            );
        }
        format!(
            "{effects} for {jobs}, {} skipped: exactly one effect per job",
            plural(r.duplicate_skips, "duplicate delivery")
        )
    }

    /// What `--save FILE` writes: the JSON summary plus the verdict and the
    /// whole text output (observation lines, `key=value` lines, verdict), so
    /// `compare` and `evidence` can show what the student saw.
    pub fn to_saved_json(&self) -> String {
        let mut output = String::new();
        for line in &self.narration {
            output.push_str(line);
            output.push('\n');
        }
        output.push_str(&self.to_text());
        // Written by hand: the summary keys keep their documented order.
        let mut fields = self.fields();
        fields.push(("verdict", Value::from(self.verdict())));
        fields.push(("output", Value::from(output)));
        let body: Vec<String> = fields
            .into_iter()
            .map(|(key, value)| format!("  {}: {value}", Value::from(key)))
            .collect();
        format!("{{\n{}\n}}\n", body.join(",\n"))
    }

    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.to_json());
        } else {
            print!("{}", self.to_text());
        }
    }
}

/// `1 effect`, `2 effects`, `2 duplicate deliveries`.
pub(crate) fn plural(n: u64, noun: &str) -> String {
    match (n, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {noun}s"),
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
