//! `clustera completions SHELL`: the completion script clap generates from the command's own
//! definition, so it never falls behind a flag.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Arguments of `clustera completions`.
#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell.
    shell: Shell,
}

/// Writes the script for `C` (the `clustera` command) to standard output.
pub fn run<C: CommandFactory>(args: CompletionsArgs) -> anyhow::Result<()> {
    clap_complete::generate(
        args.shell,
        &mut C::command(),
        "clustera",
        &mut std::io::stdout(),
    );
    Ok(())
}
