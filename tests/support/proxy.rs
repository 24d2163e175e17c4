//! A TCP proxy that adds a fixed latency to each direction (set separately), for one client only
//! (e.g. one processor replica's ClickHouse endpoint): every chunk is forwarded `delay` after
//! it arrived, in order, so a request reaches the server late and its answer comes back late.
//! It also keeps what the client sent, so a test can wait for a given request to be on its way.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct DelayProxy {
    /// `http://127.0.0.1:<port>`: give this to the slow client instead of the real endpoint.
    pub url: String,
    request_ms: Arc<AtomicU64>,
    response_ms: Arc<AtomicU64>,
    only: Arc<Mutex<Option<String>>>,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl DelayProxy {
    /// Listens on a free local port and forwards to `upstream` (`host:port`).
    pub fn start(upstream: &str, delay: Duration) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let request_ms = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let response_ms = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let only = Arc::new(Mutex::new(None));
        let (upstream, req, resp, s, o) =
            (upstream.to_owned(), request_ms.clone(), response_ms.clone(), sent.clone(), only.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let upward = Upward { sent: s.clone(), only: o.clone() };
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), req.clone(), Some(upward));
                pipe(server, client, resp.clone(), None);
            }
        });
        DelayProxy { url, request_ms, response_ms, only, sent }
    }

    /// From now on: requests reach the server `request` late, answers come back `response` late.
    pub fn set_delay(&self, request: Duration, response: Duration) {
        self.request_ms.store(request.as_millis() as u64, Ordering::Relaxed);
        self.response_ms.store(response.as_millis() as u64, Ordering::Relaxed);
    }

    /// Delays only requests whose start contains `needle` (e.g. `INSERT INTO`); `None`: all.
    pub fn delay_only(&self, needle: Option<&str>) {
        *self.only.lock().unwrap() = needle.map(str::to_owned);
    }

    /// How often `needle` occurs in everything the client sent so far (URL-decoded enough for
    /// SQL in a query string: `%20` and `+` read as spaces, `%60` as a backtick).
    pub fn sent_count(&self, needle: &str) -> usize {
        self.sent_text().matches(needle).count()
    }

    /// Everything the client sent so far, as text.
    pub fn sent_text(&self) -> String {
        decode(&self.sent.lock().unwrap())
    }
}

/// The client side of a connection: what it sent, and which requests to delay.
struct Upward {
    sent: Arc<Mutex<Vec<u8>>>,
    only: Arc<Mutex<Option<String>>>,
}

fn decode(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .replace("%20", " ")
        .replace('+', " ")
        .replace("%60", "`")
        .replace("%28", "(")
        .replace("%29", ")")
        .replace("%2C", ",")
}

/// Forwards `from` → `to`, each chunk `delay` after it was read.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Arc<AtomicU64>, upward: Option<Upward>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        // Whether the request being forwarded is one to delay.
        let mut delayed = true;
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(u) = &upward {
                        u.sent.lock().unwrap().extend_from_slice(&buf[..n]);
                        let chunk = &buf[..n];
                        if chunk.starts_with(b"POST ") || chunk.starts_with(b"GET ") {
                            delayed = match &*u.only.lock().unwrap() {
                                Some(needle) => decode(&chunk[..n.min(4096)]).contains(needle.as_str()),
                                None => true,
                            };
                        }
                    }
                    let ms = if delayed { delay.load(Ordering::Relaxed) } else { 0 };
                    let due = Instant::now() + Duration::from_millis(ms);
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
