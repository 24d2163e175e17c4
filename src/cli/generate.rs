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
    /// First day with traffic (Europe/Helsinki), YYYY-MM-DD. Default: the last four full weeks
    /// (ending yesterday, moved back up to four days so they cross a month boundary), on the
    /// clock (`SITELOG_NOW` or the system clock).
    #[arg(long)]
    start: Option<NaiveDate>,
    /// Number of days with traffic.
    #[arg(long, default_value_t = sitelog::sample::DEFAULT_DAYS)]
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
        start: match a.start {
            Some(d) => d,
            None => sitelog::sample::default_start(sitelog::clock::today_helsinki()?, a.days),
        },
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
    println!("days {} .. {} (Europe/Helsinki), months {}", s.start, s.end, s.months.join(", "));
    println!("{} injected attacks (truth/security.csv)", s.attacks);
    println!("ground truth in {}/truth/", a.out.display());
    Ok(ExitCode::SUCCESS)
}
