//! The HTTP calls the scenarios make to the API. Students need not edit this file.

use std::time::Duration;

use anyhow::{Context, bail};
use lab_schema::{JobView, RunEvents, RunSummary};
use serde_json::json;

/// A client for the lab's API at one base URL (cheap to clone).
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
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
        Ok(Api { http, base })
    }

    /// Fails with one clear line when the API is down or cannot reach Redis.
    pub async fn check_ready(&self) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.base);
        let response = self.http.get(&url).send().await.map_err(|err| {
            anyhow::anyhow!(
                "cannot reach the API at {} ({}). Is the stack running? (./lab up)",
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

    /// `POST /jobs`, retried with backoff while the API answers 503 or cannot be reached.
    pub async fn submit(&self, job_id: &str, run_id: &str) -> anyhow::Result<()> {
        self.submit_with(job_id, run_id, json!({ "template": "welcome-email" }))
            .await
    }

    /// `POST /jobs` with this payload (e.g. `{"simulateEffectFailure": "once"}`).
    pub async fn submit_with(
        &self,
        job_id: &str,
        run_id: &str,
        payload: serde_json::Value,
    ) -> anyhow::Result<()> {
        let url = format!("{}/jobs", self.base);
        let body = json!({ "jobId": job_id, "runId": run_id, "payload": payload });
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=6 {
            let last = attempt == 6;
            match self.http.post(&url).json(&body).send().await {
                Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => return Ok(()),
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
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
        unreachable!("the last attempt returns")
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

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> anyhow::Result<T> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("GET {url} failed: {}", short_reason(&err)))?;
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

/// The innermost cause of a request error ("Connection refused"), not the whole chain.
fn short_reason(err: &reqwest::Error) -> String {
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
