//! The fields of a vPoller request, as `vpoller call` and `vpoller client`
//! both take them, and the request object vpoller-client builds from them.

use clap::Args;
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// Object name (for datastores, the datastore URL)
    #[arg(long, short = 'n')]
    pub name: Option<String>,

    /// Comma-separated property paths
    #[arg(long, short = 'p', value_delimiter = ',')]
    pub properties: Option<Vec<String>>,

    /// Key, e.g. a guest disk path for vm.disk.get
    #[arg(long, short = 'k')]
    pub key: Option<String>,

    /// Performance counter name, group.name.unit.rollup
    #[arg(long, short = 'c')]
    pub counter: Option<String>,

    /// Performance counter instance
    #[arg(long, short = 'i')]
    pub instance: Option<String>,

    /// Number of performance samples
    #[arg(long, short = 's')]
    pub max_sample: Option<String>,

    /// Historical performance interval name, e.g. "Past day"
    #[arg(long, short = 'T')]
    pub perf_interval: Option<String>,

    /// Output helper, e.g. vpoller.helpers.zabbix
    #[arg(long, short = 'H')]
    pub helper: Option<String>,
}

/// Guest credentials, for the methods that run in a guest (vm.process.get).
pub struct Guest<'a> {
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
}

impl RequestArgs {
    /// The request as vpoller-client builds it: all twelve keys, null where
    /// not given.
    pub fn request(&self, method: &str, hostname: &str, guest: Guest<'_>) -> Value {
        json!({
            "method": method,
            "hostname": hostname,
            "name": self.name,
            "username": guest.username,
            "password": guest.password,
            "key": self.key,
            "properties": self.properties,
            "counter-name": self.counter,
            "instance": self.instance,
            "max-sample": self.max_sample,
            "perf-interval": self.perf_interval,
            "helper": self.helper,
        })
    }
}
