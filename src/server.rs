//! The HTTP accept loop: hyper with a header-read deadline (a client that
//! dribbles its headers is disconnected instead of holding a connection), the
//! peer address on every request, and a graceful drain on shutdown (stop
//! accepting, let in-flight requests finish).
//!
//! Accepted connections are dealt round-robin to `server.http_threads`
//! threads, each running a single-threaded tokio runtime, and stay on their
//! thread for life: the socket moves to that runtime's reactor too, so its
//! readiness wakes the thread that serves it, not a worker of the accepting
//! runtime that would then wake it. The work-stealing runtime moved requests
//! and their wake-ups between cores; on two cores this cut the CPU per
//! PostHog event by 3–8 % (BENCHMARKS.md, "Connection threads and raw
//! `$set`"), and the socket's own reactor 2–3 % more ("One produce call per
//! request").

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// How [`serve`] runs its connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for open connections' requests.
    pub grace: Duration,
    /// Threads serving connections; 0 means two per available core.
    pub threads: usize,
}

/// Start the connection threads, then return the accept loop: it serves
/// `app` until `stop` turns true, waits up to `grace` for open connections
/// to finish their requests, and ends once the threads have stopped.
pub fn serve(
    listener: TcpListener,
    app: Router,
    stop: watch::Receiver<bool>,
    opts: ServeOptions,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
    let threads = ConnectionThreads::start(opts.threads)?;
    Ok(accept_loop(listener, app, stop, opts, threads))
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
    opts: ServeOptions,
    mut threads: ConnectionThreads,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(opts.header_read_timeout).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut stopped => break,
        };
        let _ = stream.set_nodelay(true);
        // The socket leaves this runtime's reactor and joins the connection
        // thread's: its readiness then wakes that thread directly, not a
        // worker here that would have to wake it in turn.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand an accepted connection over");
                continue;
            }
        };
        let router = app.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                Ok::<_, Infallible>(router.oneshot(req.map(axum::body::Body::new)).await.unwrap_or_else(|e| match e {}))
            }
        });
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        threads.next().spawn(async move {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => return tracing::warn!(error = %e, "cannot register a connection"),
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(opts.grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the grace period");
    }
    threads.stop().await;
}

/// Threads each running a single-threaded runtime, taking connections in turn.
struct ConnectionThreads {
    handles: Vec<tokio::runtime::Handle>,
    /// Dropping a sender ends its thread's runtime (and whatever it still runs).
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    joins: Vec<std::thread::JoinHandle<()>>,
    next: usize,
}

impl ConnectionThreads {
    fn start(threads: usize) -> std::io::Result<ConnectionThreads> {
        let n = match threads {
            // Two per core: while librdkafka's threads or a neighbour hold a
            // core, another connection thread can run on the other
            // (BENCHMARKS.md, "Connection threads and raw `$set`").
            0 => 2 * std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let mut pool = ConnectionThreads { handles: vec![], stops: vec![], joins: vec![], next: 0 };
        for i in 0..n {
            match Self::start_one(i) {
                Ok((handle, stop, join)) => {
                    pool.handles.push(handle);
                    pool.stops.push(stop);
                    pool.joins.push(join);
                }
                Err(e) => {
                    // The threads already started end with their senders.
                    drop(pool.stops);
                    for j in pool.joins {
                        let _ = j.join();
                    }
                    return Err(e);
                }
            }
        }
        tracing::debug!(threads = n, "connection threads started");
        Ok(pool)
    }

    /// One thread: its runtime is built, run and dropped on the thread itself.
    #[allow(clippy::type_complexity)]
    fn start_one(
        i: usize,
    ) -> std::io::Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>)> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
        let join = std::thread::Builder::new().name(format!("sluice-http-{i}")).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => {
                    let _ = handle_tx.send(Ok(runtime.handle().clone()));
                    runtime.block_on(async {
                        let _ = stop_rx.await;
                    });
                }
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                }
            }
        })?;
        // Waits only for the runtime to be built.
        let handle = handle_rx.recv().map_err(std::io::Error::other)??;
        Ok((handle, stop_tx, join))
    }

    /// The runtime the next connection goes to.
    fn next(&mut self) -> &tokio::runtime::Handle {
        let i = self.next;
        self.next = (i + 1) % self.handles.len();
        &self.handles[i]
    }

    /// End every thread's runtime and wait for the threads to exit.
    async fn stop(self) {
        drop(self.stops);
        let joins = self.joins;
        let _ = tokio::task::spawn_blocking(move || {
            for j in joins {
                let _ = j.join();
            }
        })
        .await;
    }
}

/// The address the server reports, for logs.
pub fn local_addr(l: &TcpListener) -> Option<SocketAddr> {
    l.local_addr().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The tests count this process's connection threads: one at a time.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    fn http_threads_alive() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .filter(|comm| comm.starts_with("sluice-http-"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// One request on a fresh connection; the answer's body.
    async fn get_body(addr: SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_take_turns_on_the_threads_which_stop_with_the_server() {
        let _serial = SERIAL.lock().await;
        let app =
            Router::new().route("/", get(|| async { std::thread::current().name().unwrap_or("unnamed").to_string() }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let opts =
            ServeOptions { header_read_timeout: Duration::from_secs(5), grace: Duration::from_secs(5), threads: 2 };
        let server = tokio::spawn(serve(listener, app, stop_rx, opts).unwrap());
        assert_eq!(http_threads_alive(), 2);

        let mut served = vec![];
        for _ in 0..4 {
            served.push(get_body(addr).await);
        }
        assert_eq!(served, ["sluice-http-0", "sluice-http-1", "sluice-http-0", "sluice-http-1"]);

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server).await.expect("the server stops").unwrap();
        assert_eq!(http_threads_alive(), 0, "the connection threads exit with the server");
    }

    /// Once handed to its thread a connection is that thread's alone: its
    /// socket sits in the thread's own reactor, so a request on it is
    /// answered while the runtime that accepted it is not running at all.
    #[test]
    fn an_accepted_connection_does_not_need_the_accepting_runtime() {
        use std::io::{Read, Write};
        let _serial = SERIAL.blocking_lock();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let app = Router::new().route("/", get(|| async { "served" }));
        let (stop_tx, stop_rx) = watch::channel(false);
        let opts =
            ServeOptions { header_read_timeout: Duration::from_secs(5), grace: Duration::from_secs(5), threads: 1 };
        let (addr, server) = rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            (addr, tokio::spawn(serve(listener, app, stop_rx, opts).unwrap()))
        });
        // A first request while the accepting runtime runs: once answered,
        // the connection has been accepted and handed to its thread.
        let first = std::thread::spawn(move || {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            client.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
            let mut answer = Vec::new();
            let mut chunk = [0u8; 512];
            while !answer.ends_with(b"served") {
                let n = client.read(&mut chunk).expect("the first answer");
                assert!(n > 0, "closed before the first answer");
                answer.extend_from_slice(&chunk[..n]);
            }
            client
        });
        rt.block_on(async {
            while !first.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let mut client = first.join().unwrap();
        // Then a second on the same connection, with the accepting runtime
        // parked outside `block_on`.
        client.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).expect("answered without the accepting runtime");
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("served"), "{answer}");

        stop_tx.send(true).unwrap();
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await })
            .expect("the server stops")
            .unwrap();
    }

    #[test]
    fn zero_threads_means_two_per_core() {
        let _serial = SERIAL.blocking_lock();
        let pool = ConnectionThreads::start(0).unwrap();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(pool.handles.len(), 2 * cores);
        assert_eq!(http_threads_alive(), 2 * cores);
        tokio::runtime::Runtime::new().unwrap().block_on(pool.stop());
    }
}
