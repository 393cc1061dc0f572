//! `cidmirror key`: the publisher's signing key.

use std::process::ExitCode;

use cidmirror_ingest::keys::PublisherKey;

use crate::Context;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print the public key (created on first use): followers are configured with it.
    Show,
}

pub async fn run(ctx: &Context, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Show => {
            let k = PublisherKey::load_or_create(&ctx.data_dir.join("publisher.key"))?;
            println!("{}", k.public_hex());
        }
    }
    Ok(ExitCode::SUCCESS)
}
