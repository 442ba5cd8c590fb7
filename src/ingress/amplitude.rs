//! Amplitude HTTP V2, Batch and Identify APIs. Filled in by the Amplitude issue;
//! until then every route answers 404 in Amplitude's JSON dialect.

use axum::response::Response;
use axum::Router;

use super::{refuse, AppState, Dialect, IngressError, RawRequest};
use crate::config::Config;

pub struct AmplitudeState {}

impl AmplitudeState {
    pub fn new(_cfg: &Config, _data_dir: Option<&std::path::Path>) -> anyhow::Result<AmplitudeState> {
        Ok(AmplitudeState {})
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
}

pub async fn handle_batch(_state: &AppState, _raw: RawRequest) -> Response {
    refuse("amplitude", Dialect::Amplitude, IngressError::UnknownSource, 1)
}
