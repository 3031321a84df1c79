//! `vpoller agent ...`: manage the vSphere hosts vpoller polls.

use clap::{Args, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use super::secret::{PASSWORD_ENV, read_password};
use super::target::TlsArgs;
use crate::agents::{AgentChanges, AgentRecord, DEFAULT_DB, DEFAULT_KEY_FILE, Store};
use crate::vsphere::{Client, Credentials, Endpoint, Password, SessionOptions};

/// Where the registry and its key are.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// The agent database
    #[arg(short = 'd', long = "db", value_name = "DB", env = "VPOLLER_DB", default_value = DEFAULT_DB)]
    pub db: PathBuf,

    /// The key file that encrypts the stored passwords
    #[arg(long, value_name = "FILE", env = "VPOLLER_KEY_FILE", default_value = DEFAULT_KEY_FILE)]
    pub key_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct HostArg {
    /// The agent: exactly the hostname clients send (host or host:port)
    #[arg(short = 'H', long = "host", value_name = "HOST")]
    pub host: String,
}

#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Read the password from the first line of this file
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// The password itself (for old scripts: it shows in the process list)
    #[arg(short = 'P', long = "pwd", value_name = "PASSWORD", hide = true)]
    pub password: Option<String>,
}

impl PasswordArgs {
    fn read(&self, user: &str, host: &str) -> Result<Password, String> {
        if let Some(p) = &self.password {
            eprintln!(
                "vpoller: warning: -P shows the password in the process list; use {PASSWORD_ENV} or --password-file instead"
            );
            return Ok(Password::new(p.clone()));
        }
        read_password(self.password_file.as_deref(), user, host)
    }

    fn given(&self) -> bool {
        self.password.is_some() || self.password_file.is_some()
    }
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create the agent database and its key file
    Init {
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Register a vSphere host
    Add {
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        host: HostArg,
        /// User name to log in with
        #[arg(short = 'U', long = "user", value_name = "USER")]
        user: String,
        /// Where to connect, when not https://HOST/sdk
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        #[command(flatten)]
        password: PasswordArgs,
        #[command(flatten)]
        tls: TlsArgs,
        /// Register it disabled
        #[arg(long)]
        disabled: bool,
    },
    /// Change a registered host; what is not given stays, enabled state included
    Update {
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        host: HostArg,
        /// New user name
        #[arg(short = 'U', long = "user", value_name = "USER")]
        user: Option<String>,
        /// New URL to connect to
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Set a new password (from VPOLLER_PASSWORD or a prompt; -P and --password-file imply it)
        #[arg(long)]
        new_password: bool,
        #[command(flatten)]
        password: PasswordArgs,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Remove a registered host
    Remove {
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        host: HostArg,
    },
    /// Enable a registered host
    Enable {
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        host: HostArg,
    },
    /// Disable a registered host (requests for it are refused)
    Disable {
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        host: HostArg,
    },
    /// Show the registered hosts (never their passwords)
    Get {
        #[command(flatten)]
        registry: RegistryArgs,
        /// Only this host
        #[arg(short = 'H', long = "host", value_name = "HOST")]
        host: Option<String>,
        /// JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Log in to a registered host, print its about information, log out
    Test {
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        host: HostArg,
        /// Deadline for each vSphere call, in seconds
        #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
        timeout: f64,
    },
    /// Bring over the agents of a vconnector database
    Import {
        #[command(flatten)]
        registry: RegistryArgs,
        /// The vconnector database (its `hosts` table)
        #[arg(long, value_name = "FILE")]
        vconnector: PathBuf,
    },
}

fn tls_change(tls: &TlsArgs) -> Result<Option<crate::vsphere::TlsMode>, String> {
    if tls.cacert.is_none() && tls.thumbprint.is_none() && !tls.insecure {
        return Ok(None);
    }
    tls.mode().map(Some)
}

pub async fn run(command: AgentCommand) -> Result<bool, String> {
    match command {
        AgentCommand::Init { registry } => init(&registry)?,
        AgentCommand::Add {
            registry,
            host,
            user,
            url,
            password,
            tls,
            disabled,
        } => {
            let record = AgentRecord {
                hostname: host.host.clone(),
                url,
                username: user,
                enabled: !disabled,
                tls: tls.mode()?,
                last_login: None,
                last_error: None,
            };
            add(&registry, record, &password)?
        }
        AgentCommand::Update {
            registry,
            host,
            user,
            url,
            new_password,
            password,
            tls,
        } => {
            let changes = Requested {
                user,
                url,
                new_password,
                tls,
            };
            update(&registry, &host.host, changes, &password)?
        }
        AgentCommand::Remove { registry, host } => {
            Store::open(&registry.db, None)?.remove(&host.host)?;
            println!("Removed agent {}", host.host);
        }
        AgentCommand::Enable { registry, host } => {
            Store::open(&registry.db, None)?.set_enabled(&host.host, true)?;
            println!("Enabled agent {}", host.host);
        }
        AgentCommand::Disable { registry, host } => {
            Store::open(&registry.db, None)?.set_enabled(&host.host, false)?;
            println!("Disabled agent {}", host.host);
        }
        AgentCommand::Get {
            registry,
            host,
            json,
        } => {
            let store = Store::open(&registry.db, None)?;
            let agents = match host {
                Some(h) => vec![store.get(&h)?],
                None => store.list()?,
            };
            if json {
                let text = serde_json::to_string_pretty(&agents).map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                print_table(&agents);
            }
        }
        AgentCommand::Test {
            registry,
            host,
            timeout,
        } => test(&registry, &host.host, timeout).await?,
        AgentCommand::Import {
            registry,
            vconnector,
        } => import(&registry, &vconnector)?,
    }
    Ok(true)
}

fn init(registry: &RegistryArgs) -> Result<(), String> {
    let (store, created_key) = Store::init(&registry.db, &registry.key_file)?;
    println!("Initialised agent database {}", store.path().display());
    if created_key {
        println!(
            "Created key file {} (mode 0600); keep it: without it the stored passwords cannot be read",
            registry.key_file.display()
        );
    } else {
        println!(
            "Using the existing key file {}",
            registry.key_file.display()
        );
    }
    Ok(())
}

fn add(
    registry: &RegistryArgs,
    record: AgentRecord,
    password: &PasswordArgs,
) -> Result<(), String> {
    let store = Store::open(&registry.db, Some(&registry.key_file))?;
    if store.get(&record.hostname).is_ok() {
        return Err(format!(
            "agent {} already exists in {}; change it with `vpoller agent update`",
            record.hostname,
            registry.db.display()
        ));
    }
    let secret = password.read(&record.username, &record.hostname)?;
    store.add(&record, &secret)?;
    println!("Added agent {}", record.hostname);
    Ok(())
}

/// What `vpoller agent update` was asked to change.
struct Requested {
    user: Option<String>,
    url: Option<String>,
    new_password: bool,
    tls: TlsArgs,
}

fn update(
    registry: &RegistryArgs,
    host: &str,
    requested: Requested,
    password: &PasswordArgs,
) -> Result<(), String> {
    let store = Store::open(&registry.db, Some(&registry.key_file))?;
    let current = store.get(host)?;
    let secret = if requested.new_password || password.given() {
        let who = requested.user.as_deref().unwrap_or(&current.username);
        Some(password.read(who, host)?)
    } else {
        None
    };
    let changes = AgentChanges {
        url: requested.url.map(Some),
        username: requested.user,
        password: secret,
        tls: tls_change(&requested.tls)?,
    };
    store.update(host, changes)?;
    println!("Updated agent {}", host);
    Ok(())
}

async fn test(registry: &RegistryArgs, host: &str, timeout: f64) -> Result<(), String> {
    let store = Store::open(&registry.db, Some(&registry.key_file))?;
    let record = store.get(host)?;
    let password = store.password(host)?;
    let endpoint = Endpoint {
        url: record.sdk_url(),
        tls: record.tls.clone(),
        deadline: super::positive_seconds("--timeout", timeout)?,
    };
    let credentials = Credentials {
        user: record.username.clone(),
        password,
    };
    match Client::connect(&endpoint, credentials, SessionOptions::default()).await {
        Ok(session) => {
            store.record_login(host, Ok(()));
            let about = serde_json::to_string_pretty(session.about()).map_err(|e| e.to_string())?;
            println!("{about}");
            session.shutdown().await.map_err(|e| e.to_string())?;
            if !record.enabled {
                eprintln!("vpoller: note: agent {} is disabled", host);
            }
        }
        Err(e) => {
            store.record_login(host, Err(&e.to_string()));
            return Err(e.to_string());
        }
    }
    Ok(())
}

fn import(registry: &RegistryArgs, vconnector: &Path) -> Result<(), String> {
    let store = Store::open(&registry.db, Some(&registry.key_file))?;
    let (imported, skipped) = store.import_vconnector(vconnector)?;
    println!("Imported {imported} agents from {}", vconnector.display());
    if !skipped.is_empty() {
        println!(
            "Skipped {} already registered: {}",
            skipped.len(),
            skipped.join(", ")
        );
    }
    Ok(())
}

fn print_table(agents: &[AgentRecord]) {
    let header = [
        "HOSTNAME",
        "USERNAME",
        "ENABLED",
        "TLS",
        "LAST LOGIN",
        "LAST ERROR",
    ];
    let rows: Vec<[String; 6]> = agents
        .iter()
        .map(|a| {
            [
                a.hostname.clone(),
                a.username.clone(),
                if a.enabled { "yes" } else { "no" }.to_string(),
                a.tls.label(),
                a.last_login.clone().unwrap_or_else(|| "-".into()),
                a.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    if rows.is_empty() && std::io::stdout().is_terminal() {
        println!("(no agents; add one with `vpoller agent add`)");
    }
}

/// The agent commands, by the names clients type.
const COMMANDS: &[&str] = &[
    "init", "add", "update", "remove", "enable", "disable", "get", "test", "import",
];

/// Options of the agent commands that take a value (the value is never
/// taken for a command name).
const VALUED: &[&str] = &[
    "-d",
    "--db",
    "--key-file",
    "-H",
    "--host",
    "-U",
    "--user",
    "--url",
    "--password-file",
    "-P",
    "--pwd",
    "--cacert",
    "--thumbprint",
    "--timeout",
    "--vconnector",
    "--log-level",
];

/// vconnector-cli took its options before the command
/// (`vconnector-cli -d DB -H vc01 -U user add`); so does `vpoller agent`:
/// the command word is moved to just after `agent`, where clap wants it.
pub fn command_first(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let Some(agent) = args.iter().position(|a| a == "agent") else {
        return args;
    };
    let mut i = agent + 1;
    while i < args.len() {
        // Not UTF-8: no option or command of ours; clap will say what it is.
        let Some(arg) = args[i].to_str() else { break };
        if COMMANDS.contains(&arg) {
            if i > agent + 1 {
                let command = args.remove(i);
                args.insert(agent + 1, command);
            }
            break;
        }
        if !arg.starts_with('-') || arg == "--" {
            break;
        }
        let takes_value = VALUED.contains(&arg) && !arg.contains('=');
        i += if takes_value { 2 } else { 1 };
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<std::ffi::OsString> {
        s.split_whitespace().map(std::ffi::OsString::from).collect()
    }

    #[test]
    fn options_before_the_command_are_accepted_as_vconnector_cli_took_them() {
        assert_eq!(
            command_first(words("vpoller agent -d a.db -H vc01 -U user add")),
            words("vpoller agent add -d a.db -H vc01 -U user")
        );
        assert_eq!(
            command_first(words("vpoller agent add -H vc01")),
            words("vpoller agent add -H vc01")
        );
        // A value that happens to be a command name stays a value.
        assert_eq!(
            command_first(words("vpoller agent -H test get")),
            words("vpoller agent get -H test")
        );
        assert_eq!(
            command_first(words("vpoller call vm.get -V add")),
            words("vpoller call vm.get -V add")
        );
    }
}
