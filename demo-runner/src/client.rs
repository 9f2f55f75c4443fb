//! The HTTP calls the scenarios make to the API. Students need not edit this file.

use std::time::Duration;

use anyhow::{Context, bail};
use lab_runtime::backoff::Backoff;
use lab_schema::code::RunningWorkers;
use lab_schema::provider::{self, Faults, RunRequests};
use lab_schema::trace::Trace;
use lab_schema::{Exercise, JobView, RunAttempts, RunEvents, RunSummary};
use serde_json::json;

/// Attempts of one request while the API answers 5xx or cannot be reached.
const SUBMIT_ATTEMPTS: u32 = 8;

/// The retry delays of a request: 100 ms doubling to 2 s, about 10 s over
/// [`SUBMIT_ATTEMPTS`] attempts, as a real client waits out a Redis restart.
pub(crate) fn request_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
}

/// Where the provider (exercise 3's payment gateway) answers when nobody says.
pub const DEFAULT_PROVIDER_URL: &str = "http://127.0.0.1:8090";

/// A client for the lab's API at one base URL, and for the provider's request
/// log (cheap to clone).
#[derive(Clone)]
pub struct Api {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    provider: String,
    /// Submissions ask the worker to trace their jobs (see `lab_schema::trace`).
    trace: bool,
    /// Submissions ask for this lease (payload `leaseMs`) unless they name one.
    lease_ms: Option<u64>,
}

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Api> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--api-url must start with http:// (got {base:?})");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Api {
            http,
            base,
            provider: DEFAULT_PROVIDER_URL.to_string(),
            trace: true,
            lease_ms: None,
        })
    }

    /// The same client; its submissions ask for a trace of their jobs when
    /// `trace` (the default: `verify` and the scenarios diagnose from it; a
    /// benchmark measures without).
    pub fn tracing(mut self, trace: bool) -> Api {
        self.trace = trace;
        self
    }

    /// The same client; its submissions give their jobs this lease (`ctx.lease_ms`,
    /// payload `leaseMs`) unless their payload names one (`None`: the workers'
    /// `--lease-ms`). `verify` times its checks with a lease it chose.
    pub fn leasing(mut self, lease_ms: Option<u64>) -> Api {
        self.lease_ms = lease_ms;
        self
    }

    /// `GET /runs/{runId}/traces`: what exercise 4's code did on each
    /// `POST /orders` of the run, oldest first.
    pub async fn request_traces(&self, run_id: &str) -> anyhow::Result<Vec<Trace>> {
        let url = format!("{}/runs/{run_id}/traces", self.base);
        let mut answer: serde_json::Value = self.get_json(&url).await?;
        Ok(serde_json::from_value(answer["requests"].take())?)
    }

    /// `GET /jobs/{jobId}/trace`: what the handler did on each traced delivery
    /// of the job, oldest first.
    pub async fn job_trace(&self, job_id: &str) -> anyhow::Result<Vec<Trace>> {
        let url = format!("{}/jobs/{job_id}/trace", self.base);
        let mut answer: serde_json::Value = self.get_json(&url).await?;
        Ok(serde_json::from_value(answer["deliveries"].take())?)
    }

    /// `GET /jobs/{jobId}/probe`: what exercise 5's policy answered a probe
    /// job; `None` while the worker has not written it.
    pub async fn job_probe(
        &self,
        job_id: &str,
    ) -> anyhow::Result<Option<lab_schema::probe::ProbeReport>> {
        let url = format!("{}/jobs/{job_id}/probe", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("{url}: {}", short_reason(&err)))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            bail!("{url} answered {}", response.status());
        }
        Ok(Some(
            response
                .json()
                .await
                .with_context(|| format!("{url}: not a probe report"))?,
        ))
    }

    /// The same client, reading the provider at `url` (`--provider-url`).
    pub fn with_provider(mut self, url: &str) -> Api {
        self.provider = url.trim_end_matches('/').to_string();
        self
    }

    /// `GET /admin/faults` of the provider, or `PUT` it with `set` first: the
    /// faults of the whole provider (an outage, slow answers).
    pub async fn provider_faults(&self, set: Option<&Faults>) -> anyhow::Result<Faults> {
        let url = format!("{}{}", self.provider, provider::ADMIN_FAULTS_PATH);
        let unreachable = |err: reqwest::Error| {
            anyhow::anyhow!(
                "cannot reach the provider at {} ({}). Is the stack running?",
                self.provider,
                short_reason(&err)
            )
        };
        let response = match set {
            Some(faults) => self.http.put(&url).json(faults).send().await,
            None => self.http.get(&url).send().await,
        }
        .map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("{url} answered {status}: {text}");
        }
        response
            .json()
            .await
            .with_context(|| format!("{url}: unexpected response"))
    }

    /// `GET /workers`: the workers running now and the code each was built from.
    pub async fn workers(&self) -> anyhow::Result<RunningWorkers> {
        self.get_json(&format!("{}/workers", self.base)).await
    }

    /// `GET /v1/runs/{runId}/requests` of the provider: every charge request of
    /// the run and what the provider did with it, oldest first.
    pub async fn provider_requests(&self, run_id: &str) -> anyhow::Result<RunRequests> {
        let url = format!("{}{}", self.provider, provider::requests_path(run_id));
        self.get_json(&url).await.with_context(|| {
            format!(
                "reading the provider's request log at {} (is the provider running? \
                 ./lab status, or docker compose ps)",
                self.provider
            )
        })
    }

    /// Fails with one clear line when the API is down or cannot reach Redis.
    pub async fn check_ready(&self) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.base);
        let response = self.http.get(&url).send().await.map_err(|err| {
            anyhow::anyhow!(
                "cannot reach the API at {} ({}). Is the stack running? (docker compose up --build -d, or ./lab up)",
                self.base,
                short_reason(&err)
            )
        })?;
        if !response.status().is_success() {
            bail!(
                "the API at {} is up but not ready ({}): it cannot reach Redis",
                self.base,
                response.status()
            );
        }
        Ok(())
    }

    /// `POST /jobs` with the lab's usual payload; see [`Api::submit_with`].
    pub async fn submit(&self, job_id: &str, run_id: &str) -> anyhow::Result<u32> {
        self.submit_with(job_id, run_id, json!({ "template": "welcome-email" }))
            .await
    }

    /// `POST /jobs` with this payload (e.g. `{"simulateEffectFailure": "once"}`),
    /// retried with capped backoff (100 ms doubling to 2 s, about 10 s in all)
    /// while the API answers 5xx or cannot be reached, as a real client does.
    /// Returns how many retries it took. A retry is itself a source of
    /// duplicates: the first attempt may have been enqueued before its answer was lost.
    pub async fn submit_with(
        &self,
        job_id: &str,
        run_id: &str,
        payload: serde_json::Value,
    ) -> anyhow::Result<u32> {
        self.submit_to(Exercise::default(), job_id, run_id, payload)
            .await
    }

    /// [`Api::submit_with`] for a job of `exercise` (its handler runs the job).
    pub async fn submit_to(
        &self,
        exercise: Exercise,
        job_id: &str,
        run_id: &str,
        payload: serde_json::Value,
    ) -> anyhow::Result<u32> {
        self.submit_for(exercise, None, job_id, run_id, payload)
            .await
    }

    /// [`Api::submit_to`] for the business pipeline `pipeline` (`None`: the
    /// workers' own `--pipeline`).
    pub async fn submit_for(
        &self,
        exercise: Exercise,
        pipeline: Option<&str>,
        job_id: &str,
        run_id: &str,
        payload: serde_json::Value,
    ) -> anyhow::Result<u32> {
        let url = format!("{}/jobs", self.base);
        let mut payload = payload;
        if let (Some(ms), Some(fields)) = (self.lease_ms, payload.as_object_mut()) {
            fields
                .entry(lab_schema::payload::LEASE_MS)
                .or_insert(json!(ms));
        }
        let mut body = json!({ "jobId": job_id, "runId": run_id, "payload": payload });
        if exercise != Exercise::default() {
            body["exercise"] = json!(exercise.number());
        }
        if let Some(pipeline) = pipeline {
            body["pipeline"] = json!(pipeline);
        }
        if self.trace {
            body["trace"] = json!(true);
        }
        let mut backoff = request_backoff();
        for attempt in 1..=SUBMIT_ATTEMPTS {
            let last = attempt == SUBMIT_ATTEMPTS;
            match self.http.post(&url).json(&body).send().await {
                Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                    return Ok(attempt - 1);
                }
                Ok(response) if response.status().is_server_error() && !last => {}
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    bail!("POST /jobs for {job_id} answered {status}: {text}");
                }
                Err(err) if last => {
                    bail!("POST /jobs for {job_id} failed: {}", short_reason(&err))
                }
                Err(_) => {}
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
        unreachable!("the last attempt returns")
    }

    /// `POST /jobs` of an order email (exercise 6) with an enqueue-time unique
    /// lock (`lab_schema::order_email::unique_lock`): enqueued, or dropped
    /// because another job holds the lock. One request, not retried.
    pub async fn submit_unique(
        &self,
        job_id: &str,
        run_id: &str,
        payload: serde_json::Value,
        lock: serde_json::Value,
    ) -> anyhow::Result<Enqueued> {
        let mut body = json!({
            "jobId": job_id,
            "runId": run_id,
            "payload": payload,
            "exercise": Exercise::NewJobId.number(),
            "uniqueLock": lock,
        });
        if self.trace {
            body["trace"] = json!(true);
        }
        let url = format!("{}/jobs", self.base);
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("POST /jobs for {job_id}: {}", short_reason(&err)))?;
        let status = response.status();
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        match status {
            reqwest::StatusCode::ACCEPTED => Ok(Enqueued::Accepted),
            reqwest::StatusCode::OK if answer["deduplicated"] == json!(true) => {
                Ok(Enqueued::Deduplicated {
                    locked_by: answer["lockedBy"].as_str().unwrap_or("").to_string(),
                })
            }
            _ => bail!("POST /jobs for {job_id} answered {status}: {answer}"),
        }
    }

    /// One `POST /jobs`, not retried: the answer's status, or why there was none.
    pub async fn post_job(&self, job_id: &str, run_id: &str) -> Posted {
        self.post_job_for(
            Exercise::default(),
            job_id,
            run_id,
            json!({ "template": "welcome-email" }),
        )
        .await
    }

    /// [`Api::post_job`] for a job of `exercise`, with `payload`.
    pub async fn post_job_for(
        &self,
        exercise: Exercise,
        job_id: &str,
        run_id: &str,
        payload: serde_json::Value,
    ) -> Posted {
        let mut body = json!({ "jobId": job_id, "runId": run_id, "payload": payload });
        if exercise != Exercise::default() {
            body["exercise"] = json!(exercise.number());
        }
        match self
            .http
            .post(format!("{}/jobs", self.base))
            .json(&body)
            .send()
            .await
        {
            Ok(response) => Posted::Status(response.status().as_u16()),
            Err(err) => Posted::NoAnswer(short_reason(&err)),
        }
    }

    /// `GET /jobs/{jobId}`.
    pub async fn job(&self, job_id: &str) -> anyhow::Result<JobView> {
        self.get_json(&format!("{}/jobs/{job_id}", self.base)).await
    }

    /// `GET /runs/{runId}`.
    pub async fn run(&self, run_id: &str) -> anyhow::Result<RunSummary> {
        self.get_json(&format!("{}/runs/{run_id}", self.base)).await
    }

    /// `GET /runs/{runId}/events`: what the workers did in the run, oldest first.
    pub async fn events(&self, run_id: &str) -> anyhow::Result<RunEvents> {
        self.get_json(&format!("{}/runs/{run_id}/events", self.base))
            .await
    }

    /// `GET /runs/{runId}/attempts`: the run's delivery attempts still out.
    pub async fn attempts(&self, run_id: &str) -> anyhow::Result<RunAttempts> {
        self.get_json(&format!("{}/runs/{run_id}/attempts", self.base))
            .await
    }

    /// A GET, retried like [`Api::submit`] while the API answers 5xx or cannot
    /// be reached (Redis restarting must not end a scenario that waits for a run).
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> anyhow::Result<T> {
        let mut backoff = request_backoff();
        let mut attempt = 1;
        let response = loop {
            let last = attempt == SUBMIT_ATTEMPTS;
            match self.http.get(url).send().await {
                Ok(response) if !response.status().is_server_error() || last => break response,
                Ok(_) => {}
                Err(err) if last => bail!("GET {url} failed: {}", short_reason(&err)),
                Err(_) => {}
            }
            tokio::time::sleep(backoff.next_delay()).await;
            attempt += 1;
        };
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("GET {url} answered {status}: {text}");
        }
        response
            .json()
            .await
            .with_context(|| format!("GET {url}: unexpected response"))
    }
}

/// What one `POST /jobs` got back.
pub enum Posted {
    Status(u16),
    /// No answer (connection refused, timeout), with the reason.
    NoAnswer(String),
}

/// The innermost cause of a request error ("Connection refused"), not the whole chain.
pub(crate) fn short_reason(err: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = err;
    while let Some(next) = source.source() {
        source = next;
    }
    if err.is_timeout() {
        "timed out".to_string()
    } else {
        source.to_string()
    }
}

/// What `POST /jobs` with a unique lock answered ([`Api::submit_unique`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// `202`: enqueued.
    Accepted,
    /// `200` with `"deduplicated": true`: dropped, the lock held by another job.
    Deduplicated { locked_by: String },
}
