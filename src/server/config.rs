//! The configuration file: vPoller's INI sections and options (`[proxy]`,
//! `[worker]`, `[cache]`) plus vpoller's own. No file means the documented
//! defaults (config/vpoller.conf). An unknown option is a warning naming
//! it; a bad value is an error naming section, option and value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::methods::Limits;
use crate::vsphere::GuardOptions;
use crate::vsphere::mirror::MirrorOptions;
use crate::vsphere::perf_query::PerfOptions;

#[derive(Debug, Clone)]
pub struct Config {
    pub proxy_frontend: String,
    pub proxy_backend: String,
    pub proxy_mgmt: String,
    pub worker_proxy: String,
    pub worker_mgmt: String,
    pub worker_concurrency: usize,
    pub db: PathBuf,
    pub key_file: PathBuf,
    pub methods_dirs: Vec<PathBuf>,
    pub builtin_methods: Option<PathBuf>,
    pub limits: Limits,
    pub vsphere_timeout: Duration,
    pub guards: GuardOptions,
    pub perf: PerfOptions,
    pub mirror: MirrorOptions,
    pub index_ttl: Duration,
    pub grace: Duration,
    pub request_timeout: Duration,
    pub heartbeat: Duration,
    pub log_level: String,
    pub log_json: bool,
    /// `[http] listen`: the HTTP front end, off when `None`.
    pub http_listen: Option<std::net::SocketAddr>,
    pub http_token_file: Option<PathBuf>,
    pub http_cert_file: Option<PathBuf>,
    pub http_key_file: Option<PathBuf>,
    /// `[metrics] listen`: the Prometheus endpoint, off when `None`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub nats: super::nats::NatsOptions,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            proxy_frontend: "tcp://*:10123".into(),
            proxy_backend: "tcp://*:10124".into(),
            proxy_mgmt: "tcp://127.0.0.1:9999".into(),
            worker_proxy: "tcp://127.0.0.1:10124".into(),
            worker_mgmt: "tcp://127.0.0.1:10000".into(),
            worker_concurrency: 0,
            db: PathBuf::from(crate::agents::DEFAULT_DB),
            key_file: PathBuf::from(crate::agents::DEFAULT_KEY_FILE),
            methods_dirs: Vec::new(),
            builtin_methods: None,
            limits: Limits::default(),
            vsphere_timeout: Duration::from_secs(30),
            guards: GuardOptions::default(),
            perf: PerfOptions::default(),
            mirror: MirrorOptions {
                enabled: true,
                ..MirrorOptions::default()
            },
            index_ttl: Duration::from_secs(300),
            grace: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(1),
            log_level: "info".into(),
            log_json: false,
            http_listen: None,
            http_token_file: None,
            http_cert_file: None,
            http_key_file: None,
            metrics_listen: None,
            nats: super::nats::NatsOptions::default(),
        }
    }
}

/// The configuration and the warnings about it.
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads `path`; `None`, or a default path that does not exist, gives
    /// the defaults.
    pub fn load(path: Option<&Path>) -> Result<Loaded, String> {
        let mut config = Config::default();
        let mut warnings = Vec::new();
        let Some(path) = path else {
            return Ok(Loaded { config, warnings });
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the configuration {}: {e}", path.display()))?;
        let mut section = String::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_string();
                continue;
            }
            let Some((option, value)) = line.split_once('=').or_else(|| line.split_once(':'))
            else {
                return Err(format!(
                    "{}:{}: expected `option = value`, got {line:?}",
                    path.display(),
                    n + 1
                ));
            };
            let (option, value) = (option.trim(), value.trim());
            if let Some(warning) = config.set(&section, option, value)? {
                warnings.push(format!("{}:{}: {warning}", path.display(), n + 1));
            }
        }
        Ok(Loaded { config, warnings })
    }

    /// Applies one option; `Ok(Some(warning))` for one this vpoller ignores.
    fn set(&mut self, section: &str, option: &str, value: &str) -> Result<Option<String>, String> {
        let bad = |what: &str| format!("[{section}] {option} = {value:?}: {what}");
        let seconds = |v: &str| -> Result<Duration, String> {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .filter(|d| *d <= MAX_SECONDS)
                .ok_or_else(|| bad("expected a positive number of seconds, at most a year"))
        };
        let number = |v: &str| v.parse::<u64>().map_err(|_| bad("expected a whole number"));
        let mebibytes = |v: &str| -> Result<usize, String> {
            number(v)?
                .max(1)
                .checked_mul(1 << 20)
                .and_then(|b| usize::try_from(b).ok())
                .ok_or_else(|| bad("too large"))
        };
        let boolean = |v: &str| match v.to_ascii_lowercase().as_str() {
            "1" | "yes" | "true" | "on" => Ok(true),
            "0" | "no" | "false" | "off" => Ok(false),
            _ => Err(bad("expected true or false")),
        };
        match (section, option) {
            ("proxy", "frontend") => self.proxy_frontend = endpoint(value).map_err(|e| bad(&e))?,
            ("proxy", "backend") => self.proxy_backend = endpoint(value).map_err(|e| bad(&e))?,
            ("proxy", "mgmt") => self.proxy_mgmt = endpoint(value).map_err(|e| bad(&e))?,
            ("proxy", "request-timeout") => self.request_timeout = seconds(value)?,
            ("proxy", "heartbeat") => self.heartbeat = seconds(value)?,
            ("worker", "proxy") => self.worker_proxy = endpoint(value).map_err(|e| bad(&e))?,
            ("worker", "mgmt") => self.worker_mgmt = endpoint(value).map_err(|e| bad(&e))?,
            ("worker", "db") => self.db = PathBuf::from(value),
            ("worker", "key-file") => self.key_file = PathBuf::from(value),
            ("worker", "concurrency") => self.worker_concurrency = number(value)? as usize,
            ("worker", "methods-dir") => {
                self.methods_dirs = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            }
            ("worker", "builtin-methods") => self.builtin_methods = Some(PathBuf::from(value)),
            ("worker", "helpers") | ("worker", "tasks") => {
                return Ok(Some(format!(
                    "[worker] {option} is vPoller's list of Python modules; vpoller's methods and helpers are the scripts of its method directories"
                )));
            }
            ("cache", "enabled") => {
                boolean(value)?;
            }
            ("cache", "ttl") => self.index_ttl = seconds(value)?,
            ("cache", "maxsize") | ("cache", "housekeeping") => {
                number(value)?;
            }
            ("lua", "instructions") => self.limits.instructions = number(value)?.max(1),
            ("lua", "memory-mb") => self.limits.memory = mebibytes(value)?,
            ("lua", "total-memory-mb") => self.limits.total_memory = mebibytes(value)?,
            ("requests", "max-list-entries") => {
                self.limits.max_list_entries =
                    usize::try_from(number(value)?.max(1)).map_err(|_| bad("too large"))?
            }
            ("requests", "max-string-bytes") => {
                self.limits.max_string_bytes =
                    usize::try_from(number(value)?.max(1)).map_err(|_| bad("too large"))?
            }
            ("lua", "timeout") => self.limits.timeout = seconds(value)?,
            ("vsphere", "timeout") => self.vsphere_timeout = seconds(value)?,
            ("vsphere", "login-backoff") => self.guards.login_backoff = seconds(value)?,
            ("vsphere", "login-backoff-max") => self.guards.login_backoff_max = seconds(value)?,
            ("vsphere", "unreachable-after") => {
                self.guards.breaker_threshold =
                    u32::try_from(number(value)?.max(1)).map_err(|_| bad("too large"))?
            }
            ("vsphere", "unreachable-cooldown") => self.guards.breaker_cooldown = seconds(value)?,
            ("vsphere", "unreachable-cooldown-max") => {
                self.guards.breaker_cooldown_max = seconds(value)?
            }
            ("daemon", "grace") => self.grace = seconds(value)?,
            ("perf", "window-ms") => {
                self.perf.window = Duration::from_millis(number(value)?.min(10_000))
            }
            ("perf", "max-query-metrics") => {
                let n = usize::try_from(number(value)?).map_err(|_| bad("too large"))?;
                self.perf.max_query_metrics = (n > 0).then_some(n);
            }
            ("perf", "fallback-max-query-metrics") => {
                self.perf.fallback_max_metrics =
                    usize::try_from(number(value)?.max(1)).map_err(|_| bad("too large"))?
            }
            ("perf", "cache-entries") => {
                self.perf.cache_entries =
                    usize::try_from(number(value)?).map_err(|_| bad("too large"))?
            }
            ("mirror", "enabled") => self.mirror.enabled = boolean(value)?,
            ("mirror", "max-wait-seconds") => {
                self.mirror.max_wait = Duration::from_secs(number(value)?.clamp(1, 3600))
            }
            ("mirror", "stale-after") => self.mirror.stale_after = seconds(value)?,
            ("mirror", "max-object-updates") => {
                self.mirror.max_object_updates =
                    u32::try_from(number(value)?.max(1)).map_err(|_| bad("too large"))?
            }
            ("mirror", "promote-after") => {
                self.mirror.paths.promote_after =
                    u32::try_from(number(value)?.max(1)).map_err(|_| bad("too large"))?
            }
            ("mirror", "promote-interval") => self.mirror.promote_interval = seconds(value)?,
            ("mirror", "max-paths-per-type") => {
                self.mirror.paths.max_paths_per_family =
                    usize::try_from(number(value)?.max(1)).map_err(|_| bad("too large"))?
            }
            ("mirror", "pin") => {
                self.mirror.paths.pinned = list(value)
                    .into_iter()
                    .map(|entry| match entry.split_once(':') {
                        Some((kind, path)) if !kind.is_empty() && !path.is_empty() => {
                            Ok((kind.to_string(), path.to_string()))
                        }
                        _ => Err(bad("expected Type:path entries, comma-separated")),
                    })
                    .collect::<Result<_, _>>()?
            }
            ("mirror", "exclude") => self.mirror.paths.excluded = list(value),
            ("mirror", "volatile") => self.mirror.paths.volatile = list(value),
            ("mirror", "volatile-refresh") => self.mirror.volatile_refresh = seconds(value)?,
            ("http", "listen") => self.http_listen = listen_address(value).map_err(|e| bad(&e))?,
            ("http", "cert-file") => {
                self.http_cert_file = (!value.is_empty()).then(|| PathBuf::from(value))
            }
            ("http", "key-file") => {
                self.http_key_file = (!value.is_empty()).then(|| PathBuf::from(value))
            }
            ("http", "token-file") => {
                self.http_token_file = (!value.is_empty()).then(|| PathBuf::from(value))
            }
            ("metrics", "listen") => {
                self.metrics_listen = listen_address(value).map_err(|e| bad(&e))?
            }
            ("nats", "url") => self.nats.url = value.to_string(),
            ("nats", "agents") => self.nats.agents = list(value),
            ("nats", "user") => self.nats.user = (!value.is_empty()).then(|| value.to_string()),
            ("nats", "password-file") => self.nats.password_file = path_or_none(value),
            ("nats", "token-file") => self.nats.token_file = path_or_none(value),
            ("nats", "creds-file") => self.nats.creds_file = path_or_none(value),
            ("nats", "ca-file") => self.nats.ca_file = path_or_none(value),
            ("nats", "cert-file") => self.nats.cert_file = path_or_none(value),
            ("nats", "key-file") => self.nats.key_file = path_or_none(value),
            ("log", "level") => {
                tracing_subscriber::EnvFilter::try_new(value).map_err(|e| bad(&e.to_string()))?;
                self.log_level = value.to_string();
            }
            ("log", "format") => {
                self.log_json = match value {
                    "json" => true,
                    "text" => false,
                    _ => return Err(bad("expected text or json")),
                }
            }
            _ => {
                return Ok(Some(format!(
                    "unknown option [{section}] {option}; ignored"
                )));
            }
        }
        Ok(None)
    }
}

/// The longest duration an option takes: anything longer is a typo, and
/// would overflow the clocks it is added to.
const MAX_SECONDS: Duration = Duration::from_secs(366 * 24 * 3600);

fn path_or_none(value: &str) -> Option<PathBuf> {
    (!value.is_empty()).then(|| PathBuf::from(value))
}

/// `host:port`, or empty for "off".
fn listen_address(value: &str) -> Result<Option<std::net::SocketAddr>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| "expected an address such as 127.0.0.1:9898, or nothing for off".into())
}

/// A comma-separated list, blanks dropped.
fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn endpoint(value: &str) -> Result<String, String> {
    let rest = value
        .strip_prefix("tcp://")
        .ok_or("expected a tcp://host:port endpoint")?;
    let (_, port) = rest
        .rsplit_once(':')
        .ok_or("expected a tcp://host:port endpoint")?;
    port.parse::<u16>()
        .map_err(|_| "the port is not a number")?;
    Ok(value.to_string())
}

/// The secret in a file the configuration names (an HTTP token, a NATS
/// token or password): its first line, trimmed, which must not be empty.
pub fn read_secret_file(path: &std::path::Path, what: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.is_empty() {
        return Err(format!("the {what} file {} is empty", path.display()));
    }
    Ok(secret.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Loaded, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("vpoller.conf");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        Config::load(Some(&path))
    }

    #[test]
    fn vpoller_options_and_ours_are_read() {
        let loaded = load(
            "[proxy]\nfrontend = tcp://*:20123\nmgmt = tcp://127.0.0.1:20999\n\n[worker]\ndb = /tmp/a.db\nhelpers = vpoller.helpers.zabbix\n[cache]\nttl = 60\n[lua]\nmemory-mb = 32\n[log]\nformat = json\n",
        )
        .expect("loads");
        let c = loaded.config;
        assert_eq!(c.proxy_frontend, "tcp://*:20123");
        assert_eq!(c.db, PathBuf::from("/tmp/a.db"));
        assert_eq!(c.index_ttl, Duration::from_secs(60));
        assert_eq!(c.limits.memory, 32 << 20);
        assert!(c.log_json);
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("[worker] helpers"));
    }

    #[test]
    fn unknown_options_warn_and_bad_values_fail_with_their_names() {
        let loaded = load("[proxy]\nfrontnd = tcp://*:1\n").expect("loads");
        assert!(
            loaded.warnings[0].contains("unknown option [proxy] frontnd"),
            "{:?}",
            loaded.warnings
        );
        for huge in [
            "[lua]\ntimeout = 1e300\n",
            "[lua]\nmemory-mb = 18446744073709551615\n",
            "[vsphere]\nlogin-backoff = 99999999999\n",
        ] {
            let err = load(huge)
                .err()
                .expect("a huge value is refused, not a panic");
            assert!(err.contains(" = "), "{err}");
        }
        let err = load("[lua]\ntimeout = soon\n").err().expect("bad value");
        assert!(err.contains("[lua] timeout = \"soon\""), "{err}");
        let err = load("[proxy]\nfrontend = udp://x\n")
            .err()
            .expect("bad endpoint");
        assert!(err.contains("[proxy] frontend"), "{err}");
        assert!(Config::load(None).is_ok());
    }
}

#[cfg(test)]
mod documented_defaults {
    use super::*;

    /// config/vpoller.conf says what the defaults are; it must stay true.
    #[test]
    fn the_shipped_file_loads_cleanly_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/vpoller.conf");
        let loaded = Config::load(Some(&path)).expect("config/vpoller.conf loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let (file, defaults) = (loaded.config, Config::default());
        assert_eq!(file.proxy_frontend, defaults.proxy_frontend);
        assert_eq!(file.proxy_mgmt, defaults.proxy_mgmt);
        assert_eq!(file.worker_proxy, defaults.worker_proxy);
        assert_eq!(file.db, defaults.db);
        assert_eq!(file.key_file, defaults.key_file);
        assert_eq!(file.limits, defaults.limits);
        assert_eq!(file.index_ttl, defaults.index_ttl);
        assert_eq!(file.vsphere_timeout, defaults.vsphere_timeout);
        assert_eq!(
            format!("{:?}", file.guards),
            format!("{:?}", defaults.guards)
        );
        assert_eq!(format!("{:?}", file.perf), format!("{:?}", defaults.perf));
        assert_eq!(file.mirror, defaults.mirror);
        assert_eq!(file.nats, defaults.nats);
        assert_eq!(
            (file.http_listen, &file.http_token_file, file.metrics_listen),
            (
                defaults.http_listen,
                &defaults.http_token_file,
                defaults.metrics_listen
            )
        );
        assert_eq!(file.grace, defaults.grace);
        assert_eq!(file.request_timeout, defaults.request_timeout);
        assert_eq!(file.heartbeat, defaults.heartbeat);
        assert_eq!(
            (file.log_level, file.log_json),
            (defaults.log_level, defaults.log_json)
        );
    }
}
