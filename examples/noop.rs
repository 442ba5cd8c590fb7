//! This machine's HTTP ceiling for `scripts/bench-ingress`: an axum server
//! that reads every request body to the end and answers `200 {"status":1}`,
//! doing nothing else. Sluice's figures are reported as a ratio to this one,
//! measured in the same run with the same load, so they travel between
//! machines. Kept out of the `sluice` binary on purpose.
//!
//! Usage: `noop 127.0.0.1:PORT`

use axum::body::Bytes;
use axum::routing::any;
use axum::{Json, Router};

async fn swallow(body: Bytes) -> Json<serde_json::Value> {
    // The body is read (and its length used) so the work matches a real
    // handler's I/O, and the optimizer cannot skip it.
    std::hint::black_box(body.len());
    Json(serde_json::json!({"status": 1}))
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8090".to_string());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        // The default body limit (2 MB) would refuse nothing here: every
        // scenario's body is smaller.
        let app = Router::new().fallback(any(swallow));
        axum::serve(listener, app).await
    })
}
