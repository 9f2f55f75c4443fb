//! The worker's side of the exercise registry: which function handles a job of
//! each exercise. Plumbing: students need not edit this file.
//!
//! Adding an exercise adds its student file and one arm here; the compiler
//! refuses to build until every [`Exercise`] has its handler.

use lab_schema::Exercise;

use crate::Handler;
use crate::context::{Job, JobContext};

/// Runs every exercise's student function, routed by the job's `exercise` field.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exercises;

impl Handler for Exercises {
    async fn handle(&self, ctx: &mut JobContext, job: &Job) -> anyhow::Result<()> {
        match job.exercise {
            Exercise::DuplicateDelivery => crate::job::process_job(ctx, job).await,
            Exercise::CrashWindow => crate::crash_window::process_job(ctx, job).await,
            Exercise::DoubleCharge => crate::double_charge::process_job(ctx, job).await,
        }
    }
}
