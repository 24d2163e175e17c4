//! `sitelog visitor-keys list|destroy`: the processor's per-month secrets behind the usage
//! rollup's visitor identities (`sitelog_processor::visitors`). Destroying a month's key makes
//! its stored visitor states untestable for everyone, for good.

use std::process::ExitCode;

use sitelog_processor::visitors::{KeyState, KeyStore};

use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct VisitorKeysArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Every month's key: active or destroyed (never the key itself).
    List {
        #[command(flatten)]
        opts: ProcessorOpts,
    },
    /// Destroy the keys of every month up to and including MONTH (YYYY-MM). Do it once those
    /// months can receive no more late records: records that still arrive for them are billed
    /// (requests, bytes) but count no visitors.
    Destroy {
        #[command(flatten)]
        opts: ProcessorOpts,
        /// The last month whose key is destroyed.
        #[arg(long, value_name = "YYYY-MM")]
        through: String,
    },
}

pub fn run(a: VisitorKeysArgs) -> anyhow::Result<ExitCode> {
    let opts = match &a.action {
        Action::List { opts } | Action::Destroy { opts, .. } => opts,
    };
    let cfg = opts.load()?;
    let dir = cfg.privacy.key_dir();
    let mut store = KeyStore::open(&dir)?;
    match a.action {
        Action::List { .. } => {
            println!("visitor keys in {}", dir.display());
            for (month, state) in store.list()? {
                println!("{month}  {}", if state == KeyState::Active { "active" } else { "destroyed" });
            }
        }
        Action::Destroy { through, .. } => {
            through
                .parse::<sitelog_processor::billing::Month>()
                .map_err(|_| anyhow::anyhow!("--through '{through}' is not a month: use YYYY-MM"))?;
            let mut n = 0;
            for (month, state) in store.list()? {
                if month.as_str() <= through.as_str() && state == KeyState::Active {
                    store.destroy(&month)?;
                    println!("destroyed the visitor key of {month}");
                    n += 1;
                }
            }
            println!("{n} key(s) destroyed through {through}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
