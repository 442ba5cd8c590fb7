//! Signed webhooks (Stripe-Signature, Standard Webhooks). Filled in by the
//! webhooks issue.

use axum::Router;

use super::AppState;
use crate::config::Config;

pub struct WebhookState {}

impl WebhookState {
    pub fn new(_cfg: &Config, _data_dir: Option<&std::path::Path>) -> anyhow::Result<WebhookState> {
        Ok(WebhookState {})
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
}
