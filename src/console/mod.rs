//! `sitelog serve`: the built-in web console. A small HTTP/1 server (hyper 1, optionally TLS
//! through rustls) with server-rendered pages read from ClickHouse as the ops user (the Usage
//! page as the billing user), every asset embedded in the binary, login by password file
//! (HTTP Basic), and each page's render time in a `Server-Timing` header and the log.

pub mod html;
pub mod pages;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use sitelog_processor::config::ProcessorConfig;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
const ICON: &str = include_str!("assets/icon.svg");

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("serve.password_file {path}: {msg}")]
    PasswordFile { path: String, msg: String },
    #[error("serve TLS: {0}")]
    Tls(String),
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] sitelog_processor::serve::ServeConfigError),
}

/// Who may log in: user → SHA-256 of the password.
#[derive(Debug, Clone, Default)]
pub struct Users(BTreeMap<String, [u8; 32]>);

impl Users {
    /// Parses a password file: `user:password` or `user:sha256:HEX` per line; `#` comments.
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut m = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (user, rest) = line.split_once(':').ok_or_else(|| format!("line {}: not user:password", i + 1))?;
            if user.is_empty() || rest.is_empty() {
                return Err(format!("line {}: empty user or password", i + 1));
            }
            let hash = match rest.strip_prefix("sha256:") {
                Some(hex) => {
                    let hex = hex.trim();
                    if hex.len() != 64 {
                        return Err(format!("line {}: sha256: needs 64 hex digits", i + 1));
                    }
                    let mut h = [0u8; 32];
                    for (k, b) in h.iter_mut().enumerate() {
                        *b = u8::from_str_radix(&hex[2 * k..2 * k + 2], 16)
                            .map_err(|_| format!("line {}: sha256: needs 64 hex digits", i + 1))?;
                    }
                    h
                }
                None => Sha256::digest(rest.as_bytes()).into(),
            };
            m.insert(user.to_owned(), hash);
        }
        if m.is_empty() {
            return Err("no user in the file".into());
        }
        Ok(Users(m))
    }

    pub fn load(path: &Path) -> Result<Users, ConsoleError> {
        let err = |msg: String| ConsoleError::PasswordFile { path: path.display().to_string(), msg };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Users::parse(&text).map_err(err)
    }

    /// The user an `Authorization: Basic …` header logs in, if its password is right.
    pub fn check(&self, header: Option<&str>) -> Option<String> {
        let b64 = header?.strip_prefix("Basic ")?.trim();
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, pass) = text.split_once(':')?;
        let want = self.0.get(user)?;
        let got: [u8; 32] = Sha256::digest(pass.as_bytes()).into();
        // Compare every byte (no early exit on the first difference).
        let diff = want.iter().zip(got.iter()).fold(0u8, |a, (x, y)| a | (x ^ y));
        (diff == 0).then(|| user.to_owned())
    }
}

/// What every request handler shares.
pub struct Console {
    pub cfg: ProcessorConfig,
    pub ops: clickhouse::Client,
    /// The billing client, or why there is none.
    pub billing: Result<clickhouse::Client, String>,
    pub users: Option<Users>,
}

impl Console {
    pub fn new(cfg: ProcessorConfig) -> Result<Console, ConsoleError> {
        let ops = cfg.serve.ops_client(&cfg.clickhouse)?;
        let billing = cfg.serve.billing_client(&cfg.clickhouse, &cfg.billing).map_err(|e| e.to_string());
        let users = cfg.serve.password_file.as_deref().map(Users::load).transpose()?;
        Ok(Console { cfg, ops, billing, users })
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, ConsoleError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let e = |what: &Path, m: String| ConsoleError::Tls(format!("{}: {m}", what.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|x| e(cert, x.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|x| e(cert, x.to_string()))?;
    if certs.is_empty() {
        return Err(e(cert, "no PEM certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|x| e(key, x.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .map_err(|x| ConsoleError::Tls(x.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|x| ConsoleError::Tls(x.to_string()))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
}

/// Binds the configured address; returns the bound address (port 0 → the chosen one).
pub async fn bind(console: &Console) -> Result<(tokio::net::TcpListener, SocketAddr), ConsoleError> {
    let addr = console.cfg.serve.listen;
    let l = tokio::net::TcpListener::bind(addr).await.map_err(|source| ConsoleError::Listen { addr, source })?;
    let local = l.local_addr().map_err(|source| ConsoleError::Listen { addr, source })?;
    Ok((l, local))
}

/// Serves until `stop` is set.
pub async fn serve(
    console: Arc<Console>,
    listener: tokio::net::TcpListener,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), ConsoleError> {
    let tls = match (&console.cfg.serve.tls_cert_file, &console.cfg.serve.tls_key_file) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
        _ => None,
    };
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let accepted = tokio::time::timeout(std::time::Duration::from_millis(250), listener.accept()).await;
        let (stream, peer) = match accepted {
            Err(_) => continue,
            Ok(Err(e)) => {
                tracing::warn!("accept: {e}");
                continue;
            }
            Ok(Ok(s)) => s,
        };
        let console = console.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let console = console.clone();
                async move { Ok::<_, Infallible>(handle(&console, req).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => http.serve_connection(hyper_util::rt::TokioIo::new(s), svc).await,
                    Err(e) => {
                        tracing::debug!("TLS handshake with {peer}: {e}");
                        return;
                    }
                },
                None => http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await,
            };
            if let Err(e) = result {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
}

fn response(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        // Everything is served from here; nothing external may load.
        .header(
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'",
        )
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

async fn handle(console: &Console, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let login = match &console.users {
        Some(users) => {
            let header = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            match users.check(header) {
                Some(u) => u,
                None => {
                    tracing::info!(path, "refused: no valid login");
                    let mut r = response(
                        StatusCode::UNAUTHORIZED,
                        "text/html; charset=utf-8",
                        "<!doctype html><title>Login required</title><p>Login required (sitelog console).</p>\n".into(),
                    );
                    r.headers_mut().insert(
                        hyper::header::WWW_AUTHENTICATE,
                        hyper::header::HeaderValue::from_static("Basic realm=\"sitelog\", charset=\"UTF-8\""),
                    );
                    return r;
                }
            }
        }
        None => "(no login: loopback only)".to_owned(),
    };
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return response(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match path.as_str() {
        "/assets/console.css" => return response(StatusCode::OK, "text/css; charset=utf-8", CSS.into()),
        "/assets/console.js" => return response(StatusCode::OK, "text/javascript; charset=utf-8", JS.into()),
        "/assets/icon.svg" | "/favicon.ico" => return response(StatusCode::OK, "image/svg+xml", ICON.into()),
        _ => {}
    }
    let (status, page) = pages::route(console, &path, &query, &login).await;
    let now = sitelog_now_text();
    let body = html::layout(&page, &login, &now);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(path, status = status.as_u16(), render_ms = format!("{ms:.1}"), "page");
    let mut r = response(status, "text/html; charset=utf-8", body);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("render;dur={ms:.1}")) {
        r.headers_mut().insert("server-timing", v);
    }
    r
}

fn sitelog_now_text() -> String {
    crate::clock::now().map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_plain_and_hashed() {
        let hash = format!("{:x}", Sha256::digest(b"s3cret"));
        let u = Users::parse(&format!("# people\nalice:pw:with:colons\nbob:sha256:{hash}\n")).unwrap();
        let basic = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert_eq!(u.check(Some(&basic("alice:pw:with:colons"))).as_deref(), Some("alice"));
        assert_eq!(u.check(Some(&basic("bob:s3cret"))).as_deref(), Some("bob"));
        assert_eq!(u.check(Some(&basic("bob:wrong"))), None);
        assert_eq!(u.check(Some(&basic("carol:s3cret"))), None);
        assert_eq!(u.check(None), None);
        assert!(Users::parse("\n# nobody\n").is_err());
        assert!(Users::parse("bob:sha256:abc\n").is_err());
    }
}
