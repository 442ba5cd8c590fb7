//! Talking to Brevo: the request type, the [`Deliver`] hop trait, the HTTP
//! client and the dry run.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;

use crate::config::BrevoConfig;
use crate::metrics as m;

/// Brevo's rate-limit classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointClass {
    Events,
    Contacts,
    Other,
}

impl EndpointClass {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointClass::Events => "events",
            EndpointClass::Contacts => "contacts",
            EndpointClass::Other => "other",
        }
    }
}

/// One Brevo API call.
#[derive(Debug, Clone, PartialEq)]
pub struct BrevoRequest {
    pub class: EndpointClass,
    /// Path below the base URL, e.g. `/events/batch`.
    pub path: String,
    pub body: Value,
    /// Source events this request carries.
    pub events: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// 429, 5xx, timeouts, connection errors: try again later.
    #[error("retryable: {0}")]
    Retryable(String),
    /// 4xx other than 429: the request will never succeed as it is.
    #[error("rejected with {status}: {body}")]
    Rejected { status: u16, body: String },
}

/// The last hop: send one request to Brevo.
#[async_trait]
pub trait Deliver: Send + Sync + 'static {
    async fn send(&self, req: &BrevoRequest) -> Result<(), DeliverError>;
}

/// Logs the exact requests instead of sending them (no API key configured).
pub struct DryRun;

#[async_trait]
impl Deliver for DryRun {
    async fn send(&self, req: &BrevoRequest) -> Result<(), DeliverError> {
        tracing::info!(
            method = "POST",
            path = %req.path,
            body = %req.body,
            events = req.events,
            "dry run: would send Brevo request"
        );
        m::brevo_request(req.class.as_str(), 0, Duration::ZERO, req.events);
        Ok(())
    }
}

/// The real Brevo API.
pub struct HttpBrevo {
    client: reqwest::Client,
    base_url: String,
    api_key: String,
}

impl HttpBrevo {
    pub fn new(cfg: &BrevoConfig) -> anyhow::Result<HttpBrevo> {
        let api_key = cfg.api_key.as_ref().map(|k| k.expose().to_string()).unwrap_or_default();
        let client = reqwest::Client::builder().timeout(Duration::from_millis(cfg.request_timeout_ms)).build()?;
        Ok(HttpBrevo { client, base_url: cfg.base_url.trim_end_matches('/').to_string(), api_key })
    }
}

#[async_trait]
impl Deliver for HttpBrevo {
    async fn send(&self, req: &BrevoRequest) -> Result<(), DeliverError> {
        let started = Instant::now();
        let resp = self
            .client
            .post(format!("{}{}", self.base_url, req.path))
            .header("api-key", &self.api_key)
            .header("accept", "application/json")
            .json(&req.body)
            .send()
            .await
            .map_err(|e| DeliverError::Retryable(e.to_string()))?;
        let status = resp.status().as_u16();
        m::brevo_request(req.class.as_str(), status, started.elapsed(), req.events);
        if resp.status().is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        if status == 429 || status >= 500 || status == 408 {
            Err(DeliverError::Retryable(format!("{status}: {body}")))
        } else {
            Err(DeliverError::Rejected { status, body })
        }
    }
}
