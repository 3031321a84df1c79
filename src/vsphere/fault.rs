//! SOAP faults and the errors of the vSphere layer.

use serde_json::Value;
use std::time::Duration;

use super::moref::MoRef;

/// A vim25 fault, by the name of its type. The common ones are variants so
/// that callers match on them instead of on strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    InvalidLogin,
    NotAuthenticated,
    InvalidProperty,
    ManagedObjectNotFound,
    InvalidArgument,
    MethodNotFound,
    Other(String),
}

impl FaultKind {
    pub fn from_name(name: &str) -> FaultKind {
        match name {
            "InvalidLogin" => FaultKind::InvalidLogin,
            "NotAuthenticated" => FaultKind::NotAuthenticated,
            "InvalidProperty" => FaultKind::InvalidProperty,
            "ManagedObjectNotFound" => FaultKind::ManagedObjectNotFound,
            "InvalidArgument" => FaultKind::InvalidArgument,
            "MethodNotFound" => FaultKind::MethodNotFound,
            other => FaultKind::Other(other.to_string()),
        }
    }
}

/// A SOAP fault as the server sent it.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    /// The vim25 type name of the fault, e.g. `InvalidProperty`.
    pub name: String,
    /// The faultstring; vcsim often leaves it empty.
    pub message: String,
    /// The decoded fault object (with `_type`), `Null` when there was none.
    pub detail: Value,
}

impl Fault {
    /// A field of the fault object as text, e.g. `name` of InvalidProperty.
    pub fn detail_str(&self, field: &str) -> Option<String> {
        match self.detail.get(field)? {
            Value::String(s) => Some(s.clone()),
            other => MoRef::from_json(other).map(|r| r.to_string()),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subject = match self.kind {
            FaultKind::InvalidProperty => self.detail_str("name").map(|n| format!("property {n}")),
            FaultKind::ManagedObjectNotFound => {
                self.detail_str("obj").map(|o| format!("object {o}"))
            }
            FaultKind::InvalidArgument => self
                .detail_str("invalidProperty")
                .map(|p| format!("argument {p}")),
            FaultKind::MethodNotFound => self.detail_str("method").map(|m| format!("method {m}")),
            _ => None,
        };
        write!(f, "{}", self.name)?;
        if let Some(s) = subject {
            write!(f, " ({s})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// Everything that can go wrong talking to a vSphere host. Each variant names
/// the host or the thing that was wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{host}: {fault}")]
    Fault { host: String, fault: Box<Fault> },

    #[error("{host}: login failed for user {user:?}: {reason}")]
    LoginFailed {
        host: String,
        user: String,
        reason: String,
    },

    #[error("{host}: no answer within {after:?} (deadline)")]
    Timeout { host: String, after: Duration },

    #[error("{host}: {message}")]
    Transport { host: String, message: String },

    #[error(
        "{host}: unreachable, not tried ({failures} failures in a row, the last: {last}); the next attempt is in {retry_in_secs} s"
    )]
    Unavailable {
        host: String,
        failures: u32,
        last: String,
        retry_in_secs: u64,
    },

    #[error("{host}: {message}")]
    Tls { host: String, message: String },

    #[error("{host}: HTTP {status}: {snippet}")]
    Http {
        host: String,
        status: u16,
        snippet: String,
    },

    #[error("{host}: cannot read the response to {method}: {message}")]
    Decode {
        host: String,
        method: String,
        message: String,
    },

    #[error("cannot encode {method}: {message}")]
    Encode { method: String, message: String },

    #[error("{host}: invalid property {path:?} for {object}")]
    InvalidProperty {
        host: String,
        object: String,
        path: String,
    },

    #[error("{0}")]
    Config(String),
}

impl Error {
    pub fn fault_kind(&self) -> Option<&FaultKind> {
        match self {
            Error::Fault { fault, .. } => Some(&fault.kind),
            _ => None,
        }
    }

    /// True when the host could not be reached at all, as opposed to a
    /// host that answered with a fault or an HTTP error.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. } | Error::Transport { .. } | Error::Unavailable { .. }
        )
    }

    pub fn is_not_authenticated(&self) -> bool {
        self.fault_kind() == Some(&FaultKind::NotAuthenticated)
    }
}

/// What kind of failure an error is, for callers (and scripts) that act
/// on it rather than show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist (any more).
    NotFound,
    /// A property path the object's type does not have.
    InvalidProperty,
    /// The user may not see or do this.
    NoPermission,
    /// No session: the login was refused, or the session is gone.
    NotAuthenticated,
    /// The vCenter could not be reached, or is refused calls for now.
    Unreachable,
    /// The vCenter did not answer within the deadline.
    Timeout,
    /// What was asked for is not a valid request (arguments, encoding).
    InvalidArgument,
    /// Any other fault vSphere answered with; its name says which.
    Fault,
    /// A reply that could not be read, or a local problem.
    Other,
}

impl ErrorKind {
    /// The name scripts see: `not_found`, `timeout`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidProperty => "invalid_property",
            ErrorKind::NoPermission => "no_permission",
            ErrorKind::NotAuthenticated => "not_authenticated",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Fault => "fault",
            ErrorKind::Other => "other",
        }
    }

    /// The kind of a vSphere fault, by its type name.
    pub fn of_fault(name: &str) -> ErrorKind {
        match name {
            "ManagedObjectNotFound" => ErrorKind::NotFound,
            "InvalidProperty" => ErrorKind::InvalidProperty,
            "NotAuthenticated" | "InvalidLogin" => ErrorKind::NotAuthenticated,
            "InvalidArgument" | "InvalidRequest" | "InvalidType" | "MethodNotFound" => {
                ErrorKind::InvalidArgument
            }
            n if n.starts_with("NoPermission") || n == "SecurityError" => ErrorKind::NoPermission,
            _ => ErrorKind::Fault,
        }
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Fault { fault, .. } => ErrorKind::of_fault(&fault.name),
            Error::LoginFailed { .. } => ErrorKind::NotAuthenticated,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Transport { .. } | Error::Unavailable { .. } | Error::Tls { .. } => {
                ErrorKind::Unreachable
            }
            Error::Http { .. } | Error::Decode { .. } | Error::Config(_) => ErrorKind::Other,
            Error::Encode { .. } => ErrorKind::InvalidArgument,
            Error::InvalidProperty { .. } => ErrorKind::InvalidProperty,
        }
    }

    /// The vSphere fault's type name, for faults.
    pub fn fault_name(&self) -> Option<&str> {
        match self {
            Error::Fault { fault, .. } => Some(&fault.name),
            Error::LoginFailed { .. } => Some("InvalidLogin"),
            Error::InvalidProperty { .. } => Some("InvalidProperty"),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
