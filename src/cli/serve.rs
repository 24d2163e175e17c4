//! `sitelog serve`: the web console (`src/console/`). Reads ClickHouse as `[serve]
//! clickhouse_user` (the ops role) and the Usage page as the billing user; never as the
//! processor. Prints `console: URL` on stdout once listening; SIGTERM/SIGINT stop it.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use sitelog::console::{self, Console};

use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    opts: ProcessorOpts,
    /// Overrides `[serve] listen` (HOST:PORT; port 0 picks a free one).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

pub fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = a.opts.load()?;
    if let Some(l) = a.listen {
        cfg.serve.listen = l;
        cfg.validate().map_err(|(key, msg)| anyhow::anyhow!("{key}: {msg}"))?;
    }
    if cfg.serve.password_file.is_none() {
        tracing::warn!("no [serve] password_file: pages are served without login (loopback only)");
    }
    let tls = cfg.serve.tls_cert_file.is_some();
    let console = Arc::new(Console::new(cfg).context("starting the console")?);
    let rt = super::runtime()?;
    let stop = Arc::new(AtomicBool::new(false));
    super::stop_on_signals(&rt, stop.clone());
    rt.block_on(async {
        let (listener, addr) = console::bind(&console).await?;
        let url = format!("{}://{addr}/", if tls { "https" } else { "http" });
        tracing::info!("console listening on {url}");
        let mut out = std::io::stdout().lock();
        writeln!(out, "console: {url}")?;
        out.flush()?;
        drop(out);
        console::serve(console.clone(), listener, stop).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
