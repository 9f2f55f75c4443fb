//! The worker's side of the exercise registry: which function handles a job of
//! each exercise. Plumbing: students need not edit this file.
//!
//! One entry per exercise: its student file, declared as a module below, and
//! its row in [`row`]: the handler and the source of the student file (whose
//! fingerprint the worker publishes). Adding an exercise adds its student file
//! and its entry here; the compiler refuses to build until every [`Exercise`]
//! has its row.

use std::future::Future;
use std::pin::Pin;

use lab_schema::Exercise;
use lab_schema::code::{Code, fingerprint};

use crate::Handler;
use crate::context::{Job, JobContext, JobError};

// The student files, one per exercise of the worker (next to this file in `src/`).
#[path = "crash_window.rs"]
pub mod crash_window;
#[path = "double_charge.rs"]
pub mod double_charge;
#[path = "job.rs"]
pub mod job;
#[path = "order_email.rs"]
pub mod order_email;
#[path = "retry_policy.rs"]
pub mod retry_policy;

/// The future of one handler call. Boxed: each exercise's future has a size of
/// its own, and a delivery of exercise 1 does not carry (and copy) the larger
/// state of exercise 3's HTTP call.
type Handling<'a> = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>>;

/// What the worker knows of one exercise.
struct Row {
    /// Runs one delivery of a job of the exercise.
    handle: for<'a> fn(&'a mut JobContext, &'a Job) -> Handling<'a>,
    /// The student file as it was when this binary was built (`None`: the file
    /// is built into the API, which publishes it itself).
    source: Option<&'static [u8]>,
}

/// The row of each exercise.
fn row(exercise: Exercise) -> Row {
    match exercise {
        Exercise::DuplicateDelivery => Row {
            handle: |ctx, job| Box::pin(job::process_job(ctx, job)),
            source: Some(include_bytes!("job.rs")),
        },
        Exercise::CrashWindow => Row {
            handle: |ctx, job| Box::pin(crash_window::process_job(ctx, job)),
            source: Some(include_bytes!("crash_window.rs")),
        },
        Exercise::DoubleCharge => Row {
            handle: |ctx, job| Box::pin(double_charge::process_job(ctx, job)),
            source: Some(include_bytes!("double_charge.rs")),
        },
        // Exercise 4's orders: its student file is in the API; the worker
        // processes each order with exercise 1's guard.
        Exercise::RetriedPost => Row {
            handle: |ctx, job| Box::pin(job::process_job(ctx, job)),
            source: None,
        },
        // Exercise 5's handler is plumbing (`retry_storm.rs`: exercise 3's
        // charge); the student file is the retry policy it asks.
        Exercise::RetryStorm => Row {
            handle: |ctx, job| Box::pin(crate::retry_storm::process_job(ctx, job)),
            source: Some(include_bytes!("retry_policy.rs")),
        },
        // Exercise 6's jobs go to the student file, but for the instructor's
        // unique-lock demonstration (`unique_lock.rs`), which says so in the payload.
        Exercise::NewJobId => Row {
            handle: |ctx, job| Box::pin(crate::unique_lock::process_job(ctx, job)),
            source: Some(include_bytes!("order_email.rs")),
        },
    }
}

/// Runs every exercise's student function, routed by the job's `exercise` field.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exercises;

impl Handler for Exercises {
    async fn handle(&self, ctx: &mut JobContext, job: &Job) -> Result<(), JobError> {
        (row(job.exercise).handle)(ctx, job).await
    }

    /// The fingerprint of each student file as this binary was built from it.
    fn code(&self) -> Code {
        let files = Exercise::ALL
            .iter()
            .filter_map(|&e| {
                let source = row(e).source?;
                Some((e.info().student_file.to_string(), fingerprint(source)))
            })
            .collect();
        Code { files }
    }
}
