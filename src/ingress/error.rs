//! The ingress error type and the one place it becomes an HTTP status.
//!
//! Every refusal of every source is an [`IngressError`]. [`IngressError::status`]
//! maps variants to status codes; [`IngressError::render`] writes the body in
//! the dialect the calling SDK expects (PostHog's `{type, code, detail}`,
//! Amplitude's `{code, error, ...}`, plain JSON for webhooks). 5xx bodies stay
//! generic; details go to the log with the request id.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::bus::BusError;

/// Which wire dialect an error body is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Posthog,
    /// PostHog's capture v1 (`/i/v1/analytics/events`):
    /// `{error, error_description, error_uri}`.
    PosthogV1,
    Amplitude,
    Webhook,
}

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// Body, decompressed body or one event over a limit (413).
    #[error("{what} exceeds the {limit}-byte limit")]
    TooLarge { what: &'static str, limit: usize },
    /// Too many events in one request (413).
    #[error("more than {limit} events in one request")]
    TooManyEvents { limit: usize },
    /// Undecodable or structurally invalid input (400).
    #[error("{message}")]
    Malformed { code: &'static str, message: String },
    /// A request-level field is missing (400).
    #[error("request missing required field {field}")]
    MissingField { field: &'static str },
    /// Some events are invalid; `details` holds the per-field index maps
    /// (Amplitude's `events_with_invalid_fields` etc.) (400).
    #[error("{message}")]
    InvalidEvents { message: String, details: Map<String, Value> },
    /// Missing, unknown or mismatched credentials; bad signature (401).
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// No such webhook source (404).
    #[error("unknown source")]
    UnknownSource,
    /// Per-user or per-device throttle (429); `details` as Amplitude documents.
    #[error("too many requests for some devices and users")]
    Throttled { details: Map<String, Value> },
    /// The bus refused or timed out; the client should retry (503).
    #[error("event bus unavailable")]
    Unavailable { retry_after_secs: u64 },
    /// The whole request took longer than `server.request_timeout_secs` (408).
    #[error("request timeout")]
    Timeout,
    /// Concurrency cap reached (503).
    #[error("server overloaded")]
    Overloaded { retry_after_secs: u64 },
    /// A bug; never caused by client input (500).
    #[error("internal error")]
    Internal(String),
    /// An API key that is not configured. Amplitude answers this with 400
    /// (not 401) and echoes the key; SDKs match the `Invalid API key:`
    /// prefix. Display leaves the key out so logs never carry it.
    #[error("invalid API key")]
    InvalidApiKey { key: String },
    /// The route exists but not for this method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A content type or content encoding the route does not speak (415).
    #[error("{message}")]
    Unsupported { code: &'static str, message: String },
}

impl IngressError {
    pub fn status(&self) -> StatusCode {
        match self {
            IngressError::TooLarge { .. } | IngressError::TooManyEvents { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngressError::Malformed { .. }
            | IngressError::MissingField { .. }
            | IngressError::InvalidEvents { .. }
            | IngressError::InvalidApiKey { .. } => StatusCode::BAD_REQUEST,
            IngressError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            IngressError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            IngressError::UnknownSource => StatusCode::NOT_FOUND,
            IngressError::Timeout => StatusCode::REQUEST_TIMEOUT,
            IngressError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngressError::Unavailable { .. } | IngressError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            IngressError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            IngressError::Unsupported { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// Bounded reason label for `sluice_events_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            IngressError::TooLarge { .. } | IngressError::TooManyEvents { .. } => "too_large",
            IngressError::Malformed { code, .. } => code,
            IngressError::MissingField { .. } => "missing_field",
            IngressError::InvalidEvents { .. } => "invalid_events",
            IngressError::Unauthorized { code, .. } => code,
            IngressError::UnknownSource => "unknown_source",
            IngressError::Timeout => "timeout",
            IngressError::Throttled { .. } => "throttled",
            IngressError::Unavailable { .. } => "bus_unavailable",
            IngressError::Overloaded { .. } => "overloaded",
            IngressError::Internal(_) => "internal",
            IngressError::InvalidApiKey { .. } => "invalid_api_key",
            IngressError::MethodNotAllowed => "method_not_allowed",
            IngressError::Unsupported { code, .. } => code,
        }
    }

    /// Translate a bus failure for the client.
    pub fn from_bus(e: BusError, retry_after_secs: u64) -> IngressError {
        match e {
            BusError::TooLarge(_) => IngressError::TooLarge { what: "event", limit: 1_000_000 },
            BusError::Unavailable(_) | BusError::Fatal(_) => IngressError::Unavailable { retry_after_secs },
        }
    }

    /// The error as a response in `dialect`.
    pub fn render(&self, dialect: Dialect) -> Response {
        let status = self.status();
        // 5xx bodies never carry internal detail.
        let message = match self {
            IngressError::Internal(_) => "internal error".to_string(),
            other => other.to_string(),
        };
        let body = match dialect {
            Dialect::Amplitude => self.amplitude_body(status, message),
            Dialect::PosthogV1 => json!({
                "error": self.reason(),
                "error_description": message,
                "error_uri": "https://posthog.com/docs/api",
            }),
            Dialect::Posthog | Dialect::Webhook => {
                let kind = match status.as_u16() {
                    401 => "authentication_error",
                    500..=599 => "server_error",
                    _ => "validation_error",
                };
                let mut body = json!({"type": kind, "code": self.reason(), "detail": message});
                if let IngressError::InvalidEvents { details, .. } = self {
                    body["errors"] = Value::Object(details.clone());
                }
                body
            }
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let IngressError::Unavailable { retry_after_secs } | IngressError::Overloaded { retry_after_secs } = self {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }

    /// Amplitude's bodies: always JSON with an integer `code`.
    fn amplitude_body(&self, status: StatusCode, message: String) -> Value {
        let code = status.as_u16();
        match self {
            IngressError::TooLarge { .. } | IngressError::TooManyEvents { .. } => {
                json!({"code": 413, "error": "Payload too large"})
            }
            IngressError::MissingField { field } => {
                json!({"code": 400, "error": "Request missing required field", "missing_field": field})
            }
            IngressError::InvalidEvents { message, details } => with_details(code, message, details),
            IngressError::Throttled { details } => {
                with_details(code, "Too many requests for some devices and users", details)
            }
            // Echoing the key is what Amplitude does. It only tells the
            // caller what it sent itself, and the key matched nothing
            // configured, so no secret leaves; it is capped so a huge
            // value is not reflected whole.
            IngressError::InvalidApiKey { key } => {
                let shown: String = key.chars().take(INVALID_KEY_ECHO_CHARS).collect();
                json!({"code": code, "error": format!("Invalid API key: {shown}")})
            }
            _ => json!({"code": code, "error": message}),
        }
    }
}

/// How much of a refused API key the Amplitude body echoes (real keys are
/// 32 characters).
const INVALID_KEY_ECHO_CHARS: usize = 128;

fn with_details(code: u16, error: &str, details: &Map<String, Value>) -> Value {
    let mut obj = Map::new();
    obj.insert("code".into(), Value::from(code));
    obj.insert("error".into(), Value::from(error));
    obj.extend(details.iter().map(|(k, v)| (k.clone(), v.clone())));
    Value::Object(obj)
}
