//! The SOAP round trip: envelope out, response or fault back, within a
//! deadline.

use bytes::Bytes;
use serde_json::Value;
use std::time::Duration;

use super::fault::{Error, Fault, FaultKind, Result};
use super::schema::{Kind, Schema};
use super::tls::{SeenCertificate, TlsMode};
use super::xml::decode::{DecodeError, Decoder};

const ENVELOPE_START: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body>";
const ENVELOPE_END: &str = "</soapenv:Body></soapenv:Envelope>";

/// Where and how to reach one vSphere host's SDK endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `https://host[:port]/sdk` (or http, for tests).
    pub url: String,
    pub tls: TlsMode,
    /// The most a single call may take, connection included.
    pub deadline: Duration,
}

impl Endpoint {
    /// Accepts `host`, `host:port`, or a full URL, and returns the SDK URL.
    pub fn sdk_url(target: &str) -> String {
        let with_scheme = if target.contains("://") {
            target.to_string()
        } else {
            format!("https://{target}")
        };
        let trimmed = with_scheme.trim_end_matches('/');
        let (scheme, rest) = trimmed.split_once("://").unwrap_or(("https", trimmed));
        if rest.contains('/') {
            format!("{scheme}://{rest}")
        } else {
            format!("{scheme}://{rest}/sdk")
        }
    }

    /// The `host:port` part, used to name the host in errors and logs.
    pub fn host(&self) -> String {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |x| x.1);
        rest.split('/').next().unwrap_or(rest).to_string()
    }
}

/// One HTTP client for one vSphere host: keep-alive connections, the
/// deadline, and TLS as configured.
pub struct Transport {
    http: reqwest::Client,
    url: String,
    host: String,
    deadline: Duration,
    seen: SeenCertificate,
}

/// A raw SOAP response body, and the session cookie if the server set one.
pub struct Reply {
    pub body: Bytes,
    pub session_cookie: Option<String>,
}

impl Transport {
    pub fn new(endpoint: &Endpoint) -> Result<Transport> {
        // reqwest is built without a default TLS provider (aws-lc's build is
        // slow); every client it makes, plain http included, needs one.
        static PROVIDER: std::sync::Once = std::sync::Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let host = endpoint.host();
        let seen = SeenCertificate::default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(endpoint.deadline.min(Duration::from_secs(10)))
            .timeout(endpoint.deadline)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_nodelay(true)
            .user_agent(concat!("vpoller/", env!("CARGO_PKG_VERSION")));
        if endpoint.url.starts_with("https://") {
            let config =
                super::tls::client_config(&endpoint.tls, seen.clone()).map_err(|message| {
                    Error::Tls {
                        host: host.clone(),
                        message,
                    }
                })?;
            builder = builder.tls_backend_preconfigured(config);
        }
        let http = builder.build().map_err(|e| Error::Transport {
            host: host.clone(),
            message: format!("cannot build an HTTP client: {e}"),
        })?;
        if endpoint.tls == TlsMode::Insecure {
            tracing::warn!(host = %host, "TLS certificate verification is off for this vSphere host (insecure mode)");
        }
        Ok(Transport {
            http,
            url: endpoint.url.clone(),
            host,
            deadline: endpoint.deadline,
            seen,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Posts one request body, to be answered within `deadline` (each call
    /// says its own: a long poll waits minutes, a retrieval seconds). A
    /// connection that closes without a response is retried once, and only
    /// when `repeatable` says the call is safe to repeat.
    pub async fn post(
        &self,
        method: &str,
        body: &str,
        cookie: Option<&str>,
        api_version: &str,
        repeatable: bool,
        deadline: Duration,
    ) -> Result<Reply> {
        let mut envelope = String::with_capacity(ENVELOPE_START.len() + body.len() + 40);
        envelope.push_str(ENVELOPE_START);
        envelope.push_str(body);
        envelope.push_str(ENVELOPE_END);
        let envelope = Bytes::from(envelope);

        let first = self
            .post_once(method, envelope.clone(), cookie, api_version, deadline)
            .await;
        match first {
            Err(Attempt::ClosedWithoutResponse(message)) if repeatable => {
                tracing::debug!(host = %self.host, method, "{message}; retrying once");
                self.post_once(method, envelope, cookie, api_version, deadline)
                    .await
                    .map_err(|a| self.attempt_error(method, a))
            }
            other => other.map_err(|a| self.attempt_error(method, a)),
        }
    }

    async fn post_once(
        &self,
        method: &str,
        envelope: Bytes,
        cookie: Option<&str>,
        api_version: &str,
        deadline: Duration,
    ) -> Result<Reply, Attempt> {
        let mut request = self
            .http
            .post(&self.url)
            .timeout(deadline)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("urn:vim25/{api_version}"))
            .body(envelope);
        if let Some(c) = cookie {
            request = request.header("Cookie", format!("vmware_soap_session={c}"));
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.classify(e, deadline))?;
        let status = response.status();
        let session_cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(session_cookie_value);
        let body = response
            .bytes()
            .await
            .map_err(|e| self.classify(e, deadline))?;
        if status.is_success() || status.as_u16() == 500 {
            return Ok(Reply {
                body,
                session_cookie,
            });
        }
        let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        Err(Attempt::Failed(Error::Http {
            host: self.host.clone(),
            status: status.as_u16(),
            snippet: if snippet.is_empty() {
                format!("no body (calling {method})")
            } else {
                snippet
            },
        }))
    }

    fn classify(&self, e: reqwest::Error, deadline: Duration) -> Attempt {
        let host = self.host.clone();
        if e.is_timeout() {
            return Attempt::Failed(Error::Timeout {
                host,
                after: deadline,
            });
        }
        if let Some(tls) = find_tls_error(&e) {
            return Attempt::Failed(Error::Tls {
                host: host.clone(),
                message: self.tls_advice(&tls),
            });
        }
        let chain = error_chain(&e);
        if e.is_connect() {
            return Attempt::Failed(Error::Transport {
                host,
                message: format!("cannot connect: {chain}"),
            });
        }
        Attempt::ClosedWithoutResponse(format!("the connection closed without a response: {chain}"))
    }

    fn tls_advice(&self, tls: &str) -> String {
        let presented = self
            .seen
            .thumbprint()
            .map(|t| format!(" It presents a certificate with SHA-256 thumbprint {t}."))
            .unwrap_or_default();
        format!(
            "TLS certificate not trusted ({tls}).{presented} To trust it, give its CA \
             with --cacert FILE, pin it with --thumbprint SHA256, or (not recommended) \
             use --insecure."
        )
    }

    fn attempt_error(&self, method: &str, attempt: Attempt) -> Error {
        match attempt {
            Attempt::Failed(e) => e,
            Attempt::ClosedWithoutResponse(message) => Error::Transport {
                host: self.host.clone(),
                message: format!("{method}: {message}"),
            },
        }
    }

    /// Turns a reply into the method's `returnval` (`Null` when the method
    /// returns nothing), or its fault.
    pub fn parse(&self, method: &str, reply: &Reply) -> Result<Value> {
        let mut decoder = Decoder::new(&reply.body);
        open_body(&mut decoder)
            .map_err(|e| self.decode_error(method, e))?
            .map_err(|fault| Error::Fault {
                host: self.host.clone(),
                fault: Box::new(fault),
            })?;
        let response_type = format!("{method}Response");
        let def = Schema::vim25().get(&response_type);
        let returnval = def.and_then(|d| d.field("returnval"));
        let mut result = match returnval {
            Some(f) if f.array => Value::Array(Vec::new()),
            _ => Value::Null,
        };
        while let Some(child) = decoder
            .next_child()
            .map_err(|e| self.decode_error(method, e))?
        {
            if child.local_name() != "returnval" {
                decoder
                    .skip(&child)
                    .map_err(|e| self.decode_error(method, e))?;
                continue;
            }
            let kind = returnval.map_or(Kind::Any, |f| f.kind);
            let value = decoder
                .decode(&child, kind)
                .map_err(|e| self.decode_error(method, e))?;
            match &mut result {
                Value::Array(items) => items.push(value),
                slot => *slot = value,
            }
        }
        Ok(result)
    }

    pub fn decode_error(&self, method: &str, e: DecodeError) -> Error {
        Error::Decode {
            host: self.host.clone(),
            method: method.to_string(),
            message: e.0,
        }
    }
}

enum Attempt {
    Failed(Error),
    ClosedWithoutResponse(String),
}

/// Reads the envelope down to the body's first element. That is either the
/// `XxxResponse` element, left open for the caller to read its children, or
/// a fault, returned decoded.
pub fn open_body<'x>(
    decoder: &mut Decoder<'x>,
) -> std::result::Result<std::result::Result<(), Fault>, DecodeError> {
    let envelope = decoder
        .next_child()?
        .ok_or_else(|| DecodeError("empty response".into()))?;
    if envelope.local_name() != "Envelope" {
        return Err(DecodeError(format!(
            "expected a SOAP envelope, got <{}>",
            envelope.local_name()
        )));
    }
    loop {
        let child = decoder
            .next_child()?
            .ok_or_else(|| DecodeError("SOAP envelope without a body".into()))?;
        if child.local_name() == "Body" {
            break;
        }
        decoder.skip(&child)?;
    }
    let first = decoder
        .next_child()?
        .ok_or_else(|| DecodeError("empty SOAP body".into()))?;
    if first.local_name() == "Fault" {
        return Ok(Err(read_fault(decoder)?));
    }
    Ok(Ok(()))
}

fn read_fault(decoder: &mut Decoder<'_>) -> std::result::Result<Fault, DecodeError> {
    let mut message = String::new();
    let mut detail = Value::Null;
    let mut name = String::new();
    while let Some(child) = decoder.next_child()? {
        match child.local_name() {
            "faultstring" => message = decoder.text(&child)?,
            "detail" => {
                while let Some(fault) = decoder.next_child()? {
                    if !name.is_empty() {
                        decoder.skip(&fault)?;
                        continue;
                    }
                    name = match fault.xsi_type() {
                        Some(t) => t.to_string(),
                        None => fault
                            .local_name()
                            .strip_suffix("Fault")
                            .unwrap_or(fault.local_name())
                            .to_string(),
                    };
                    detail = decoder.decode(&fault, Kind::from_name(&name))?;
                }
            }
            _ => decoder.skip(&child)?,
        }
    }
    if name.is_empty() {
        name = "SystemError".to_string();
    }
    Ok(Fault {
        kind: FaultKind::from_name(&name),
        name,
        message,
        detail,
    })
}

fn session_cookie_value(header: &str) -> Option<String> {
    let first = header.split(';').next()?.trim();
    let (name, value) = first.split_once('=')?;
    (name.trim() == "vmware_soap_session").then(|| value.trim().trim_matches('"').to_string())
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// Finds a rustls certificate error anywhere in the chain. `io::Error`
/// hides its inner error from `source()`, so it is unwrapped by hand.
fn find_tls_error(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(_) | rustls::Error::General(_) => {
                    Some(tls.to_string())
                }
                _ => None,
            };
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = find_tls_error(inner)
        {
            return Some(found);
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_urls_from_host_names() {
        assert_eq!(Endpoint::sdk_url("vc01"), "https://vc01/sdk");
        assert_eq!(Endpoint::sdk_url("vc01:8443"), "https://vc01:8443/sdk");
        assert_eq!(
            Endpoint::sdk_url("http://127.0.0.1:1234/sdk"),
            "http://127.0.0.1:1234/sdk"
        );
        assert_eq!(Endpoint::sdk_url("https://vc01/"), "https://vc01/sdk");
    }

    #[test]
    fn session_cookie_is_found_among_attributes() {
        assert_eq!(
            session_cookie_value("vmware_soap_session=abc-123; HttpOnly; Path=/"),
            Some("abc-123".into())
        );
        assert_eq!(
            session_cookie_value("vmware_soap_session=\"q\"; Path=/"),
            Some("q".into())
        );
        assert_eq!(session_cookie_value("other=1"), None);
    }
}
