//! Where a vSphere password comes from. Never argv: it would show in `ps`.

use std::io::IsTerminal;
use std::path::Path;

use crate::vsphere::Password;

pub const PASSWORD_ENV: &str = "VPOLLER_PASSWORD";

/// The password from `--password-file`, else `VPOLLER_PASSWORD`, else a
/// prompt when standard input is a terminal.
pub fn read_password(file: Option<&Path>, user: &str, host: &str) -> Result<Password, String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read password file {}: {e}", path.display()))?;
        let line = text.lines().next().unwrap_or("");
        if line.is_empty() {
            return Err(format!("password file {} is empty", path.display()));
        }
        return Ok(Password::new(line));
    }
    if let Ok(p) = std::env::var(PASSWORD_ENV)
        && !p.is_empty()
    {
        return Ok(Password::new(p));
    }
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("Password for {user} at {host}: "))
            .map(Password::new)
            .map_err(|e| format!("cannot read the password from the terminal: {e}"));
    }
    Err(format!(
        "no password for {user} at {host}: set {PASSWORD_ENV}, give --password-file FILE, or run on a terminal to be asked"
    ))
}
