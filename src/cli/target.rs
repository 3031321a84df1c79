//! The flags that say which vSphere host to talk to and how to trust it.

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

use super::secret::read_password;
use crate::vsphere::{Credentials, Endpoint, Session, SessionOptions, TlsMode};

#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// vSphere host: `host`, `host:port`, or an SDK URL such as https://vc01/sdk
    #[arg(long, value_name = "URL")]
    pub url: String,

    /// User name to log in with
    #[arg(long, short = 'u', value_name = "USER")]
    pub user: String,

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

impl TargetArgs {
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err(format!(
                "--timeout {} must be a positive number of seconds",
                self.timeout
            ));
        }
        Ok(Endpoint {
            url: Endpoint::sdk_url(&self.url),
            tls: self.tls.mode()?,
            deadline: Duration::from_secs_f64(self.timeout),
        })
    }

    /// Reads the password and logs in.
    pub async fn connect(&self) -> Result<Session, String> {
        let endpoint = self.endpoint()?;
        let password = read_password(self.password_file.as_deref(), &self.user, &endpoint.host())?;
        let credentials = Credentials {
            user: self.user.clone(),
            password,
        };
        Session::connect(&endpoint, credentials, SessionOptions::default())
            .await
            .map_err(|e| e.to_string())
    }
}
