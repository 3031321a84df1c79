//! The flags that say which vSphere host to talk to and how to trust it.

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

use super::secret::read_password;
use crate::vsphere::{Client, Credentials, Endpoint, SessionOptions, TlsMode};

/// `--url` and `--user`, both required, plus how to connect.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// vSphere host: `host`, `host:port`, or an SDK URL such as https://vc01/sdk
    #[arg(long, value_name = "URL")]
    pub url: String,

    /// User name to log in with
    #[arg(long, short = 'u', value_name = "USER")]
    pub user: String,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

impl TargetArgs {
    /// Reads the password and logs in.
    pub async fn connect(&self) -> Result<Client, String> {
        let (endpoint, credentials) = self.connect.login_for(&self.url, &self.user)?;
        Client::connect(&endpoint, credentials, SessionOptions::default())
            .await
            .map_err(|e| e.to_string())
    }
}

/// How to log in and trust the host, whichever host it is.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Read the password from the first line of this file (else
    /// VPOLLER_PASSWORD, else a prompt)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Deadline for each vSphere call, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub timeout: f64,
}

impl ConnectArgs {
    /// The deadline of each vSphere call.
    pub fn deadline(&self) -> Result<Duration, String> {
        super::positive_seconds("--timeout", self.timeout)
    }

    pub fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        Ok(Endpoint {
            url: Endpoint::sdk_url(url),
            tls: self.tls.mode()?,
            deadline: self.deadline()?,
        })
    }

    /// The endpoint and credentials, reading the password now.
    pub fn login_for(&self, url: &str, user: &str) -> Result<(Endpoint, Credentials), String> {
        let endpoint = self.endpoint(url)?;
        let password = read_password(self.password_file.as_deref(), user, &endpoint.host())?;
        Ok((
            endpoint,
            Credentials {
                user: user.to_string(),
                password,
            },
        ))
    }
}

#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Trust the CA certificates in this PEM file
    #[arg(long, value_name = "FILE", group = "trust")]
    pub cacert: Option<PathBuf>,

    /// Trust exactly the certificate with this SHA-256 thumbprint
    #[arg(long, value_name = "SHA256", group = "trust")]
    pub thumbprint: Option<String>,

    /// Do not verify the certificate (logs a warning)
    #[arg(long, group = "trust")]
    pub insecure: bool,
}

impl TlsArgs {
    pub fn mode(&self) -> Result<TlsMode, String> {
        Ok(if let Some(path) = &self.cacert {
            TlsMode::CaFile(path.clone())
        } else if let Some(t) = &self.thumbprint {
            crate::vsphere::tls::parse_thumbprint(t)?;
            TlsMode::Thumbprint(t.clone())
        } else if self.insecure {
            TlsMode::Insecure
        } else {
            TlsMode::Verify
        })
    }
}
