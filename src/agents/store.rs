//! The agent registry: one SQLite database of the vSphere hosts vpoller
//! polls and how to log in to them.
//!
//! The schema is versioned (`PRAGMA user_version`) and migrated forward on
//! open. The database runs in WAL mode with a busy timeout, so the CLI can
//! write while a daemon reads. Passwords are sealed with the key of
//! [`super::secret_key`]; the database alone yields none.

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::secret_key::SecretKey;
use crate::vsphere::{Password, TlsMode};

/// Each entry takes the schema from version N to N+1.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE agents (
        hostname   TEXT PRIMARY KEY NOT NULL,  -- exactly what clients send as hostname
        url        TEXT,                       -- where to connect, when not https://HOSTNAME/sdk
        username   TEXT NOT NULL,
        password   BLOB NOT NULL,              -- XChaCha20-Poly1305: nonce || ciphertext
        enabled    INTEGER NOT NULL DEFAULT 1,
        tls_mode   TEXT NOT NULL DEFAULT 'verify',  -- verify | ca-file | thumbprint | insecure
        tls_value  TEXT,                       -- the CA file or the thumbprint
        last_login TEXT,
        last_error TEXT,
        created    TEXT NOT NULL,
        updated    TEXT NOT NULL
    );
    CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value BLOB);",
];

const KEY_CHECK: &[u8] = b"vpoller agent key check";

/// An agent as stored, without its password.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentRecord {
    pub hostname: String,
    pub url: Option<String>,
    pub username: String,
    pub enabled: bool,
    #[serde(serialize_with = "tls_label")]
    pub tls: TlsMode,
    pub last_login: Option<String>,
    pub last_error: Option<String>,
}

fn tls_label<S: serde::Serializer>(tls: &TlsMode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&tls.label())
}

impl AgentRecord {
    /// The SDK URL to connect to.
    pub fn sdk_url(&self) -> String {
        crate::vsphere::Endpoint::sdk_url(self.url.as_deref().unwrap_or(&self.hostname))
    }
}

/// What `update` may change; `None` keeps the stored value.
#[derive(Debug, Default)]
pub struct AgentChanges {
    pub url: Option<Option<String>>,
    pub username: Option<String>,
    pub password: Option<Password>,
    pub tls: Option<TlsMode>,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    key: Option<SecretKey>,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Store {
    /// Creates the database (mode 0600) and, unless it exists, the key file.
    /// Returns the store and whether a new key was made.
    pub fn init(db: &Path, key_file: &Path) -> Result<(Store, bool), String> {
        if db.exists() {
            let store = Store::open(db, None)?;
            drop(store);
            return Err(format!(
                "{} is already a vpoller agent database; nothing was changed",
                db.display()
            ));
        }
        let (key, created) = if key_file.exists() {
            (SecretKey::load(key_file)?, false)
        } else {
            (SecretKey::create(key_file)?, true)
        };
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)
            .map_err(|e| format!("cannot create {}: {e}", db.display()))?;
        let conn = Connection::open(db).map_err(|e| sql_error(db, e))?;
        let mut store = Store {
            conn,
            path: db.to_path_buf(),
            key: None,
        };
        store.prepare()?;
        let check = key.seal(KEY_CHECK, "meta")?;
        store
            .conn
            .execute(
                "INSERT INTO meta (name, value) VALUES ('key_check', ?1)",
                params![check],
            )
            .map_err(|e| store.error(e))?;
        store.key = Some(key);
        Ok((store, created))
    }

    /// Opens an existing database. The key is needed only to read or write
    /// passwords; it is checked against the database here.
    pub fn open(db: &Path, key_file: Option<&Path>) -> Result<Store, String> {
        Store::open_mode(db, key_file, false)
    }

    /// As [`Store::open`], read-only: for readers that must never write.
    pub fn open_read_only(db: &Path, key_file: Option<&Path>) -> Result<Store, String> {
        Store::open_mode(db, key_file, true)
    }

    fn open_mode(db: &Path, key_file: Option<&Path>, read_only: bool) -> Result<Store, String> {
        if !db.exists() {
            return Err(format!(
                "no agent database at {}; create it with `vpoller agent init -d {}`",
                db.display(),
                db.display()
            ));
        }
        let read_write = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = if read_only {
            Err(rusqlite::Error::InvalidQuery)
        } else {
            Connection::open_with_flags(db, read_write)
        }
        .or_else(|_| {
            Connection::open_with_flags(
                db,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
        })
        .map_err(|e| sql_error(db, e))?;
        let mut store = Store {
            conn,
            path: db.to_path_buf(),
            key: None,
        };
        store.prepare()?;
        if let Some(k) = key_file {
            let key = SecretKey::load(k)?;
            let check: Option<Vec<u8>> = store
                .conn
                .query_row("SELECT value FROM meta WHERE name = 'key_check'", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(|e| store.error(e))?;
            if check.and_then(|c| key.open(&c, "meta")).as_deref() != Some(KEY_CHECK) {
                return Err(format!(
                    "key file {} is not the key of {}; the stored passwords cannot be read with it",
                    k.display(),
                    db.display()
                ));
            }
            store.key = Some(key);
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn prepare(&mut self) -> Result<(), String> {
        self.conn
            .busy_timeout(Duration::from_secs(5))
            .map_err(|e| sql_error(&self.path, e))?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql_error(&self.path, e))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(format!(
                "{} has schema version {version}, newer than this vpoller knows ({known}); upgrade vpoller",
                self.path.display()
            ));
        }
        if version == 0 {
            let tables: i64 = self
                .conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(|e| sql_error(&self.path, e))?;
            if tables > 0 {
                return Err(format!(
                    "{} is not a vpoller agent database (to bring agents over from vconnector, use `vpoller agent import --vconnector`)",
                    self.path.display()
                ));
            }
        }
        if version < known {
            let tx = self
                .conn
                .transaction()
                .map_err(|e| sql_error(&self.path, e))?;
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                tx.execute_batch(sql)
                    .map_err(|e| sql_error(&self.path, e))?;
                tx.pragma_update(None, "user_version", (i + 1) as i64)
                    .map_err(|e| sql_error(&self.path, e))?;
            }
            tx.commit().map_err(|e| sql_error(&self.path, e))?;
        }
        // WAL lets a reader and a writer work at once; a read-only copy
        // cannot switch, and does not need to.
        let _ = self.conn.pragma_update(None, "journal_mode", "WAL");
        Ok(())
    }

    fn error(&self, e: rusqlite::Error) -> String {
        sql_error(&self.path, e)
    }

    fn key(&self) -> Result<&SecretKey, String> {
        self.key
            .as_ref()
            .ok_or_else(|| "this needs the key file (--key-file)".to_string())
    }

    pub fn add(&self, record: &AgentRecord, password: &Password) -> Result<(), String> {
        let sealed = self
            .key()?
            .seal(password.expose().as_bytes(), &record.hostname)?;
        let (mode, value) = tls_columns(&record.tls);
        let now = now();
        self.conn
            .execute(
                "INSERT INTO agents (hostname, url, username, password, enabled, tls_mode, tls_value, created, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                params![record.hostname, record.url, record.username, sealed, record.enabled, mode, value, now],
            )
            .map_err(|e| match e.sqlite_error_code() {
                Some(ErrorCode::ConstraintViolation) => format!(
                    "agent {} already exists in {}; change it with `vpoller agent update`",
                    record.hostname,
                    self.path.display()
                ),
                _ => self.error(e),
            })?;
        Ok(())
    }

    /// Changes what is given and keeps everything else, the enabled state
    /// included.
    pub fn update(&self, hostname: &str, changes: AgentChanges) -> Result<(), String> {
        let current = self.get(hostname)?;
        let sealed = match &changes.password {
            Some(p) => Some(self.key()?.seal(p.expose().as_bytes(), hostname)?),
            None => None,
        };
        let url = changes.url.unwrap_or(current.url);
        let username = changes.username.unwrap_or(current.username);
        let (mode, value) = tls_columns(&changes.tls.unwrap_or(current.tls));
        self.conn
            .execute(
                "UPDATE agents SET url = ?2, username = ?3, password = coalesce(?4, password),
                     tls_mode = ?5, tls_value = ?6, updated = ?7
                 WHERE hostname = ?1",
                params![hostname, url, username, sealed, mode, value, now()],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub fn remove(&self, hostname: &str) -> Result<(), String> {
        let n = self
            .conn
            .execute("DELETE FROM agents WHERE hostname = ?1", params![hostname])
            .map_err(|e| self.error(e))?;
        if n == 0 {
            return Err(self.unknown(hostname));
        }
        Ok(())
    }

    pub fn set_enabled(&self, hostname: &str, enabled: bool) -> Result<(), String> {
        let n = self
            .conn
            .execute(
                "UPDATE agents SET enabled = ?2, updated = ?3 WHERE hostname = ?1",
                params![hostname, enabled, now()],
            )
            .map_err(|e| self.error(e))?;
        if n == 0 {
            return Err(self.unknown(hostname));
        }
        Ok(())
    }

    fn unknown(&self, hostname: &str) -> String {
        format!(
            "no agent {hostname} in {} (`vpoller agent get` lists them)",
            self.path.display()
        )
    }

    pub fn list(&self) -> Result<Vec<AgentRecord>, String> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT hostname, url, username, enabled, tls_mode, tls_value, last_login, last_error
                 FROM agents ORDER BY hostname",
            )
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AgentRecord {
                    hostname: r.get(0)?,
                    url: r.get(1)?,
                    username: r.get(2)?,
                    enabled: r.get(3)?,
                    tls: tls_mode(&r.get::<_, String>(4)?, r.get(5)?),
                    last_login: r.get(6)?,
                    last_error: r.get(7)?,
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(e))
    }

    pub fn get(&self, hostname: &str) -> Result<AgentRecord, String> {
        self.list()?
            .into_iter()
            .find(|a| a.hostname == hostname)
            .ok_or_else(|| self.unknown(hostname))
    }

    /// The agent's password, unsealed with the key.
    pub fn password(&self, hostname: &str) -> Result<Password, String> {
        let sealed: Vec<u8> = self
            .conn
            .query_row(
                "SELECT password FROM agents WHERE hostname = ?1",
                params![hostname],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.error(e))?
            .ok_or_else(|| self.unknown(hostname))?;
        let plain = self.key()?.open(&sealed, hostname).ok_or_else(|| {
            format!("the stored password of {hostname} cannot be decrypted with this key file")
        })?;
        String::from_utf8(plain)
            .map(Password::new)
            .map_err(|_| format!("the stored password of {hostname} is not text"))
    }

    /// Notes the outcome of a login (best effort: a read-only database
    /// just does not record it).
    pub fn record_login(&self, hostname: &str, outcome: Result<(), &str>) {
        let result = match outcome {
            Ok(()) => self.conn.execute(
                "UPDATE agents SET last_login = ?2, last_error = NULL WHERE hostname = ?1",
                params![hostname, now()],
            ),
            Err(e) => self.conn.execute(
                "UPDATE agents SET last_error = ?2 WHERE hostname = ?1",
                params![hostname, format!("{}: {e}", now())],
            ),
        };
        if let Err(e) = result {
            tracing::debug!("cannot record the login of {hostname}: {e}");
        }
    }

    /// Changes whenever another connection commits to the database.
    pub fn data_version(&self) -> Result<i64, String> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.error(e))
    }

    /// Brings over the agents of a vconnector database (its plaintext
    /// `hosts` table); agents already here are left as they are. Returns
    /// (imported, skipped).
    pub fn import_vconnector(&self, path: &Path) -> Result<(usize, Vec<String>), String> {
        if !path.exists() {
            return Err(format!("no vconnector database at {}", path.display()));
        }
        let source = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| sql_error(path, e))?;
        let mut stmt = source
            .prepare("SELECT host, user, pwd, enabled FROM hosts")
            .map_err(|e| format!("{} is not a vconnector database: {e}", path.display()))?;
        let rows: Vec<(String, String, String, Option<i64>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| sql_error(path, e))?;
        let mut imported = 0;
        let mut skipped = Vec::new();
        for (host, user, pwd, enabled) in rows {
            let record = AgentRecord {
                hostname: host.clone(),
                url: None,
                username: user,
                enabled: enabled.unwrap_or(1) != 0,
                tls: TlsMode::Verify,
                last_login: None,
                last_error: None,
            };
            match self.add(&record, &Password::new(pwd)) {
                Ok(()) => imported += 1,
                Err(_) if self.get(&host).is_ok() => skipped.push(host),
                Err(e) => return Err(e),
            }
        }
        Ok((imported, skipped))
    }
}

fn tls_columns(tls: &TlsMode) -> (&'static str, Option<String>) {
    match tls {
        TlsMode::Verify => ("verify", None),
        TlsMode::CaFile(p) => ("ca-file", Some(p.display().to_string())),
        TlsMode::Thumbprint(t) => ("thumbprint", Some(t.clone())),
        TlsMode::Insecure => ("insecure", None),
    }
}

fn tls_mode(mode: &str, value: Option<String>) -> TlsMode {
    match (mode, value) {
        ("ca-file", Some(p)) => TlsMode::CaFile(PathBuf::from(p)),
        ("thumbprint", Some(t)) => TlsMode::Thumbprint(t),
        ("insecure", _) => TlsMode::Insecure,
        _ => TlsMode::Verify,
    }
}

/// SQLite's failures as what the admin should do about them.
fn sql_error(path: &Path, e: rusqlite::Error) -> String {
    let p = path.display();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
            format!("{p} is locked by another process; try again when it is done")
        }
        Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => {
            format!("{p} is corrupt or not a vpoller agent database")
        }
        Some(ErrorCode::ReadOnly) => {
            format!("{p} is read-only; run this as a user who may write it")
        }
        Some(ErrorCode::CannotOpen) => format!("cannot open {p}: {e}"),
        Some(ErrorCode::PermissionDenied) => format!("no permission to use {p}"),
        _ => format!("{p}: {e}"),
    }
}
