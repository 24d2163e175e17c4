//! `sitelog incidents list|show|contacts`: disruptions found by `alerts run`, the customers
//! they affected and whom to tell. Contacts come from the register's current version, joined
//! at query time (never copied into log tables); reading them is recorded in `access_audit`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use sitelog_processor::billing::render::field;
use sitelog_processor::diagnosis::incidents::{self, IncidentRow};
use sitelog_processor::diagnosis::notify::{incident_json, rfc3339};

use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct IncidentsArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Table,
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ContactFormat {
    Csv,
    Json,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Incidents open at some time in a period (default: the last 7 days), oldest first.
    List {
        #[command(flatten)]
        opts: ProcessorOpts,
        #[command(flatten)]
        period: super::Period,
        /// `table` for people; `json`: one object per line (id, kind, site_host, server,
        /// opened_at, resolved_at, affected_customers, …).
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// One incident: what, when, which sites, servers and customers.
    Show {
        #[command(flatten)]
        opts: ProcessorOpts,
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// The affected customers with their contact persons from the current register.
    Contacts {
        #[command(flatten)]
        opts: ProcessorOpts,
        id: String,
        #[arg(long, value_enum, default_value = "csv")]
        format: ContactFormat,
        /// Why (a ticket id); recorded in access_audit. Default: "incident <ID>".
        #[arg(long)]
        reason: Option<String>,
    },
}

pub fn run(a: IncidentsArgs) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    match a.action {
        Action::List { opts, period, format } => {
            let cfg = opts.load()?;
            let (from, to) = period.bounds("7d")?;
            let (from, to) = (from.timestamp(), to.timestamp());
            let client = cfg.clickhouse.client()?;
            let rows = rt.block_on(incidents::list(&client, from, to)).context("reading incidents")?;
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json => {
                    for r in &rows {
                        writeln!(out, "{}", incident_json(r))?;
                    }
                }
                Format::Table => {
                    writeln!(
                        out,
                        "{:<20} {:<8} {:<7} {:<28} {:<20} {:<20} {:>9}",
                        "ID", "KIND", "CAUSE", "SUBJECT", "OPENED", "RESOLVED", "CUSTOMERS"
                    )?;
                    for r in &rows {
                        writeln!(
                            out,
                            "{:<20} {:<8} {:<7} {:<28} {:<20} {:<20} {:>9}",
                            r.id,
                            r.kind,
                            r.cause,
                            subject(r),
                            rfc3339(i64::from(r.opened_at)),
                            r.resolved_at.map(|t| rfc3339(i64::from(t))).unwrap_or_else(|| "open".into()),
                            r.customers.len()
                        )?;
                    }
                    if rows.is_empty() {
                        writeln!(out, "(no incidents in the period)")?;
                    }
                }
            }
        }
        Action::Show { opts, id, format } => {
            let cfg = opts.load()?;
            let client = cfg.clickhouse.client()?;
            let r = rt.block_on(incidents::get(&client, &id))?;
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json => writeln!(out, "{}", incident_json(&r))?,
                Format::Table => {
                    writeln!(out, "incident   {}", r.id)?;
                    writeln!(out, "kind       {} ({})", r.kind, subject(&r))?;
                    writeln!(out, "cause      {}", r.cause)?;
                    writeln!(out, "opened     {}", rfc3339(i64::from(r.opened_at)))?;
                    writeln!(
                        out,
                        "resolved   {}",
                        r.resolved_at.map(|t| rfc3339(i64::from(t))).unwrap_or_else(|| "open".into())
                    )?;
                    writeln!(out, "last fired {}", rfc3339(i64::from(r.last_firing)))?;
                    writeln!(
                        out,
                        "requests   {} ({} 5xx, peak minute {:.1} %)",
                        r.requests,
                        r.errors,
                        r.peak_error_ratio * 100.0
                    )?;
                    writeln!(out, "servers    {}", r.servers.join(", "))?;
                    writeln!(out, "sites      {}", r.sites.join(", "))?;
                    writeln!(out, "customers  {}", r.customers.join(", "))?;
                }
            }
        }
        Action::Contacts { opts, id, format, reason } => {
            let cfg = opts.load()?;
            let client = cfg.clickhouse.client()?;
            let rows = rt.block_on(async {
                let r = incidents::get(&client, &id).await?;
                let reason = reason.unwrap_or_else(|| format!("incident {id}"));
                super::security::audit(&client, &cfg.clickhouse.user, "incidents contacts", &id, &reason).await?;
                anyhow::Ok(incidents::contacts(&client, &r.customers).await?)
            })?;
            let mut out = std::io::stdout().lock();
            match format {
                ContactFormat::Json => {
                    for c in &rows {
                        writeln!(out, "{}", serde_json::to_string(c)?)?;
                    }
                }
                ContactFormat::Csv => {
                    writeln!(out, "customer_id,company_name,name,email,phone,role")?;
                    for c in &rows {
                        let f = [&c.customer_id, &c.company_name, &c.name, &c.email, &c.phone, &c.role];
                        writeln!(out, "{}", f.iter().map(|v| field(v)).collect::<Vec<_>>().join(","))?;
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn subject(r: &IncidentRow) -> String {
    match r.kind.as_str() {
        "site" => r.site_host.clone(),
        "server" => format!("{} ({} sites)", r.server, r.sites.len()),
        _ => format!("{} servers, {} sites", r.servers.len(), r.sites.len()),
    }
}
