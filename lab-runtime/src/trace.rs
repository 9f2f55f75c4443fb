//! Recording a trace (see `lab_schema::trace`): the Redis connection the
//! student's code is given, which writes down each command that passes through
//! it and its reply, and the recorder the plumbing adds its own steps to.
//! Students need not edit this file.
//!
//! Why a wrapper on the connection rather than watching Redis (MONITOR): the
//! wrapper knows which delivery or request sent each command, sees only the
//! student's commands (not the plumbing's, not other students' on a shared
//! Redis), costs nothing when the job is not traced (no recorder: the commands
//! go straight through), and needs no second connection per process.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use lab_schema::trace::{
    Line, MAX_DELIVERIES, MAX_LINES, MAX_REQUESTS, Step, Trace, Traced, shorten,
};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// One delivery's or request's trace while it is being recorded.
#[derive(Debug)]
pub struct Recorder {
    trace: Trace,
    started: Instant,
    /// The keys the student's commands wrote, in first-written order.
    written: Vec<String>,
}

/// A recorder shared by the connection the student's code holds and the plumbing.
pub type Shared = Arc<Mutex<Recorder>>;

impl Recorder {
    pub fn start(delivery_id: &str, worker: &str, instance: &str, attempt: u64) -> Shared {
        Arc::new(Mutex::new(Recorder {
            trace: Trace {
                delivery_id: delivery_id.to_string(),
                worker: worker.to_string(),
                instance: instance.to_string(),
                attempt,
                started_ms: lab_schema::now_ms(),
                lines: Vec::new(),
                dropped: 0,
            },
            started: Instant::now(),
            written: Vec::new(),
        }))
    }

    fn push(&mut self, what: Traced) {
        if self.trace.lines.len() >= MAX_LINES {
            self.trace.dropped += 1;
            return;
        }
        self.trace.lines.push(Line {
            at_ms: self.started.elapsed().as_millis() as u64,
            what,
        });
    }

    /// A command and its reply (`helper`: the context's helper that sent it).
    fn command(&mut self, args: Vec<String>, reply: String, helper: Option<&str>) {
        if let Some(key) = written_key(&args)
            && !self.written.contains(&key)
            && self.written.len() < 8
        {
            self.written.push(key);
        }
        self.push(Traced::Command {
            args,
            reply,
            helper: helper.map(str::to_string),
        });
    }
}

/// Adds a plumbing step to `recorder`, if the delivery is traced.
pub fn step(recorder: Option<&Shared>, step: Step, detail: impl Into<String>) {
    if let Some(recorder) = recorder {
        lock(recorder).push(Traced::Step {
            step,
            detail: shorten(&detail.into()),
        });
    }
}

/// Records a helper's command (e.g. `compare_and_set`) the way the student
/// reads it: its name, its arguments and its answer.
pub fn helper(recorder: Option<&Shared>, name: &str, args: &[&str], reply: &str) {
    if let Some(recorder) = recorder {
        let args = args.iter().map(|a| shorten(a)).collect();
        lock(recorder).command(args, shorten(reply), Some(name));
    }
}

/// The finished trace.
pub fn finish(recorder: &Shared) -> Trace {
    lock(recorder).trace.clone()
}

fn lock(recorder: &Shared) -> std::sync::MutexGuard<'_, Recorder> {
    // A panic while recording cannot leave a trace half-written in a way that
    // matters: keep recording.
    recorder.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds the step `step_` (with `detail`), then every key the student's code
/// wrote so far under it: its value (if it holds a string) and time to live,
/// as `Key` lines. One round trip.
pub async fn snapshot(
    redis: &mut ConnectionManager,
    recorder: Option<&Shared>,
    step_: Step,
    detail: &str,
) {
    step(recorder, step_, detail);
    snapshot_keys(redis, recorder).await;
}

/// Every key the student's code wrote so far, as `Key` lines: its value (if it
/// holds a string) and time to live. One round trip (none when not traced or
/// nothing was written).
pub async fn snapshot_keys(redis: &mut ConnectionManager, recorder: Option<&Shared>) {
    let Some(recorder) = recorder else { return };
    let keys = lock(recorder).written.clone();
    if keys.is_empty() {
        return;
    }
    let mut invoke = SNAPSHOT.prepare_invoke();
    for key in &keys {
        invoke.key(key);
    }
    let read: redis::RedisResult<Vec<Value>> = invoke.invoke_async(redis).await;
    let mut recorder = lock(recorder);
    match read {
        Ok(values) => {
            for (key, pair) in keys.iter().zip(values.chunks(2)) {
                let [value, pttl] = pair else { continue };
                let value = match value {
                    Value::Nil => None,
                    Value::BulkString(bytes) => Some(shorten(&String::from_utf8_lossy(bytes))),
                    Value::SimpleString(kind) => Some(format!("(a {kind})")),
                    other => Some(render_reply(other)),
                };
                let pttl_ms = match pttl {
                    Value::Int(n) => *n,
                    _ => -2,
                };
                recorder.push(Traced::Key {
                    key: shorten(key),
                    value,
                    pttl_ms,
                });
            }
        }
        Err(err) => recorder.push(Traced::Step {
            step: Step::Effect,
            detail: shorten(&format!("(the keys could not be read: {err})")),
        }),
    }
}

/// Each key's value (a string's; a `{type}` status for anything else) and PTTL.
static SNAPSHOT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local out = {}
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key).ok
  if kind == 'string' then
    table.insert(out, redis.call('GET', key))
  elseif kind == 'none' then
    table.insert(out, false)
  else
    table.insert(out, {ok = kind})
  end
  table.insert(out, redis.call('PTTL', key))
end
return out
",
    )
});

/// Writes a finished trace into `pipe`: appended to the job's list, which keeps
/// the newest [`MAX_DELIVERIES`] and expires with the job's record.
pub fn write(pipe: &mut Pipeline, job_id: &str, trace: &Trace) {
    append(
        pipe,
        &lab_schema::keys::trace(job_id),
        trace,
        MAX_DELIVERIES,
    );
}

/// Writes a finished request trace into `pipe`: appended to its run's list,
/// which keeps the newest [`MAX_REQUESTS`] and expires with the run's records.
pub fn write_request(pipe: &mut Pipeline, run_id: &str, trace: &Trace) {
    append(
        pipe,
        &lab_schema::keys::request_traces(run_id),
        trace,
        MAX_REQUESTS,
    );
}

fn append(pipe: &mut Pipeline, key: &str, trace: &Trace, keep: usize) {
    let json = serde_json::to_string(trace).unwrap_or_default();
    pipe.rpush(key, json)
        .ignore()
        .ltrim(key, -(keep as isize), -1)
        .ignore()
        .expire(key, lab_schema::RECORD_TTL_SECS as i64)
        .ignore();
}

/// The key a command writes, if it writes one: the first key of a script
/// (`EVAL`/`EVALSHA`/`FCALL`), else the first argument of anything that is
/// not a read.
fn written_key(args: &[String]) -> Option<String> {
    let name = args.first()?.to_ascii_uppercase();
    const READS: &[&str] = &[
        "GET",
        "MGET",
        "EXISTS",
        "TTL",
        "PTTL",
        "TYPE",
        "STRLEN",
        "HGET",
        "HGETALL",
        "HMGET",
        "SCAN",
        "KEYS",
        "PING",
        "SCRIPT",
        "EXPIRETIME",
        "PEXPIRETIME",
    ];
    match name.as_str() {
        "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" | "FCALL" => {
            let n: usize = args.get(2)?.parse().ok()?;
            (n > 0).then(|| args.get(3).cloned()).flatten()
        }
        "MULTI" | "EXEC" | "DISCARD" | "WATCH" | "UNWATCH" => None,
        _ if READS.contains(&name.as_str()) => None,
        _ => args.get(1).cloned(),
    }
}

/// A reply as a student reads it: `OK`, `(nil)`, `"text"`, `1`, `[..]`.
pub fn render_reply(value: &Value) -> String {
    let text = match value {
        Value::Nil => "(nil)".to_string(),
        Value::Okay => "OK".to_string(),
        Value::Int(n) => n.to_string(),
        Value::SimpleString(s) => s.clone(),
        Value::BulkString(bytes) => format!("\"{}\"", String::from_utf8_lossy(bytes)),
        Value::Boolean(b) => b.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Array(items) | Value::Set(items) => format!(
            "[{}]",
            items
                .iter()
                .map(render_reply)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::ServerError(err) => format!("(error) {err:?}"),
        other => format!("{other:?}"),
    };
    shorten(&text)
}

fn render_args(cmd: &Cmd) -> Vec<String> {
    cmd.args_iter()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => shorten(&String::from_utf8_lossy(bytes)),
            _ => "(cursor)".to_string(),
        })
        .collect()
}

/// The Redis connection the student's code holds (`ctx.redis`): the lab's
/// connection, which records what passes through it when the delivery or
/// request is traced. Use it as any redis-rs connection:
/// `redis::cmd("SET")...query_async(&mut ctx.redis)`, `ctx.redis.get(key)`,
/// a pipeline, a script.
#[derive(Clone)]
pub struct TracedConnection {
    inner: ConnectionManager,
    recorder: Option<Shared>,
}

impl TracedConnection {
    /// `recorder`: `None` when not traced (the commands go straight through).
    pub fn new(inner: ConnectionManager, recorder: Option<Shared>) -> TracedConnection {
        TracedConnection { inner, recorder }
    }

    /// The recorder, for the plumbing's steps.
    pub fn recorder(&self) -> Option<&Shared> {
        self.recorder.as_ref()
    }

    /// The connection without the recording: the plumbing's own commands.
    pub fn untraced(&mut self) -> &mut ConnectionManager {
        &mut self.inner
    }
}

impl ConnectionLike for TracedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let reply = self.inner.req_packed_command(cmd).await;
            if let Some(recorder) = &self.recorder {
                let text = match &reply {
                    Ok(value) => render_reply(value),
                    Err(err) => shorten(&format!("(error) {err}")),
                };
                lock(recorder).command(render_args(cmd), text, None);
            }
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let replies = self
                .inner
                .req_packed_commands(pipeline, offset, count)
                .await;
            if let Some(recorder) = &self.recorder {
                let cmds: Vec<&Cmd> = pipeline.cmd_iter().collect();
                // A MULTI/EXEC pipeline answers with one array of the replies.
                let each: Option<&[Value]> = match &replies {
                    Ok(values) if values.len() == cmds.len() => Some(values),
                    Ok(values) => match values.as_slice() {
                        [Value::Array(inner)] if inner.len() == cmds.len() => Some(inner),
                        _ => None,
                    },
                    Err(_) => None,
                };
                let mut recorder = lock(recorder);
                for (i, cmd) in cmds.iter().enumerate() {
                    let reply = match (&replies, each) {
                        (_, Some(values)) => render_reply(&values[i]),
                        (Err(err), _) => shorten(&format!("(error, pipelined) {err}")),
                        _ => "(pipelined)".to_string(),
                    };
                    recorder.command(render_args(cmd), reply, None);
                }
            }
            replies
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn the_written_key_is_the_first_key_of_a_write_or_a_script() {
        assert_eq!(written_key(&args("SET k v NX")), Some("k".into()));
        assert_eq!(written_key(&args("GET k")), None);
        assert_eq!(written_key(&args("EVALSHA abc 1 k v")), Some("k".into()));
        assert_eq!(written_key(&args("EVAL body 0 v")), None);
        assert_eq!(written_key(&args("del k")), Some("k".into()));
    }

    #[test]
    fn replies_read_as_redis_cli_shows_them() {
        assert_eq!(render_reply(&Value::Nil), "(nil)");
        assert_eq!(render_reply(&Value::Okay), "OK");
        assert_eq!(
            render_reply(&Value::BulkString(b"done".to_vec())),
            "\"done\""
        );
        assert_eq!(
            render_reply(&Value::Array(vec![Value::Int(1), Value::Nil])),
            "[1, (nil)]"
        );
    }

    #[test]
    fn a_recorder_keeps_its_first_lines_and_counts_the_rest() {
        let recorder = Recorder::start("1-0", "w", "1-1", 1);
        for _ in 0..MAX_LINES + 5 {
            step(Some(&recorder), Step::Returned, "ok");
        }
        let trace = finish(&recorder);
        assert_eq!(trace.lines.len(), MAX_LINES);
        assert_eq!(trace.dropped, 5);
    }
}
