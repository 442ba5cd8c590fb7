//! Connection-level protections on the real binary: a client that dribbles its
//! headers is disconnected, a client that stalls mid-body gets 408, and beyond
//! the concurrency cap requests get 503 at once instead of queueing, and a
//! crowd of slowloris connections neither blocks a real client nor stays.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Sluice;

const TIGHT: &str = r#"
server:
  listen: "127.0.0.1:{port}"
  header_read_timeout_secs: 1
  request_timeout_secs: 2
  max_concurrent_requests: 1
bus:
  path: "{dir}/data"
"#;

fn connect(s: &Sluice) -> TcpStream {
    let c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

#[test]
fn slow_headers_are_disconnected() {
    let s = Sluice::start("serve", TIGHT);
    let mut c = connect(&s);
    c.write_all(b"POST /i/v0/e/ HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // The server closes the connection (EOF, possibly after a 408) once the
    // header deadline passed; the read would block for 10 s otherwise.
    let _ = c.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "connection held for {waited:?}");
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

#[test]
fn stalled_body_gets_408_and_frees_the_slot() {
    let s = Sluice::start("serve", TIGHT);
    let mut c = connect(&s);
    c.write_all(b"POST /i/v0/e/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"api_key\"")
        .unwrap();
    let mut buf = [0u8; 512];
    let n = c.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    // The slot is free again: a normal request succeeds.
    assert_eq!(common::raw_http::blocking_get(&format!("{}/healthz", s.base)).unwrap(), 200);
}

#[test]
fn beyond_the_concurrency_cap_requests_get_503_at_once() {
    let s = Sluice::start("serve", TIGHT);
    // Hold the only slot with a request whose body never completes.
    let mut holder = connect(&s);
    holder.write_all(b"POST /i/v0/e/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let status = common::raw_http::blocking_get(&format!("{}/readyz", s.base)).unwrap();
    assert_eq!(status, 503);
    assert!(started.elapsed() < Duration::from_secs(1), "refusal must not queue");
}

#[test]
fn a_crowd_of_slowloris_clients_cannot_hold_the_server() {
    let s = Sluice::start(
        "serve",
        "server:\n  listen: \"127.0.0.1:{port}\"\n  header_read_timeout_secs: 2\n  max_concurrent_requests: 16\nbus:\n  path: \"{dir}/data\"\n",
    );
    // 300 connections (far beyond the 16 request slots) each send half a
    // request line and then nothing.
    let mut crowd: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut c = connect(&s);
            c.write_all(b"POST /i/v0/e/ HTTP/1.1\r\nHost: x\r\nContent-Ty").unwrap();
            c
        })
        .collect();
    // A real client is still served at once.
    let started = Instant::now();
    let body = r#"{"api_key":"phc_any","event":"e","distinct_id":"u"}"#;
    let req = format!(
        "POST /i/v0/e/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = common::raw_exchange(s.port, req.as_bytes(), Duration::from_secs(5));
    assert_eq!(common::raw_status(&resp), Some(200), "{}", String::from_utf8_lossy(&resp));
    assert!(started.elapsed() < Duration::from_secs(2), "served after {:?}", started.elapsed());
    // And every slow connection is dropped after the header deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    for c in &mut crowd {
        c.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = Vec::new();
        let r = c.read_to_end(&mut buf);
        assert!(r.is_ok(), "a slowloris connection was still open 10 s later: {r:?}");
    }
    assert!(Instant::now() < deadline);
}
