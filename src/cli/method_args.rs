//! The flags of every command that runs methods: where scripts live and
//! what a call may spend.

use clap::Args;
use std::path::{Path, PathBuf};

use crate::methods::{Limits, MethodDirs};

/// Where an installed admin puts their own methods, used when it exists and
/// no --methods-dir is given.
pub const DEFAULT_ADMIN_DIR: &str = "/etc/vpoller/methods.d";

#[derive(Debug, Clone, Args)]
pub struct MethodArgs {
    /// An admin method directory; repeatable, later ones override earlier
    /// ones and the built-in methods [default: /etc/vpoller/methods.d if it exists]
    #[arg(long = "methods-dir", value_name = "DIR")]
    pub methods_dirs: Vec<PathBuf>,

    /// The built-in method directory [default: found beside the binary]
    #[arg(long, value_name = "DIR", env = "VPOLLER_BUILTIN_METHODS")]
    pub builtin_methods: Option<PathBuf>,

    /// Lua instruction budget of one call
    #[arg(long, value_name = "N", default_value_t = Limits::default().instructions)]
    pub lua_instructions: u64,

    /// Lua memory limit of one call, in MiB
    #[arg(long, value_name = "MIB", default_value_t = Limits::default().memory >> 20)]
    pub lua_memory_mb: usize,

    /// Wall-clock limit of one call, in seconds (vSphere waits included)
    #[arg(long, value_name = "SECONDS", default_value_t = Limits::default().timeout.as_secs_f64())]
    pub lua_timeout: f64,
}

impl MethodArgs {
    pub fn dirs(&self) -> MethodDirs {
        method_dirs(self.builtin_methods.clone(), &self.methods_dirs)
    }

    pub fn limits(&self) -> Result<Limits, String> {
        if self.lua_memory_mb == 0 || self.lua_instructions == 0 {
            return Err("--lua-memory-mb and --lua-instructions must be positive".into());
        }
        let memory = self
            .lua_memory_mb
            .checked_mul(1 << 20)
            .ok_or_else(|| format!("--lua-memory-mb {} is too large", self.lua_memory_mb))?;
        let timeout = super::positive_seconds("--lua-timeout", self.lua_timeout)?;
        // One call at a time here: the whole budget is the call's.
        Ok(Limits {
            instructions: self.lua_instructions,
            memory,
            timeout,
            total_memory: memory,
            ..Limits::default()
        })
    }
}

/// The method directories every command uses: the given built-in
/// directory or the one found by [`builtin_dir`], and the given admin
/// directories or, when none is given, /etc/vpoller/methods.d if it exists.
pub fn method_dirs(builtin: Option<PathBuf>, admin: &[PathBuf]) -> MethodDirs {
    let admin = if admin.is_empty() && Path::new(DEFAULT_ADMIN_DIR).is_dir() {
        vec![PathBuf::from(DEFAULT_ADMIN_DIR)]
    } else {
        admin.to_vec()
    };
    let builtin = builtin.or_else(builtin_dir).or_else(|| {
        crate::methods::embedded::extracted()
            .map_err(|e| tracing::error!("{e}"))
            .ok()
    });
    MethodDirs { builtin, admin }
}

/// The built-in methods on disk: `methods/` beside the binary, the
/// installed `../share/vpoller/methods`, or, for a binary in a source
/// tree's `target/`, the tree's own `methods/`. When there is none, the
/// copy embedded in the binary is used (see [`crate::methods::embedded`]).
pub fn builtin_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?;
    let candidates = [
        bin.join("methods"),
        bin.join("../share/vpoller/methods"),
        bin.join("../../methods"),
    ];
    candidates
        .into_iter()
        .find(|p| p.join("about.lua").is_file())
        .map(|p| p.canonicalize().unwrap_or(p))
}
