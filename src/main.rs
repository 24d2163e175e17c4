//! `sitelog` — the one CLI: local stack, schema migrations, sample data, parsing, collecting,
//! processing, customer register and reports. Each subcommand lives in `src/cli/<name>.rs`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Access-log pipeline for a multi-tenant WordPress host: collectors tail nginx/apache logs
/// into Kafka, the processor attributes each request to its customer and stores it in
/// ClickHouse for security, error diagnosis and exact usage billing.
///
/// Typical first run on a fresh machine: `sitelog stack up`, `sitelog schema migrate`,
/// `sitelog generate --out sample`, then `sitelog collect` and `sitelog process`.
#[derive(Parser, Debug)]
#[command(name = "sitelog", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start, stop or inspect the local stack (tansu Kafka broker + ClickHouse over chDB).
    Stack(cli::stack::StackArgs),
    /// ClickHouse schema: apply versioned migrations, bring TTLs to `[retention]`.
    Schema(cli::schema::SchemaArgs),
    /// Kafka topics: retention of the topics holding whole lines follows `[retention]`.
    Kafka(cli::kafka::KafkaArgs),
    /// Write a deterministic sample data set (register, access logs, ground truth).
    Generate(cli::generate::GenerateArgs),
    /// Parse access logs with a named or pasted log format and print JSON lines.
    Parse(cli::parse::ParseArgs),
    /// Tail access logs (live, rotated, .gz) into Kafka with durable checkpoints.
    Collect(cli::collect::CollectArgs),
    /// Consume access records from Kafka, attribute them to customers, store them in ClickHouse.
    Process(cli::process::ProcessArgs),
    /// Messages the processor quarantined because they were not valid batches.
    Deadletter(cli::deadletter::DeadletterArgs),
    /// The customer register: import an export, list unattributed hosts.
    Customers(cli::customers::CustomersArgs),
    /// Security analysis: events the detectors found, per site and across tenants; blocklists.
    Security(cli::security::SecurityArgs),
    /// Investigate one address/network across all customers, one site, or one site's errors (audited).
    Investigate(cli::investigate::InvestigateArgs),
    /// Health of sites and web servers now: worst first, against `[health] objective`.
    Health(cli::health::HealthArgs),
    /// Who looked at client addresses, when and why.
    Audit(cli::audit::AuditArgs),
    /// Disruption alerting: evaluate burn-rate rules over the health rollups, live or over a
    /// past window; store incidents; notify webhooks.
    Alerts(cli::alerts::AlertsArgs),
    /// Disruptions found by `alerts run`: list, show, and the affected customers' contacts.
    Incidents(cli::incidents::IncidentsArgs),
    /// The processor's per-month visitor keys: list them, destroy old ones for good.
    VisitorKeys(cli::visitor_keys::VisitorKeysArgs),
    /// Reports from ClickHouse: usage summary (and checks against generated ground truth).
    Report(cli::report::ReportArgs),
    /// The web console: now, incidents, security, sites and usage pages (`[serve]`).
    Serve(cli::serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_tracing();
    if let Err(e) = sitelog::clock::announce() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Stack(a) => cli::stack::run(a),
        Command::Schema(a) => cli::schema::run(a),
        Command::Kafka(a) => cli::kafka::run(a),
        Command::Generate(a) => cli::generate::run(a),
        Command::Parse(a) => cli::parse::run(a),
        Command::Collect(a) => cli::collect::run(a),
        Command::Process(a) => cli::process::run(a),
        Command::Customers(a) => cli::customers::run(a),
        Command::Deadletter(a) => cli::deadletter::run(a),
        Command::Report(a) => cli::report::run(a),
        Command::VisitorKeys(a) => cli::visitor_keys::run(a),
        Command::Security(a) => cli::security::run(a),
        Command::Investigate(a) => cli::investigate::run(a),
        Command::Health(a) => cli::health::run(a),
        Command::Audit(a) => cli::audit::run(a),
        Command::Alerts(a) => cli::alerts::run(a),
        Command::Incidents(a) => cli::incidents::run(a),
        Command::Serve(a) => cli::serve::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!("error: {text}{}", hint(&text));
            ExitCode::FAILURE
        }
    }
}

/// A hint for errors whose cause the client library cannot see. A TLS server answers a plain
/// HTTP request by closing or resetting the connection; the clickhouse crate then reports
/// only that.
fn hint(error: &str) -> &'static str {
    let closed = ["reset by peer", "connection closed before message completed"];
    if error.contains("network error:") && closed.iter().any(|c| error.contains(c)) {
        " (hint: a ClickHouse server that expects TLS drops plain http:// requests like this: \
         is [clickhouse] url https://?)"
    } else {
        ""
    }
}
