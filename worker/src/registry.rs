//! The worker's side of the exercise registry: which function handles a job of
//! each exercise. Plumbing: students need not edit this file.
//!
//! Adding an exercise adds its student file and two arms here (its handler and
//! its source, whose fingerprint the worker publishes); the compiler refuses to
//! build until every [`Exercise`] has both.

use lab_schema::Exercise;
use lab_schema::code::{Code, fingerprint};

use crate::Handler;
use crate::context::{Job, JobContext, JobError};

/// Runs every exercise's student function, routed by the job's `exercise` field.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exercises;

impl Handler for Exercises {
    async fn handle(&self, ctx: &mut JobContext, job: &Job) -> Result<(), JobError> {
        // Each exercise's future in a box of its own size: a delivery of
        // exercise 1 does not carry (and copy) the larger state of exercise 3's
        // HTTP call.
        match job.exercise {
            Exercise::DuplicateDelivery => Box::pin(crate::job::process_job(ctx, job)).await,
            Exercise::CrashWindow => Box::pin(crate::crash_window::process_job(ctx, job)).await,
            Exercise::DoubleCharge => Box::pin(crate::double_charge::process_job(ctx, job)).await,
            // Exercise 4's orders: its student file is in the API; the worker
            // processes each order with exercise 1's guard.
            Exercise::RetriedPost => Box::pin(crate::job::process_job(ctx, job)).await,
        }
    }

    /// The fingerprint of each student file as this binary was built from it.
    fn code(&self) -> Code {
        let files = Exercise::ALL
            .iter()
            .filter_map(|&e| Some((e.info().student_file.to_string(), fingerprint(source(e)?))))
            .collect();
        Code { files }
    }
}

/// The student file of an exercise, as it was when this binary was built
/// (`None`: the file is built into the API, which publishes it itself).
fn source(exercise: Exercise) -> Option<&'static [u8]> {
    match exercise {
        Exercise::DuplicateDelivery => Some(include_bytes!("job.rs")),
        Exercise::CrashWindow => Some(include_bytes!("crash_window.rs")),
        Exercise::DoubleCharge => Some(include_bytes!("double_charge.rs")),
        Exercise::RetriedPost => None,
    }
}
