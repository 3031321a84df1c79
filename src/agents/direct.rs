//! One vSphere host under one name, as `vpoller call --url` uses it.

use std::future::Future;
use std::pin::Pin;
use tokio::sync::OnceCell;

use super::Agents;
use crate::vsphere::{Client, Credentials, Endpoint, SessionOptions};

/// A single agent, logged in on first use and shared by every request.
pub struct DirectAgent {
    hostname: String,
    endpoint: Endpoint,
    credentials: Credentials,
    options: SessionOptions,
    session: OnceCell<Client>,
}

impl DirectAgent {
    pub fn new(
        hostname: impl Into<String>,
        endpoint: Endpoint,
        credentials: Credentials,
    ) -> DirectAgent {
        DirectAgent {
            hostname: hostname.into(),
            endpoint,
            credentials,
            options: SessionOptions::default(),
            session: OnceCell::new(),
        }
    }

    /// Uses these options for the session it makes.
    pub fn with_options(mut self, options: SessionOptions) -> DirectAgent {
        self.options = options;
        self
    }

    /// The session, if one was made.
    pub fn connected(&self) -> Option<&Client> {
        self.session.get()
    }
}

impl Agents for DirectAgent {
    fn check(&self, hostname: &str) -> Result<(), String> {
        if hostname == self.hostname {
            Ok(())
        } else {
            Err("Unknown or missing agent name".into())
        }
    }

    fn session<'a>(
        &'a self,
        _hostname: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Client, crate::vsphere::Error>> + Send + 'a>> {
        Box::pin(async move {
            self.session
                .get_or_try_init(|| async {
                    Client::connect(
                        &self.endpoint,
                        self.credentials.clone(),
                        self.options.clone(),
                    )
                    .await
                })
                .await
                .cloned()
        })
    }
}
