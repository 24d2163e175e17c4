//! `sitelog stack …`: the real local services for demos and manual testing.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use sitelog::stack::{self, StackState};
use sitelog_schema::wire::{ACCESS_TOPIC, DEADLETTER_TOPIC, HEARTBEAT_TOPIC, REJECTS_TOPIC};

#[derive(clap::Args, Debug)]
pub struct StackArgs {
    #[command(subcommand)]
    action: Action,
    /// Directory for the services' data, logs and state.json.
    #[arg(long, global = true, env = "SITELOG_STACK_DIR", default_value = ".stack")]
    dir: PathBuf,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Build/install tansu and the chDB venv into the cache outside the clone (once per machine).
    Install,
    /// Start tansu (Kafka protocol) and the ClickHouse HTTP endpoint over chDB, detached.
    Up {
        /// Kafka listener port on 127.0.0.1 (0 = a free one).
        #[arg(long, default_value_t = 0)]
        kafka_port: u16,
        /// ClickHouse HTTP port on 127.0.0.1 (0 = a free one).
        #[arg(long, default_value_t = 0)]
        clickhouse_port: u16,
        /// Partitions of the access-record topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
    },
    /// Stop the services started by `up` (their data stays in --dir).
    Down,
    /// Show whether the services run, their addresses and logs; exit 1 if any is down.
    Status,
    /// Print `KEY=value` lines (SITELOG_KAFKA_BROKERS, SITELOG_CLICKHOUSE_URL) for `eval`.
    Env,
}

pub fn run(args: StackArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Install => {
            stack::install()?;
            println!("installed: {} and {}", stack::tansu_bin().display(), stack::chdb_python().display());
        }
        Action::Up { kafka_port, clickhouse_port, partitions } => {
            let st = stack::up(
                &args.dir,
                kafka_port,
                clickhouse_port,
                &[(ACCESS_TOPIC, partitions), (REJECTS_TOPIC, 1), (DEADLETTER_TOPIC, 1), (HEARTBEAT_TOPIC, 1)],
            )
            .context("starting the local stack")?;
            println!("kafka      {}  (tansu, log {}/kafka.log)", st.kafka_bootstrap, args.dir.display());
            println!("clickhouse {}  (chDB, log {}/clickhouse.log)", st.clickhouse_url, args.dir.display());
        }
        Action::Down => {
            stack::down(&args.dir)?;
            println!("stack in {} stopped", args.dir.display());
        }
        Action::Status => {
            let st = StackState::load(&args.dir)?;
            let mut ok = true;
            for (name, alive, addr, log) in [
                ("kafka", st.kafka_alive(), &st.kafka_bootstrap, "kafka.log"),
                ("clickhouse", st.clickhouse_alive(), &st.clickhouse_url, "clickhouse.log"),
            ] {
                ok &= alive;
                let state = if alive { "up" } else { "DOWN" };
                println!("{name:<10} {state:<4} {addr}  log {}", args.dir.join(log).display());
            }
            return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Action::Env => {
            let st = StackState::load(&args.dir)?;
            println!("SITELOG_KAFKA_BROKERS={}", st.kafka_bootstrap);
            println!("SITELOG_CLICKHOUSE_URL={}", st.clickhouse_url);
        }
    }
    Ok(ExitCode::SUCCESS)
}
