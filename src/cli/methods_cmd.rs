//! `vpoller methods list|check`: what the method directories hold.

use clap::Subcommand;
use std::path::PathBuf;

use super::method_args::MethodArgs;
use crate::methods::catalog::inspect;
use crate::methods::{Catalog, embedded};

/// Where a method's script comes from, as `methods list` shows it.
fn source_of(file: &std::path::Path) -> String {
    if embedded::is_extracted(file) {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("embedded:{name}")
    } else {
        file.display().to_string()
    }
}

#[derive(Debug, Subcommand)]
pub enum MethodsCommand {
    /// Show every method: name, where it comes from (a file, or the copy
    /// embedded in the binary) and description
    List {
        #[command(flatten)]
        methods: MethodArgs,
    },
    /// Write the built-in methods embedded in the binary to DIR, to read
    /// them or to start an override from
    Export {
        /// Where to write them (made if missing)
        dir: PathBuf,
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
            let dirs = methods.dirs();
            let catalog = Catalog::load(&dirs, None);
            if catalog.methods.is_empty() {
                return Err(dirs.nothing_loaded());
            }
            let width = catalog.methods.keys().map(String::len).max().unwrap_or(4);
            for (name, spec) in &catalog.methods {
                println!(
                    "{name:width$}  {}  {}",
                    source_of(&spec.file),
                    spec.description
                );
            }
            for problem in &catalog.problems {
                eprintln!("vpoller: {problem}");
            }
            Ok(catalog.problems.is_empty())
        }
        MethodsCommand::Export { dir } => {
            let written = embedded::export(&dir)?;
            println!(
                "Wrote {written} files ({} methods, their lib/ and helpers/) to {}",
                embedded::count(),
                dir.display()
            );
            Ok(true)
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
