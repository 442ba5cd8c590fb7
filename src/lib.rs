//! Sluice: PostHog, Amplitude and signed webhooks in; Brevo out.
//!
//! Follow one event from the socket to Brevo by reading, in order:
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the YAML file: serde structs with defaults, `${VAR}` interpolation, validation, redaction |
//! | [`ingress`] | the HTTP router; one file per source (`posthog`, `amplitude`, `webhook`); the error → status mapping (`ingress::error`); `/healthz`, `/readyz`, `/metrics` |
//! | [`event`] | the normalized [`event::Event`] envelope every hop shares, and its partition key |
//! | [`bus`] | the `Publisher` / `Subscriber` traits; `kafka`, `embedded` (redb log) and `memory` (test fake) backends |
//! | [`forward`] | the consumer loop: mapping to Brevo calls, delivery (`Deliver` trait: HTTP or dry run), dead letters, acks |
//! | [`dedup`] | bounded windowed id sets (webhook ids, Amplitude insert_ids), persisted beside the embedded log |
//! | [`server`] | the HTTP accept loop: header-read deadline, peer address, graceful drain |
//! | [`metrics`] | the name of every metric |
//! | [`telemetry`] | structured logging |
//! | [`sim`] | the Brevo simulator (`sluice brevo-sim`): a faithful fake of the API for tests and local development |
//!
//! [`run`] wires them for a [`Role`]: `serve` (both halves), `ingress`, or
//! `forward`, and owns graceful shutdown.

pub mod bus;
pub mod config;
pub mod dedup;
pub mod event;
pub mod forward;
pub mod ingress;
pub mod metrics;
pub mod server;
pub mod sim;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use bus::Bus;
use config::{BusKind, Config};

/// Which halves of Sluice this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Ingress and forwarder in one process (the laptop default).
    Serve,
    /// Only the HTTP side: verify, normalize, publish.
    Ingress,
    /// Only bus → Brevo.
    Forward,
}

impl Role {
    fn ingress(self) -> bool {
        matches!(self, Role::Serve | Role::Ingress)
    }
    fn forwarder(self) -> bool {
        matches!(self, Role::Serve | Role::Forward)
    }
}

/// Run until SIGTERM/SIGINT, then drain within `server.shutdown_grace_secs`.
pub async fn run(config: Config, role: Role) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let handle = metrics::install();
    if config.bus.kind == BusKind::Embedded && role != Role::Serve {
        tracing::warn!("the embedded bus is local to one process: run split roles over Kafka (bus.kind: kafka)");
    }
    if config.open_mode() && role.ingress() {
        tracing::warn!(
            "OPEN MODE: no connectors.posthog.project_tokens and/or connectors.amplitude.api_keys configured; any token is accepted"
        );
    }
    let bus = Bus::open(&config.bus).await.context("opening the bus")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let serving = server::ServeOptions {
        header_read_timeout: Duration::from_secs(config.server.header_read_timeout_secs),
        grace,
        threads: config.server.http_threads,
    };

    let server;
    if role.ingress() {
        let data_dir = (config.bus.kind == BusKind::Embedded).then(|| config.bus.path.clone());
        let state = ingress::AppState::new(
            config.clone(),
            bus.publisher.clone(),
            Arc::new(ingress::SystemClock),
            Some(handle.clone()),
            data_dir.as_deref(),
        )?;
        let app = ingress::router(state);
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        tracing::info!(listen = %listener.local_addr()?, "ingress listening");
        server = Some(tokio::spawn(server::serve(listener, app, stop_rx.clone(), serving)?));
    } else {
        // A forwarder still serves health and metrics.
        let app = health_router(bus.clone(), handle.clone());
        let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
        tracing::info!(listen = %listener.local_addr()?, "health endpoint listening");
        // Health and metrics only: one connection thread is plenty.
        let serving = server::ServeOptions { threads: 1, ..serving };
        server = Some(tokio::spawn(server::serve(listener, app, stop_rx.clone(), serving)?));
    }

    let forwarder = if role.forwarder() {
        let deliver: Arc<dyn forward::Deliver> = match &config.brevo.api_key {
            Some(k) if !k.is_empty() => {
                Arc::new(forward::HttpBrevo::new(&config.brevo)?.with_request_log(config.log.debug))
            }
            _ => {
                tracing::warn!("no brevo.api_key: DRY RUN, Brevo requests are logged instead of sent");
                Arc::new(forward::DryRun)
            }
        };
        Some(tokio::spawn(forward::run(config.clone(), bus.clone(), deliver, stop_rx.clone())))
    } else {
        None
    };

    shutdown_signal().await;
    tracing::info!(grace_secs = grace.as_secs(), "shutting down");
    let _ = stop_tx.send(true);
    let drain = async {
        if let Some(s) = server {
            let _ = s.await;
        }
        if let Some(f) = forwarder {
            match f.await {
                Ok(Err(e)) => tracing::error!(error = %e, "forwarder error"),
                Err(e) => tracing::error!(error = %e, "forwarder panicked"),
                Ok(Ok(())) => {}
            }
        }
        if let Err(e) = bus.publisher.flush(grace).await {
            tracing::error!(error = %e, "bus flush failed");
        }
    };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::error!("grace period elapsed before everything drained");
    }
    tracing::info!("stopped");
    Ok(())
}

fn health_router(bus: Bus, handle: metrics_exporter_prometheus::PrometheusHandle) -> axum::Router {
    use axum::routing::get;
    let ready_bus = bus.clone();
    axum::Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let bus = ready_bus.clone();
                async move { ingress::ready_response(bus.publisher.as_ref()).await }
            }),
        )
        .route("/metrics", get(move || async move { handle.render() }))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
