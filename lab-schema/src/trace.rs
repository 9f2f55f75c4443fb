//! The trace of a delivery (worker) or a request (api): each Redis command the
//! student's code sent and its reply, in order, between the plumbing's own
//! steps (delivered, effect sent, crashed, returned, ...) and snapshots of the
//! keys the student's code wrote (their value and time to live when the effect
//! was about to crash or stall, the holders the checks judge by them; for
//! exercise 4, after each of `begin`, `finish` and `release`). The graders
//! diagnose from it; the dashboard shows it. Students need not edit this file.
//!
//! A job is traced when its submission asks (`"trace": true` on `POST /jobs`:
//! `verify` and the class scenarios do, the load and the benchmarks do not).
//! Each delivery's trace is written once, when the delivery ends (with the
//! acknowledgements' batch, or just before a simulated crash kills its
//! process), as one JSON element of the
//! list `trace:<jobId>` ([`crate::keys::trace`]): at most [`MAX_DELIVERIES`]
//! per job, [`MAX_LINES`] lines per delivery, every text cut to
//! [`MAX_TEXT`] characters. A delivery whose process was killed from outside
//! (SIGKILL) leaves no trace: its start is in the run's event log.
//!
//! Every `POST /orders` (exercise 4) is traced the same way: what `begin`,
//! `finish` and `release` sent, and the keys they wrote as they stood after
//! each returned, in the list `trace-requests:<runId>`
//! ([`crate::keys::request_traces`], at most [`MAX_REQUESTS`] per run).

use serde::{Deserialize, Serialize};

/// Deliveries kept per job (the newest).
pub const MAX_DELIVERIES: usize = 32;
/// Request traces kept per run (exercise 4's `POST /orders`, the newest).
pub const MAX_REQUESTS: usize = 200;
/// Lines kept per delivery (the first; the rest is counted in `dropped`).
pub const MAX_LINES: usize = 48;
/// Characters kept of one argument, reply or value.
pub const MAX_TEXT: usize = 96;

/// One delivery's (or one request's) trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    /// The queue entry (worker), or the request's `Idempotency-Key` (api).
    pub delivery_id: String,
    /// The worker's consumer name, or `api`.
    pub worker: String,
    /// The process that ran it (`<pid>-<start ms>`): two attempts by one worker
    /// name across a crash have different instances.
    pub instance: String,
    /// Which delivery of this queue entry it was (1: the first), from the
    /// queue's delivery count; for a request, 1.
    pub attempt: u64,
    /// When it started (unix ms); the lines' `atMs` count from here.
    pub started_ms: u64,
    pub lines: Vec<Line>,
    /// Lines left out past [`MAX_LINES`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One line of a trace, `at_ms` after the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    pub at_ms: u64,
    #[serde(flatten)]
    pub what: Traced,
}

/// What a line records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Traced {
    /// A command the student's code sent (directly, or through a helper of the
    /// context: then `helper` names it), and Redis's reply.
    #[serde(rename_all = "camelCase")]
    Command {
        args: Vec<String>,
        reply: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        helper: Option<String>,
    },
    /// A key the student's code wrote, as Redis held it at this moment
    /// (`pttl_ms`: -1 no expiry, -2 no such key).
    #[serde(rename_all = "camelCase")]
    Key {
        key: String,
        value: Option<String>,
        pttl_ms: i64,
    },
    /// A step of the plumbing around the student's code.
    Step { step: Step, detail: String },
}

/// The plumbing's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The delivery reached `process_job` (detail: how it was read).
    Delivered,
    /// The side effect is about to be sent (the key snapshots follow when it
    /// is about to crash or stall).
    Effect,
    /// The side effect was sent.
    EffectSent,
    /// The side effect failed (detail: why).
    EffectFailed,
    /// The student's code recorded a skipped duplicate (detail: the key it named).
    Skipped,
    /// The process is about to die on purpose (a simulated crash).
    Crashed,
    /// The student's code returned (detail: `ok`, `retry-later: ...`, ...).
    Returned,
    /// The student's code returned from one of its functions (api: `begin`,
    /// `finish`, `release`; detail: what it returned).
    Called,
}

impl Trace {
    /// The commands, in order, with their lines' times.
    pub fn commands(&self) -> impl Iterator<Item = (u64, &[String], &str)> {
        self.lines.iter().filter_map(|line| match &line.what {
            Traced::Command { args, reply, .. } => {
                Some((line.at_ms, args.as_slice(), reply.as_str()))
            }
            _ => None,
        })
    }

    /// Whether the plumbing recorded `step`.
    pub fn has_step(&self, step: Step) -> bool {
        self.steps().any(|(s, _)| s == step)
    }

    /// The index of the first line that records `step`.
    pub fn line_of(&self, step: Step) -> Option<usize> {
        self.lines
            .iter()
            .position(|line| matches!(line.what, Traced::Step { step: s, .. } if s == step))
    }

    /// The plumbing's steps, in order, with their details.
    pub fn steps(&self) -> impl Iterator<Item = (Step, &str)> {
        self.lines.iter().filter_map(|line| match &line.what {
            Traced::Step { step, detail } => Some((*step, detail.as_str())),
            _ => None,
        })
    }

    /// The key snapshots taken at `step` (the lines right after it).
    pub fn keys_at(&self, step: Step) -> Vec<(&str, Option<&str>, i64)> {
        let mut at = false;
        let mut keys = Vec::new();
        for line in &self.lines {
            match &line.what {
                Traced::Step { step: s, .. } => {
                    if at {
                        break;
                    }
                    at = *s == step;
                }
                Traced::Key {
                    key,
                    value,
                    pttl_ms,
                } if at => keys.push((key.as_str(), value.as_deref(), *pttl_ms)),
                _ => {}
            }
        }
        keys
    }

    /// One line per trace line, for a student: `+12ms SET k v NX PX 3000 -> OK`.
    pub fn render(&self) -> Vec<String> {
        self.lines
            .iter()
            .map(|line| format!("+{}ms {}", line.at_ms, line.what.render()))
            .collect()
    }
}

impl Traced {
    /// The line as a student reads it.
    pub fn render(&self) -> String {
        match self {
            Traced::Command {
                args,
                reply,
                helper,
            } => {
                let via = helper
                    .as_deref()
                    .map(|h| format!(" (ctx.{h})"))
                    .unwrap_or_default();
                format!("{}{via} -> {reply}", args.join(" "))
            }
            Traced::Key {
                key,
                value,
                pttl_ms,
            } => {
                let value = value.as_deref().unwrap_or("(no such key)");
                let ttl = match pttl_ms {
                    -1 => "no expiry".to_string(),
                    -2 => "gone".to_string(),
                    ms => format!("expires in {}", human_ms(*ms as u64)),
                };
                format!("  {key} = {value} ({ttl})")
            }
            Traced::Step { step, detail } if detail.is_empty() => format!("[{}]", step.name()),
            Traced::Step { step, detail } => format!("[{}] {detail}", step.name()),
        }
    }
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Delivered => "delivered",
            Step::Effect => "effect",
            Step::EffectSent => "effect sent",
            Step::EffectFailed => "effect failed",
            Step::Skipped => "duplicate skipped",
            Step::Crashed => "crashed",
            Step::Returned => "returned",
            Step::Called => "returned from",
        }
    }
}

/// `text` cut to [`MAX_TEXT`] characters (with `…` when cut).
pub fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_TEXT {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_TEXT - 1).collect();
    cut.push('…');
    cut
}

/// A duration for a student: `850 ms`, `3.0 s`, `24 h 0 min`.
pub fn human_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=119_999 => format!("{:.1} s", ms as f64 / 1000.0),
        120_000..=7_199_999 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// Where a TTL-bearing write of `key` set its expiry, read from a command's
/// arguments: `SET k v ... EX s | PX ms | EXAT | PXAT`, `EXPIRE k s`,
/// `PEXPIRE k ms`, `SETEX k s v`, `PSETEX k ms v`. `Some(None)`: written with no
/// expiry; `None`: the command does not write `key`'s value or expiry.
pub fn expiry_written(args: &[String], key: &str) -> Option<Option<u64>> {
    let name = args.first()?.to_ascii_uppercase();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let number = |i: usize| arg(i).and_then(|a| a.parse::<u64>().ok());
    if arg(1) != Some(key) {
        return None;
    }
    match name.as_str() {
        "SET" => {
            let mut i = 3;
            while i < args.len() {
                match args[i].to_ascii_uppercase().as_str() {
                    "EX" => return Some(number(i + 1).map(|s| s * 1000)),
                    "PX" => return Some(number(i + 1)),
                    "KEEPTTL" => return None,
                    _ => {}
                }
                i += 1;
            }
            Some(None)
        }
        "SETEX" => Some(number(2).map(|s| s * 1000)),
        "PSETEX" => Some(number(2)),
        "EXPIRE" => Some(number(2).map(|s| s * 1000)),
        "PEXPIRE" => Some(number(2)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn expiry_is_read_from_each_form_of_write() {
        assert_eq!(
            expiry_written(&args("SET k v NX PX 3000"), "k"),
            Some(Some(3000))
        );
        assert_eq!(
            expiry_written(&args("set k v ex 60 nx get"), "k"),
            Some(Some(60_000))
        );
        assert_eq!(expiry_written(&args("SET k v NX"), "k"), Some(None));
        assert_eq!(expiry_written(&args("SETEX k 5 v"), "k"), Some(Some(5000)));
        assert_eq!(expiry_written(&args("PEXPIRE k 250"), "k"), Some(Some(250)));
        assert_eq!(expiry_written(&args("SET other v PX 1"), "k"), None);
        assert_eq!(expiry_written(&args("GET k"), "k"), None);
        assert_eq!(expiry_written(&args("SET k v KEEPTTL"), "k"), None);
    }

    #[test]
    fn a_trace_reads_back_as_written_and_renders_for_a_student() {
        let trace = Trace {
            delivery_id: "1-0".into(),
            worker: "worker-1".into(),
            instance: "7-1".into(),
            attempt: 1,
            started_ms: 1000,
            lines: vec![
                Line {
                    at_ms: 0,
                    what: Traced::Step {
                        step: Step::Delivered,
                        detail: "new".into(),
                    },
                },
                Line {
                    at_ms: 2,
                    what: Traced::Command {
                        args: args("SET processed:email:j processing:x NX PX 3000"),
                        reply: "OK".into(),
                        helper: None,
                    },
                },
                Line {
                    at_ms: 3,
                    what: Traced::Step {
                        step: Step::Effect,
                        detail: String::new(),
                    },
                },
                Line {
                    at_ms: 4,
                    what: Traced::Key {
                        key: "processed:email:j".into(),
                        value: Some("processing:x".into()),
                        pttl_ms: 2998,
                    },
                },
                Line {
                    at_ms: 205,
                    what: Traced::Step {
                        step: Step::EffectSent,
                        detail: String::new(),
                    },
                },
            ],
            dropped: 0,
        };
        let json = serde_json::to_string(&trace).unwrap();
        assert!(json.contains(r#""kind":"command""#), "{json}");
        assert_eq!(serde_json::from_str::<Trace>(&json).unwrap(), trace);
        assert_eq!(
            trace.keys_at(Step::Effect),
            vec![("processed:email:j", Some("processing:x"), 2998)]
        );
        assert_eq!(
            trace.render()[1],
            "+2ms SET processed:email:j processing:x NX PX 3000 -> OK"
        );
        assert_eq!(
            trace.render()[3],
            "+4ms   processed:email:j = processing:x (expires in 3.0 s)"
        );
    }

    #[test]
    fn long_texts_are_cut_and_durations_read_as_people_say_them() {
        assert_eq!(shorten(&"x".repeat(200)).chars().count(), MAX_TEXT);
        assert_eq!(human_ms(86_400_000), "24 h 0 min");
        assert_eq!(human_ms(2_500), "2.5 s");
        assert_eq!(human_ms(300_000), "5 min 0 s");
    }
}
