//! `vpoller generate`: shell completions and man pages, made from the
//! command line's own definitions so that they never drift from it.

use clap::{CommandFactory, Subcommand};
use std::path::{Path, PathBuf};

use super::Cli;

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Print the completion script for a shell
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Write man pages (vpoller.1 and one per command) to DIR
    Man {
        /// Where to write them (made if missing)
        dir: PathBuf,
    },
}

pub fn run(command: GenerateCommand) -> Result<bool, String> {
    match command {
        GenerateCommand::Completions { shell } => {
            // Into memory first: the generator panics on a failed write
            // (a closed pipe), and this program does not panic.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "vpoller", &mut script);
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match out.write_all(&script).and_then(|()| out.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(format!("cannot write the completions: {e}")),
            }
        }
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let written = write_pages(&Cli::command(), "vpoller", &dir)?;
            println!("Wrote {written} man pages to {}", dir.display());
        }
    }
    Ok(true)
}

/// The page of `command` and of each of its subcommands, named
/// `vpoller-agent-add.1` and so on.
fn write_pages(command: &clap::Command, name: &str, dir: &Path) -> Result<usize, String> {
    let command = command.clone().name(name.to_string());
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .map_err(|e| format!("cannot render the man page of {name}: {e}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut written = 1;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        written += write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(written)
}
