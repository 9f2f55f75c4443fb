//! What the traces of a job's deliveries say about the student's mechanism
//! (see `lab_schema::trace`): the claim each holder wrote (key, value, TTL),
//! the claim as a crashed or paused holder left it, whether two holders wrote
//! the same lease, and the lines that show it to the student. Pure functions of
//! the traces, unit-tested without a stack. Students need not edit this file.

use lab_schema::trace::{Step, Trace, expiry_written, human_ms};

/// How a holder wrote its claim: the first key its code wrote a value to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimWrite {
    pub key: String,
    /// The value written (`None`: written by a script, whose value the trace
    /// does not show).
    pub value: Option<String>,
    /// The expiry the write set, in ms (`Some(None)`: none; `None`: not known).
    pub ttl_ms: Option<Option<u64>>,
}

/// The claim `trace`'s code wrote first: `SET`/`SETNX`/`SETEX`/`PSETEX` or a
/// script's first key, with the TTL that write (or a following `EXPIRE` of the
/// same key) gave it.
pub(crate) fn claim_write(trace: &Trace) -> Option<ClaimWrite> {
    let commands: Vec<&[String]> = trace.commands().map(|(_, args, _)| args).collect();
    let (i, args) = first_claim_command(trace)?;
    let name = args[0].to_ascii_uppercase();
    if name.starts_with("EVAL") {
        let key = (args.get(2)? != "0").then(|| args.get(3).cloned())??;
        return Some(ClaimWrite {
            key,
            value: None,
            ttl_ms: None,
        });
    }
    let key = args.get(1)?.clone();
    let value = match name.as_str() {
        "SETEX" | "PSETEX" => args.get(3).cloned(),
        _ => args.get(2).cloned(),
    };
    let written = match name.as_str() {
        "SETNX" => Some(None),
        _ => expiry_written(args, &key),
    };
    let ttl_ms = or_expired_later(written, &key, commands[i + 1..].iter().copied());
    Some(ClaimWrite { key, value, ttl_ms })
}

/// The first command of `trace` that writes a claim (`SET`, `SETNX`, `SETEX`,
/// `PSETEX` or a script), with its index among the trace's commands.
pub(crate) fn first_claim_command(trace: &Trace) -> Option<(usize, &[String])> {
    trace
        .commands()
        .map(|(_, args, _)| args)
        .enumerate()
        .find(|(_, args)| {
            let name = args
                .first()
                .map(|a| a.to_ascii_uppercase())
                .unwrap_or_default();
            matches!(
                name.as_str(),
                "SET" | "SETNX" | "SETEX" | "PSETEX" | "EVAL" | "EVALSHA"
            )
        })
}

/// The expiry a write of `key` set (`written`), or, when it set none, the one
/// a later command gave the key (`SETNX` / `SET` then `EXPIRE`).
fn or_expired_later<'a>(
    written: Option<Option<u64>>,
    key: &str,
    mut later: impl Iterator<Item = &'a [String]>,
) -> Option<Option<u64>> {
    match written {
        Some(None) => later
            .find_map(|args| expiry_written(args, key).filter(|t| t.is_some()))
            .or(Some(None)),
        ttl => ttl,
    }
}

/// How a holder marked its claim done after its effect: the first write,
/// after the effect was sent, of a value that says `done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DoneWrite {
    pub key: String,
    /// The expiry it set, in ms (`Some(None)`: none; `None`: not known, a script).
    pub ttl_ms: Option<Option<u64>>,
    /// Redis took it (not `(nil)`, `false` or `0`).
    pub taken: bool,
    /// When (unix ms).
    pub at_ms: u64,
    /// The command as the student reads it, with Redis's reply.
    pub command: String,
}

/// The `done` write of the delivery that sent the effect: `SET k done ...`,
/// `SETEX`/`PSETEX`, `ctx.compare_and_set(k, lease, done, ttl)`, or a script
/// given `done` (its first key); an `EXPIRE` of the key right after counts.
pub(crate) fn done_write(trace: &Trace) -> Option<DoneWrite> {
    let sent = trace.line_of(Step::EffectSent)?;
    let says_done = |a: &String| a.to_ascii_lowercase().contains("done");
    let commands: Vec<(&[String], &str, String, u64)> = trace.lines[sent..]
        .iter()
        .filter_map(|line| match &line.what {
            lab_schema::trace::Traced::Command { args, reply, .. } => Some((
                args.as_slice(),
                reply.as_str(),
                line.what.render(),
                trace.started_ms + line.at_ms,
            )),
            _ => None,
        })
        .collect();
    for (i, (args, reply, command, at_ms)) in commands.iter().enumerate() {
        let name = args
            .first()
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default();
        let arg = |i: usize| args.get(i).cloned();
        // SET k v; SETEX / PSETEX k ttl v.
        let value_at = if name == "SET" { 2 } else { 3 };
        let (key, ttl_ms) = match name.as_str() {
            "SET" | "SETEX" | "PSETEX" if args.get(value_at).is_some_and(says_done) => {
                let key = arg(1)?;
                let ttl = expiry_written(args, &key);
                (key, ttl)
            }
            "COMPARE_AND_SET" if args.get(3).is_some_and(says_done) => {
                let secs = args.get(4).and_then(|s| s.parse::<u64>().ok());
                (arg(1)?, secs.map(|s| Some(s * 1000)))
            }
            "EVAL" | "EVALSHA" if args.iter().skip(3).any(says_done) => {
                let key = (args.get(2)? != "0").then(|| arg(3))??;
                (key, None)
            }
            _ => continue,
        };
        let later = commands[i + 1..].iter().map(|(later, ..)| *later);
        let ttl_ms = or_expired_later(ttl_ms, &key, later);
        let taken = !matches!(*reply, "(nil)" | "false" | "0");
        return Some(DoneWrite {
            key,
            ttl_ms,
            taken,
            at_ms: *at_ms,
            command: command.clone(),
        });
    }
    None
}

/// The trace of the delivery whose process crashed on purpose.
pub(crate) fn crashed(traces: &[Trace]) -> Option<&Trace> {
    traces.iter().find(|t| t.has_step(Step::Crashed))
}

/// The claim as Redis held it when the effect was about to crash or stall
/// (the keys are read then, see `lab_schema::trace`): the first
/// key the code had written (its value, and its PTTL in ms).
pub(crate) fn at_effect(trace: &Trace) -> Option<(String, Option<String>, i64)> {
    trace
        .keys_at(Step::Effect)
        .first()
        .map(|(k, v, t)| (k.to_string(), v.map(str::to_string), *t))
}

/// Two holders (different attempts) that wrote the same lease (a claim
/// written with a TTL of at most `lease_bound_ms`): the value, and the two
/// traces. A claim written for longer is not a lease, and other checks judge it.
pub(crate) fn shared_token(
    traces: &[Trace],
    lease_bound_ms: u64,
) -> Option<(String, &Trace, &Trace)> {
    let written: Vec<(String, &Trace)> = traces
        .iter()
        .filter_map(|t| {
            let claim = claim_write(t)?;
            let lease = matches!(claim.ttl_ms, Some(Some(ms)) if ms <= lease_bound_ms);
            lease.then_some(claim.value?).map(|v| (v, t))
        })
        .collect();
    for (i, (value, first)) in written.iter().enumerate() {
        if let Some((_, second)) = written[i + 1..].iter().find(|(v, t)| {
            v == value
                && (t.instance != first.instance
                    || t.attempt != first.attempt
                    || t.worker != first.worker)
        }) {
            return Some((value.clone(), first, second));
        }
    }
    None
}

/// What a job showed while a check waited for it: its deliveries and effects,
/// and how its last traced delivery returned.
pub(crate) fn observed(job: &lab_schema::JobView, traces: &[Trace]) -> String {
    use lab_schema::summary::plural;
    let mut seen = format!(
        "{} of the job, {}",
        plural(job.process_attempts, "delivery"),
        plural(job.effects, "effect")
    );
    if let Some(last) = traces.iter().rev().find(|t| !t.has_step(Step::Crashed))
        && let Some((_, returned)) = last.steps().find(|(s, _)| *s == Step::Returned)
    {
        seen.push_str(&format!("; its last delivery returned {returned}"));
    }
    seen
}

/// A claim's time to live as a student reads it.
pub(crate) fn ttl_text(ttl_ms: Option<u64>) -> String {
    match ttl_ms {
        None => "no expiry".to_string(),
        Some(ms) => format!("a TTL of {} ms ({})", group(ms), human_ms(ms)),
    }
}

/// `86400000` -> `86,400,000`.
pub(crate) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The few lines that show a diagnosis: each trace's header, then its lines,
/// at most `max` lines in all.
pub(crate) fn excerpt(traces: &[&Trace], max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for trace in traces {
        if out.len() >= max {
            break;
        }
        out.push(if trace.worker == "api" {
            format!("request {}:", trace.delivery_id)
        } else {
            format!(
                "delivery {} (attempt {}) on {}:",
                trace.delivery_id, trace.attempt, trace.worker
            )
        });
        let lines = trace.lines.iter().filter(|l| {
            !matches!(
                l.what,
                lab_schema::trace::Traced::Step {
                    step: Step::Delivered,
                    ..
                }
            )
        });
        for line in lines.map(|l| format!("+{}ms {}", l.at_ms, l.what.render())) {
            if out.len() >= max {
                out.push("  ...".to_string());
                break;
            }
            out.push(format!("  {line}"));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lab_schema::trace::{Line, Traced};

    /// A trace from a compact script: `> SET k v NX PX 3000 = OK` for a command,
    /// `! effect` for a step, `@ k v 2900` for a key snapshot.
    pub(crate) fn trace(worker: &str, instance: &str, attempt: u64, script: &[&str]) -> Trace {
        let lines = script
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let what = match line.split_at(2) {
                    ("> ", rest) => {
                        let (args, reply) = rest.split_once(" = ").unwrap_or((rest, "OK"));
                        Traced::Command {
                            args: args.split(' ').map(str::to_string).collect(),
                            reply: reply.to_string(),
                            helper: None,
                        }
                    }
                    ("@ ", rest) => {
                        let parts: Vec<&str> = rest.split(' ').collect();
                        Traced::Key {
                            key: parts[0].to_string(),
                            value: (parts[1] != "-").then(|| parts[1].to_string()),
                            pttl_ms: parts[2].parse().unwrap(),
                        }
                    }
                    ("! ", rest) => {
                        let (step, detail) = rest.split_once(' ').unwrap_or((rest, ""));
                        Traced::Step {
                            step: serde_json::from_value(serde_json::json!(step)).unwrap(),
                            detail: detail.to_string(),
                        }
                    }
                    _ => panic!("bad script line {line}"),
                };
                Line {
                    at_ms: i as u64,
                    what,
                }
            })
            .collect();
        Trace {
            delivery_id: "1-0".into(),
            worker: worker.into(),
            instance: instance.into(),
            attempt,
            started_ms: 0,
            lines,
            dropped: 0,
        }
    }

    #[test]
    fn the_claim_is_the_first_set_with_its_ttl_wherever_it_was_given() {
        let t = trace(
            "w",
            "1",
            1,
            &["> SET k processing:a NX PX 3000", "> GET k = (nil)"],
        );
        assert_eq!(
            claim_write(&t),
            Some(ClaimWrite {
                key: "k".into(),
                value: Some("processing:a".into()),
                ttl_ms: Some(Some(3000))
            })
        );
        let t = trace("w", "1", 1, &["> SETNX k 1 = 1", "> EXPIRE k 86400 = 1"]);
        assert_eq!(claim_write(&t).unwrap().ttl_ms, Some(Some(86_400_000)));
        let t = trace("w", "1", 1, &["> SET k 1 NX"]);
        assert_eq!(claim_write(&t).unwrap().ttl_ms, Some(None));
        let t = trace("w", "1", 1, &["> EVALSHA abc 1 k v 3000 = 1"]);
        assert_eq!(claim_write(&t).unwrap().key, "k");
        assert_eq!(claim_write(&t).unwrap().value, None);
    }

    #[test]
    fn two_attempts_that_wrote_one_lease_value_share_a_token() {
        let a = trace("w1", "1", 1, &["> SET k processing:1-0 NX PX 3000"]);
        let b = trace("w1", "2", 2, &["> SET k processing:1-0 NX PX 3000 = (nil)"]);
        let c = trace("w2", "3", 1, &["> SET k processing:w2/1-0/99 NX PX 3000"]);
        let three = [a.clone(), c.clone(), b.clone()];
        let (value, _, second) = shared_token(&three, 12_000).unwrap();
        assert_eq!(value, "processing:1-0");
        assert_eq!(second.instance, "2");
        let d = trace("w1", "2", 2, &["> SET k processing:w1/1-0/100 NX PX 3000"]);
        assert_eq!(shared_token(&[a.clone(), c, d], 12_000), None);
        // Exercise 1's claim, a day long, is not a lease: its own checks judge it.
        let one = trace("w1", "1", 1, &["> SET k 1 NX EX 86400"]);
        let again = trace("w1", "2", 2, &["> SET k 1 NX EX 86400 = (nil)"]);
        assert_eq!(shared_token(&[one, again], 12_000), None);
    }

    #[test]
    fn the_done_write_is_the_first_write_of_done_after_the_effect_with_its_ttl() {
        let before = "> SET k processing:a NX PX 1000";
        let helper = trace(
            "w",
            "1",
            1,
            &[
                before,
                "! effect",
                "! effect-sent",
                "> compare_and_set k processing:a done 1 = true",
            ],
        );
        let done = done_write(&helper).unwrap();
        assert_eq!(
            (done.key.as_str(), done.ttl_ms, done.taken),
            ("k", Some(Some(1000)), true)
        );
        assert_eq!(
            done.command,
            "compare_and_set k processing:a done 1 -> true"
        );
        let refused = trace(
            "w",
            "1",
            1,
            &[
                before,
                "! effect-sent",
                "> compare_and_set k processing:b done 86400 = false",
            ],
        );
        assert!(!done_write(&refused).unwrap().taken);
        let set_then_expire = trace(
            "w",
            "1",
            1,
            &[
                before,
                "! effect-sent",
                "> SET k done = OK",
                "> PEXPIRE k 500 = 1",
            ],
        );
        assert_eq!(
            done_write(&set_then_expire).unwrap().ttl_ms,
            Some(Some(500))
        );
        let forever = trace("w", "1", 1, &[before, "! effect-sent", "> SET k DONE = OK"]);
        assert_eq!(done_write(&forever).unwrap().ttl_ms, Some(None));
        let script = trace(
            "w",
            "1",
            1,
            &[
                before,
                "! effect-sent",
                "> EVALSHA f00 1 k processing:a done 86400 = 1",
            ],
        );
        assert_eq!(done_write(&script).unwrap().ttl_ms, None);
        // done written before the effect, or never: no done write after it.
        let early = trace(
            "w",
            "1",
            1,
            &["> SET k done NX EX 86400", "! effect-sent", "> DEL k = 1"],
        );
        assert_eq!(done_write(&early), None);
    }

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(group(86_400_000), "86,400,000");
        assert_eq!(group(999), "999");
        assert_eq!(ttl_text(Some(3000)), "a TTL of 3,000 ms (3.0 s)");
        assert_eq!(ttl_text(None), "no expiry");
    }
}
