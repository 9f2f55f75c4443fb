//! Run-time plumbing the lab's services share. Students need not edit this crate.
//!
//! `lab-schema` holds what crosses processes (Redis keys, job and summary
//! types); this crate holds the code the api, the worker, the provider and the
//! demo-runner run alike:
//! - [`backoff`]: the one retry delay policy (capped doubling) of every retry loop.
//! - [`fingerprint`]: a JSON body's canonical form and SHA-256 (the provider's and the orders' `Idempotency-Key` checks).
//! - `dropped` (feature `http`): the HTTP answer that never comes (a lost answer, on purpose).
//! - `headers` (feature `http`): one header's single value, read alike by the api and the provider.
//! - `record` (feature `service`): the effect ledger and event log writes that the worker and the provider share.
//! - `service` (feature `service`): logging, shutdown signal and Redis connection of the services.
//! - `trace` (feature `service`): the traced Redis connection the student's code holds, and the recorder.

pub mod backoff;
#[cfg(feature = "http")]
pub mod dropped;
pub mod fingerprint;
#[cfg(feature = "http")]
pub mod headers;
#[cfg(feature = "service")]
pub mod record;
#[cfg(feature = "service")]
pub mod service;
#[cfg(feature = "service")]
pub mod trace;
