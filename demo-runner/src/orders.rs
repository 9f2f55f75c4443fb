//! The client side of exercise 4's `POST /orders`: one request and its whole
//! answer (an [`Exchange`], printable as raw HTTP), a client that retries the
//! way a phone app does, and the views of the orders the API created. Students
//! need not edit this file.

use std::time::Duration;

use anyhow::bail;
use lab_schema::orders::{
    IDEMPOTENCY_KEY, IdempotencyPolicy, LAB_RUN_ID, ORDERS_PATH, OrderView, POLICY_PATH, REPLAYED,
    RunOrders,
};
use serde_json::Value;

use crate::client::{Api, short_reason};

/// One `POST /orders` as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCall {
    /// `Authorization: Bearer <account>`.
    pub account: String,
    /// `Idempotency-Key`, if any.
    pub key: Option<String>,
    /// `Lab-Run-Id`.
    pub run_id: String,
    /// The body's exact text.
    pub body: String,
}

/// A request and what came back.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub call: OrderCall,
    /// `None`: the connection closed before any answer (a lost answer).
    pub status: Option<u16>,
    /// The answer's headers that matter here (content type, replay, retry-after).
    pub headers: Vec<(String, String)>,
    /// The answer's body, as text.
    pub body: String,
}

/// The headers an [`Exchange`] keeps.
const KEPT_HEADERS: [&str; 4] = ["content-type", REPLAYED, "retry-after", "link"];

impl Exchange {
    /// The answer says `Idempotent-Replayed: true`.
    pub fn replayed(&self) -> bool {
        self.header(REPLAYED) == Some("true")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The `orderId` of a 2xx answer.
    pub fn order_id(&self) -> Option<String> {
        let json = self.json()?;
        json["orderId"].as_str().map(str::to_string)
    }

    /// The `error.code` of an error answer.
    pub fn error_code(&self) -> Option<String> {
        // A refusal is problem details with the code as a member; other errors
        // are `{"error": {"code", "message"}}`.
        let json = self.json()?;
        json["code"]
            .as_str()
            .or(json["error"]["code"].as_str())
            .map(str::to_string)
    }

    /// `201`, `201 replayed`, `409 idempotency_key_in_flight`, `no answer`.
    pub fn outcome(&self) -> String {
        match self.status {
            None => "no answer".to_string(),
            Some(status) if self.replayed() => format!("{status} replayed"),
            Some(status) => match self.error_code() {
                Some(code) => format!("{status} {code}"),
                None => status.to_string(),
            },
        }
    }

    /// The exchange as raw HTTP/1.1 text: the request, then the answer.
    pub fn to_http(&self) -> String {
        let call = &self.call;
        let mut out = format!(
            "POST {ORDERS_PATH} HTTP/1.1\nAuthorization: Bearer {}\nContent-Type: application/json\nLab-Run-Id: {}\n",
            call.account, call.run_id
        );
        if let Some(key) = &call.key {
            out.push_str(&format!("Idempotency-Key: {key}\n"));
        }
        out.push_str(&format!("\n{}\n\n", call.body));
        match self.status {
            None => out.push_str("(the connection closed: no answer at all)\n"),
            Some(status) => {
                let reason = reqwest::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                out.push_str(&format!("HTTP/1.1 {status} {reason}\n"));
                for (name, value) in &self.headers {
                    out.push_str(&format!("{name}: {value}\n"));
                }
                out.push_str(&format!("\n{}\n", self.body));
            }
        }
        out
    }
}

impl Api {
    /// Sends one `POST /orders`, once. A connection that closes before the
    /// answer is an exchange without a status; an API that cannot be reached is an error.
    pub async fn post_order(&self, call: &OrderCall) -> anyhow::Result<Exchange> {
        let url = format!("{}{ORDERS_PATH}", self.base);
        let mut request = self
            .http
            .post(&url)
            .header("authorization", format!("Bearer {}", call.account))
            .header("content-type", "application/json")
            .header(LAB_RUN_ID, &call.run_id)
            .body(call.body.clone());
        if let Some(key) = &call.key {
            request = request.header(IDEMPOTENCY_KEY, key);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) if err.is_connect() => bail!(
                "cannot reach the API at {} ({}). Is the stack running?",
                self.base,
                short_reason(&err)
            ),
            Err(_) => {
                return Ok(Exchange {
                    call: call.clone(),
                    status: None,
                    headers: Vec::new(),
                    body: String::new(),
                });
            }
        };
        let status = response.status().as_u16();
        let headers = KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = response.headers().get(*name)?.to_str().ok()?;
                Some((name.to_string(), value.to_string()))
            })
            .collect();
        let body = response.text().await.unwrap_or_default();
        Ok(Exchange {
            call: call.clone(),
            status: Some(status),
            headers,
            body,
        })
    }

    /// Sends `call` the way a phone app does: again after no answer, a 5xx or a
    /// 409 (after its `Retry-After`), at most `tries` times in all. Every exchange, in order.
    pub async fn post_order_until_answered(
        &self,
        call: &OrderCall,
        tries: u32,
    ) -> anyhow::Result<Vec<Exchange>> {
        let mut exchanges = Vec::new();
        for _ in 0..tries.max(1) {
            let exchange = self.post_order(call).await?;
            let wait = match exchange.status {
                None => Some(Duration::from_millis(200)),
                Some(409) => Some(Duration::from_secs(
                    exchange
                        .header("retry-after")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(1),
                )),
                Some(status) if status >= 500 => Some(Duration::from_millis(200)),
                Some(_) => None,
            };
            exchanges.push(exchange);
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => break,
            }
        }
        Ok(exchanges)
    }

    /// `GET /runs/{runId}/orders`; a run without any order has none.
    pub async fn run_orders(&self, run_id: &str) -> anyhow::Result<Vec<OrderView>> {
        let url = format!("{}/runs/{run_id}/orders", self.base);
        let response = self.http.get(&url).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !response.status().is_success() {
            bail!("GET {url} answered {}", response.status());
        }
        Ok(response.json::<RunOrders>().await?.orders)
    }

    /// `GET /orders/{orderId}`.
    pub async fn order(&self, order_id: &str) -> anyhow::Result<OrderView> {
        self.get_json(&format!("{}/orders/{order_id}", self.base))
            .await
    }

    /// `GET /idempotency`: the API's published key policy.
    pub async fn idempotency_policy(&self) -> anyhow::Result<IdempotencyPolicy> {
        self.get_json(&format!("{}{POLICY_PATH}", self.base)).await
    }
}

/// The orders of `account` among `orders`.
pub fn of_account<'a>(orders: &'a [OrderView], account: &str) -> Vec<&'a OrderView> {
    orders.iter().filter(|o| o.account == account).collect()
}
