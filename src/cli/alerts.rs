//! `sitelog alerts run`: disruption alerting over the health rollups. Live by default
//! (evaluates each minute as its data is complete, stores incidents, notifies the configured
//! webhooks, resumes where it stopped); `--from/--to` evaluates a past window in event time
//! (a backfill or replay gives the incidents live would have, and notifies only with
//! `--notify`).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use sitelog_processor::diagnosis::{notify::Notifier, run};

use super::security::parse_time;
use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct AlertsArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Evaluate the alert rules (`[alerts]` in the processor config) and keep `incidents` up to date.
    Run {
        #[command(flatten)]
        opts: ProcessorOpts,
        /// Evaluate a past window instead of running live: start (RFC 3339 or YYYY-MM-DD, UTC).
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// End of the window, exclusive.
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// With --from/--to: also send the webhooks for the transitions found (each is sent
        /// once: deliveries already recorded are skipped).
        #[arg(long)]
        notify: bool,
        /// With --from/--to: print what would be stored, store nothing.
        #[arg(long, requires = "from")]
        dry_run: bool,
        /// Live: the name under which progress is kept (one per alerting deployment).
        #[arg(long, default_value = "default")]
        evaluator: String,
        /// Live: where the first run of this evaluator begins (RFC 3339 or YYYY-MM-DD, UTC;
        /// default: the newest minute with complete data). Later runs resume where they stopped.
        #[arg(long, conflicts_with = "from")]
        start: Option<String>,
        /// Live: exit 0 once every minute with complete data is evaluated (scripts, tests).
        #[arg(long)]
        exit_when_caught_up: bool,
        /// Serve Prometheus metrics here (e.g. 127.0.0.1:9464).
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
    },
}

pub fn run(a: AlertsArgs) -> anyhow::Result<ExitCode> {
    let Action::Run { opts, from, to, notify, dry_run, evaluator, start, exit_when_caught_up, metrics_listen } =
        a.action;
    let cfg = opts.load()?;
    let client = cfg.clickhouse.client()?;
    let rt = super::runtime()?;
    if let Some(addr) = metrics_listen {
        super::serve_metrics(&rt, addr)?;
    }
    let backfill = from.is_some();
    let notifier = if backfill && !notify {
        None
    } else {
        let _guard = rt.enter();
        Some(Notifier::new(&cfg.alerts.webhooks).context("setting up the webhooks")?).filter(|n| !n.is_empty())
    };
    let report = if let (Some(from), Some(to)) = (from, to) {
        let (from, to) = (parse_time(&from)?.timestamp(), parse_time(&to)?.timestamp());
        anyhow::ensure!(from < to, "--from must be before --to");
        rt.block_on(run::backfill(&client, &cfg.alerts, cfg.health.objective, from, to, dry_run, notifier.as_ref()))
            .context("evaluating the alert rules")?
    } else {
        let start = start.as_deref().map(parse_time).transpose()?.map(|t| t.timestamp());
        let stop = Arc::new(AtomicBool::new(false));
        super::stop_on_signals(&rt, stop.clone());
        rt.block_on(run::live(
            &client,
            &cfg.alerts,
            cfg.health.objective,
            notifier.as_ref(),
            &run::LiveOptions { evaluator, start, exit_when_caught_up, stop },
        ))
        .context("running the alert rules")?
    };
    for (change, row) in &report.transitions {
        let subject = match row.kind.as_str() {
            "site" => format!("site {} (server {})", row.site_host, row.server),
            "server" => format!("server {} ({} sites)", row.server, row.sites.len()),
            _ => format!("platform ({} servers)", row.servers.len()),
        };
        let at = match change {
            sitelog_processor::diagnosis::alerts::Change::Resolved => row.resolved_at.unwrap_or(row.version as u32),
            _ => row.opened_at,
        };
        println!(
            "{} {} {} {subject}, cause {}, customers {}",
            sitelog_processor::diagnosis::notify::rfc3339(i64::from(at)),
            row.id,
            sitelog_processor::diagnosis::notify::transition_name(*change),
            row.cause,
            row.customers.join(",")
        );
    }
    eprintln!(
        "alerts: {} minutes evaluated, {} transitions{}, {} notifications sent",
        report.evaluated_minutes,
        report.transitions.len(),
        if dry_run { " (dry run: nothing stored)" } else { "" },
        report.notified
    );
    Ok(ExitCode::SUCCESS)
}
