//! `sitelog generate`: the bundled sample data set, with ground truth for exact tests.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::NaiveDate;
use sitelog::sample::{generate, GenerateOptions};

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Output directory (created; existing files are overwritten).
    #[arg(long, short, default_value = "sample")]
    out: PathBuf,
    /// Seed: the same seed and options always give byte-identical output.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// First day with traffic (Europe/Helsinki), YYYY-MM-DD. The default spans the October
    /// 2026 DST change and the month end.
    #[arg(long, default_value = "2026-10-12")]
    start: NaiveDate,
    /// Number of days with traffic.
    #[arg(long, default_value_t = 28)]
    days: u32,
    /// Number of customers in the register.
    #[arg(long, default_value_t = 12)]
    customers: usize,
    /// Mean human visits per site per day (bots, assets and attacks come on top).
    #[arg(long, default_value_t = 150)]
    rate: u32,
}

pub fn run(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.days >= 1, "--days must be at least 1");
    anyhow::ensure!(a.customers >= 3, "--customers must be at least 3 (the moved-domain case needs them)");
    let opts = GenerateOptions {
        out: a.out.clone(),
        seed: a.seed,
        start: a.start,
        days: a.days,
        customers: a.customers,
        rate: a.rate,
    };
    let s = generate(&opts).with_context(|| format!("writing the sample to {}", a.out.display()))?;
    println!(
        "wrote {}: {} customers, {} sites, {} files, {} lines ({} records, {} malformed), {} unattributed requests",
        a.out.display(),
        s.customers,
        s.sites,
        s.files,
        s.lines,
        s.records,
        s.malformed,
        s.unattributed_requests
    );
    println!("ground truth in {}/truth/", a.out.display());
    Ok(ExitCode::SUCCESS)
}
