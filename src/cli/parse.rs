use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ParseArgs {}

pub fn run(_args: ParseArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
