//! `sitelog deadletter list|show`: the messages the processor quarantined because they were
//! not valid batches (where they came from, why, and their bytes).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sitelog_processor::quarantine::{self, Entry};

use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct DeadletterArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Every quarantined message, one line each (oldest source position first).
    List {
        #[command(flatten)]
        opts: ProcessorOpts,
        /// `table` for people, `json` for tools (one object per line).
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// One quarantined message: where it came from, why, and a hex dump of its bytes.
    Show {
        #[command(flatten)]
        opts: ProcessorOpts,
        /// Its position in the access topic, as `list` prints it: TOPIC/PARTITION/OFFSET, or
        /// PARTITION/OFFSET for the configured topic.
        position: String,
        /// Write the kept bytes to this file instead of dumping them.
        #[arg(long)]
        raw: Option<PathBuf>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    Table,
    Json,
}

pub fn run(a: DeadletterArgs) -> anyhow::Result<ExitCode> {
    match a.action {
        Action::List { opts, format } => {
            let (cfg, entries) = read(&opts)?;
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json => {
                    for e in &entries {
                        writeln!(out, "{}", serde_json::to_string(e)?)?;
                    }
                }
                Format::Table => {
                    writeln!(out, "{} quarantined message(s) in {}", entries.len(), cfg.kafka.deadletter_topic)?;
                    for e in &entries {
                        writeln!(
                            out,
                            "{}  {}  key={}  {} bytes  {}: {}",
                            e.source_position(),
                            e.quarantined_at,
                            e.key.as_deref().unwrap_or("-"),
                            e.original_bytes,
                            e.kind,
                            e.reason
                        )?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Show { opts, position, raw } => {
            let (cfg, entries) = read(&opts)?;
            let want = if position.matches('/').count() == 1 {
                format!("{}/{position}", cfg.kafka.topic)
            } else {
                position.clone()
            };
            let Some(e) = entries.iter().find(|e| e.source_position() == want) else {
                anyhow::bail!(
                    "no quarantined message at {want} in {} ({} entries; see `sitelog deadletter list`)",
                    cfg.kafka.deadletter_topic,
                    entries.len()
                );
            };
            show(e, raw)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read(opts: &ProcessorOpts) -> anyhow::Result<(sitelog_processor::config::ProcessorConfig, Vec<Entry>)> {
    let cfg = opts.load()?;
    let entries = quarantine::read_all(&cfg.kafka, Duration::from_secs(30)).with_context(|| {
        format!("reading dead-letter topic '{}' at {}", cfg.kafka.deadletter_topic, cfg.kafka.brokers)
    })?;
    Ok((cfg, entries))
}

fn show(e: &Entry, raw: Option<PathBuf>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "source:          {}", e.source_position())?;
    writeln!(out, "key:             {}", e.key.as_deref().unwrap_or("-"))?;
    writeln!(out, "quarantined at:  {}", e.quarantined_at)?;
    writeln!(out, "dead-letter:     partition {} offset {}", e.deadletter_partition, e.deadletter_offset)?;
    writeln!(out, "reason:          {}: {}", e.kind, e.reason)?;
    writeln!(out, "bytes:           {} (kept {})", e.original_bytes, e.payload.len())?;
    if let Some(path) = raw {
        std::fs::write(&path, &e.payload).with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "raw bytes written to {}", path.display())?;
        return Ok(());
    }
    for (i, chunk) in e.payload.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let text: String =
            chunk.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' }).collect();
        writeln!(out, "{:08x}  {:<47}  {text}", i * 16, hex.join(" "))?;
    }
    Ok(())
}
