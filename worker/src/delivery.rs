//! One delivery of a job, as read from the queue. Plumbing: students need not edit this file.

use lab_schema::{Exercise, entry, validate_id, validate_pipeline};
use redis::streams::StreamId;

/// One delivery of a job, as read from the queue.
#[derive(Debug, Clone)]
pub struct Job {
    /// The logical job: the same on every delivery of it.
    pub job_id: String,
    /// The demo run the job belongs to.
    pub run_id: String,
    /// The queue entry id: different on every delivery (a resubmission is a new entry).
    pub delivery_id: String,
    /// The submitted payload, as JSON text.
    pub payload: String,
    /// The exercise whose handler runs this job.
    pub exercise: Exercise,
    /// The pipeline the job was submitted for, if it named one.
    pub(crate) pipeline: Option<String>,
    /// Whether the submission asked for this job's deliveries to be traced.
    pub(crate) trace: bool,
    /// What the payload asks of the plumbing (faults, a lease, a sooner redelivery).
    pub(crate) asks: crate::asks::Asks,
    /// How many attempts of this job failed and were scheduled again (0 on the
    /// first delivery): it travels with the queue entry, never in a worker's memory.
    pub failures: u32,
    /// When the job's first attempt failed (Unix ms); `None` until one did.
    pub first_failed_ms: Option<u64>,
}

impl Job {
    /// Reads a queue entry; an error says why the entry is unusable (it is then dead-lettered).
    pub(crate) fn from_entry(entry: &StreamId) -> Result<Job, String> {
        let field = |name: &str| -> Result<String, String> {
            entry
                .get::<String>(name)
                .ok_or_else(|| format!("field {name} is missing or not text"))
        };
        let job_id = field(entry::JOB_ID)?;
        validate_id("jobId", &job_id)?;
        let run_id = field(entry::RUN_ID)?;
        validate_id("runId", &run_id)?;
        let exercise = match entry.get::<String>(entry::EXERCISE) {
            None => Exercise::default(),
            Some(text) => text
                .parse::<u8>()
                .map_err(|_| format!("field {} is not a number: {text:?}", entry::EXERCISE))
                .and_then(Exercise::try_from)?,
        };
        let pipeline = entry.get::<String>(entry::PIPELINE);
        if let Some(pipeline) = &pipeline {
            validate_pipeline(pipeline)?;
        }
        let payload = entry.get::<String>(entry::PAYLOAD).unwrap_or_default();
        let number = |name: &str| {
            entry
                .get::<String>(name)
                .and_then(|t| t.parse::<u64>().ok())
        };
        Ok(Job {
            job_id,
            run_id,
            delivery_id: entry.id.clone(),
            asks: crate::asks::Asks::of(&payload),
            payload,
            exercise,
            pipeline,
            trace: entry.get::<String>(entry::TRACE).as_deref() == Some("1"),
            failures: number(entry::FAILURES).map_or(0, |n| n.min(u32::MAX as u64) as u32),
            first_failed_ms: number(entry::FIRST_FAILED_MS),
        })
    }
}
