//! `vpoller methods list|check`: what the method directories hold.

use clap::Subcommand;
use std::path::PathBuf;

use super::method_args::MethodArgs;
use crate::methods::Catalog;
use crate::methods::catalog::inspect;

#[derive(Debug, Subcommand)]
pub enum MethodsCommand {
    /// Show every method: name, file and description
    List {
        #[command(flatten)]
        methods: MethodArgs,
    },
    /// Load scripts without running them; exit 1 naming file:line on an error
    Check {
        /// Script files to check [default: every script of the method directories]
        files: Vec<PathBuf>,
        #[command(flatten)]
        methods: MethodArgs,
    },
}

pub fn run(command: MethodsCommand) -> Result<bool, String> {
    match command {
        MethodsCommand::List { methods } => {
            let catalog = Catalog::load(&methods.dirs(), None);
            let width = catalog.methods.keys().map(String::len).max().unwrap_or(4);
            for (name, spec) in &catalog.methods {
                println!(
                    "{name:width$}  {}  {}",
                    spec.file.display(),
                    spec.description
                );
            }
            for problem in &catalog.problems {
                eprintln!("vpoller: {problem}");
            }
            Ok(catalog.problems.is_empty())
        }
        MethodsCommand::Check { files, methods } => {
            let dirs = methods.dirs();
            if files.is_empty() {
                let catalog = Catalog::load(&dirs, None);
                for problem in &catalog.problems {
                    println!("{problem}");
                }
                println!(
                    "{} methods, {} problems",
                    catalog.methods.len(),
                    catalog.problems.len()
                );
                return Ok(catalog.problems.is_empty());
            }
            let mut ok = true;
            for file in files {
                let source = std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                match inspect(&file, source.into(), &dirs.lib_dirs()) {
                    Ok(spec) => println!("ok {} ({})", spec.name, file.display()),
                    Err(e) => {
                        ok = false;
                        println!("{e}");
                    }
                }
            }
            Ok(ok)
        }
    }
}
