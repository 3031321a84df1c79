//! The PropertyCollector: RetrievePropertiesEx with paging.
//!
//! Results are handed to the caller one object at a time, as each is decoded,
//! so a 10,000-VM answer never exists twice in memory. Pages are followed
//! with ContinueRetrievePropertiesEx; a caller that stops early makes the
//! server drop the rest with CancelRetrievePropertiesEx.

use serde_json::{Map, Value, json};
use std::ops::ControlFlow;

use super::fault::{Error, Fault, FaultKind, Result};
use super::moref::MoRef;
use super::schema::Kind;
use super::session::{OnLostSession, Session};
use super::soap::{Reply, open_body};
use super::view::Views;
use super::xml::decode::{DecodeError, Decoder};

/// How many objects to ask for per page. vCenter caps pages itself; this
/// keeps each response to a few megabytes.
pub const DEFAULT_PAGE_SIZE: u32 = 5000;

/// One object of a retrieval: its reference, the properties that are set,
/// and the ones the server could not give.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectContent {
    pub obj: MoRef,
    pub props: Map<String, Value>,
    pub missing: Vec<MissingProperty>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MissingProperty {
    pub path: String,
    /// The fault's type name, e.g. `NoPermission`.
    pub fault: String,
}

impl ObjectContent {
    /// The row form used by `collect` and by Lua methods: each property by
    /// its path, and the object's reference under `_ref` (no vSphere
    /// property starts with an underscore).
    ///
    /// Properties the server could not give (a `missingSet` fault other than
    /// a lost session or an invalid path, which fail the whole call) are
    /// under `_missing`, by path: `{kind = "no_permission", fault =
    /// "NoPermission"}`.
    pub fn into_row(self) -> Value {
        let mut row = Map::with_capacity(self.props.len() + 2);
        row.insert("_ref".into(), self.obj.to_json());
        row.extend(self.props);
        if !self.missing.is_empty() {
            let missing: Map<String, Value> = self
                .missing
                .into_iter()
                .map(|m| {
                    let kind = super::fault::ErrorKind::of_fault(&m.fault).as_str();
                    (m.path, json!({"kind": kind, "fault": m.fault}))
                })
                .collect();
            row.insert("_missing".into(), Value::Object(missing));
        }
        Value::Object(row)
    }
}

/// A filter over every object of `kind` in a view.
pub fn filter_for_view(view: &MoRef, kind: &str, paths: &[String]) -> Value {
    json!({
        "propSet": [{"type": kind, "pathSet": paths}],
        "objectSet": [{
            "obj": view.to_json(),
            "skip": true,
            "selectSet": [{"_type": "TraversalSpec", "name": "traverseView", "type": view.kind, "path": "view", "skip": false}]
        }]
    })
}

/// A filter over given objects, which may be of different types: one
/// PropertySpec per type, one ObjectSpec per object.
pub fn filter_for_objects(objects: &[MoRef], paths: &[String]) -> Value {
    filter_for_objects_by(objects, |_| paths)
}

/// As [`filter_for_objects`], with the paths chosen per type (an Alarm's
/// `info.name` beside a VM's `name`).
pub fn filter_for_objects_by<'p>(
    objects: &[MoRef],
    paths_of: impl Fn(&str) -> &'p [String],
) -> Value {
    let mut kinds: Vec<&str> = Vec::new();
    for o in objects {
        if !kinds.contains(&o.kind.as_str()) {
            kinds.push(&o.kind);
        }
    }
    let prop_set: Vec<Value> = kinds
        .iter()
        .map(|k| json!({"type": k, "pathSet": paths_of(k)}))
        .collect();
    let object_set: Vec<Value> = objects
        .iter()
        .map(|o| json!({"obj": o.to_json()}))
        .collect();
    json!({"propSet": prop_set, "objectSet": object_set})
}

/// What one page said besides its objects.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct PageOutcome {
    pub token: Option<String>,
    pub stopped: bool,
    pub emitted: usize,
}

/// Where pages come from: the session in real use, recorded replies in tests.
pub(crate) trait PageSource {
    fn host(&self) -> &str;
    /// Calls a collector method and returns its reply, faults already raised.
    async fn call(&self, method: &str, collector: &MoRef, args: &Value) -> Result<Reply>;
    /// How many logins the session has seen, to say which one was lost.
    fn generation(&self) -> u64;
    /// Logs in again unless another caller did since `seen`.
    async fn relogin(&self, seen: u64) -> Result<()>;
}

impl PageSource for Session {
    fn host(&self) -> &str {
        Session::host(self)
    }

    fn generation(&self) -> u64 {
        Session::generation(self)
    }

    async fn relogin(&self, seen: u64) -> Result<()> {
        Session::relogin(self, seen).await
    }

    async fn call(&self, method: &str, collector: &MoRef, args: &Value) -> Result<Reply> {
        let host = self.host().to_string();
        let parse = |reply: &Reply| {
            let mut decoder = Decoder::new(&reply.body);
            match open_body(&mut decoder) {
                Ok(Ok(())) => Ok(Reply {
                    body: reply.body.clone(),
                    session_cookie: None,
                }),
                Ok(Err(fault)) => Err(Error::Fault {
                    host: host.clone(),
                    fault: Box::new(fault),
                }),
                Err(e) => Err(decode_error(&host, method, e)),
            }
        };
        // The first page may be asked for again after a new login; a page
        // token cannot, and its loss is handled by `retrieve_resuming`.
        let on_lost = if method == "RetrievePropertiesEx" {
            OnLostSession::LogInAndRepeat
        } else {
            OnLostSession::Fail
        };
        self.invoke_with(method, collector, args, parse, on_lost)
            .await
    }
}

/// Runs a retrieval; if the session is lost on the way (between pages, the
/// token dies with it), logs in again and runs it once more from the start,
/// handing over only the objects not handed over before: the caller never
/// sees an object twice.
pub(crate) async fn retrieve_resuming(
    source: &impl PageSource,
    collector: &MoRef,
    filter: &Value,
    page_size: u32,
    on_object: &mut (dyn FnMut(ObjectContent) -> ControlFlow<()> + Send),
) -> Result<usize> {
    let generation = source.generation();
    let mut handed_over = std::collections::HashSet::new();
    let first = {
        let mut note = |o: ObjectContent| {
            handed_over.insert(o.obj.clone());
            on_object(o)
        };
        drive_pages(source, collector, filter, page_size, &mut note).await
    };
    match first {
        Err(e) if e.is_not_authenticated() => {
            tracing::info!(host = %source.host(), handed_over = handed_over.len(), "vSphere session lost during a retrieval; logging in and retrieving the rest");
            source.relogin(generation).await?;
            let mut rest = |o: ObjectContent| {
                if handed_over.contains(&o.obj) {
                    ControlFlow::Continue(())
                } else {
                    on_object(o)
                }
            };
            let again = drive_pages(source, collector, filter, page_size, &mut rest).await?;
            Ok(again.max(handed_over.len()))
        }
        other => other,
    }
}

/// Runs a retrieval to its end (or until `on_object` breaks), following
/// and cancelling pages.
pub(crate) async fn drive_pages(
    source: &impl PageSource,
    collector: &MoRef,
    filter: &Value,
    page_size: u32,
    on_object: &mut (dyn FnMut(ObjectContent) -> ControlFlow<()> + Send),
) -> Result<usize> {
    let args = json!({"specSet": [filter], "options": {"maxObjects": page_size}});
    let reply = source
        .call("RetrievePropertiesEx", collector, &args)
        .await?;
    let mut page = parse_page(source.host(), "RetrievePropertiesEx", &reply, on_object)?;
    let mut emitted = page.emitted;
    while let Some(token) = page.token.take() {
        if page.stopped {
            source
                .call(
                    "CancelRetrievePropertiesEx",
                    collector,
                    &json!({"token": token}),
                )
                .await?;
            break;
        }
        let reply = source
            .call(
                "ContinueRetrievePropertiesEx",
                collector,
                &json!({"token": token}),
            )
            .await?;
        page = parse_page(
            source.host(),
            "ContinueRetrievePropertiesEx",
            &reply,
            on_object,
        )?;
        emitted += page.emitted;
    }
    Ok(emitted)
}

/// Decodes a recorded RetrievePropertiesEx response (benchmarks, tools).
pub fn parse_recorded_page(
    body: &[u8],
    on_object: &mut (dyn FnMut(ObjectContent) -> ControlFlow<()> + Send),
) -> Result<usize> {
    let reply = Reply {
        body: bytes::Bytes::copy_from_slice(body),
        session_cookie: None,
    };
    parse_page("recorded", "RetrievePropertiesEx", &reply, on_object).map(|p| p.emitted)
}

/// Decodes one page, handing each object over as soon as it is complete.
pub(crate) fn parse_page(
    host: &str,
    method: &str,
    reply: &Reply,
    on_object: &mut (dyn FnMut(ObjectContent) -> ControlFlow<()> + Send),
) -> Result<PageOutcome> {
    let mut decoder = Decoder::new(&reply.body);
    if let Err(fault) = open_body(&mut decoder).map_err(|e| decode_error(host, method, e))? {
        return Err(Error::Fault {
            host: host.to_string(),
            fault: Box::new(fault),
        });
    }
    let mut outcome = PageOutcome::default();
    let err = |e| decode_error(host, method, e);
    // <returnval> holds the RetrieveResult; absent when nothing matched.
    while let Some(returnval) = decoder.next_child().map_err(err)? {
        if returnval.local_name() != "returnval" {
            decoder.skip(&returnval).map_err(err)?;
            continue;
        }
        while let Some(child) = decoder.next_child().map_err(err)? {
            match child.local_name() {
                "token" => outcome.token = Some(decoder.text(&child).map_err(err)?),
                "objects" if !outcome.stopped => {
                    let object = read_object_content(host, &mut decoder).map_err(err)??;
                    outcome.emitted += 1;
                    if on_object(object).is_break() {
                        outcome.stopped = true;
                    }
                }
                _ => decoder.skip(&child).map_err(err)?,
            }
        }
    }
    Ok(outcome)
}

/// Reads one ObjectContent straight into the caller's form: the reference,
/// each property by its path (values typed by their `xsi:type`), and the
/// missing properties, some of which are errors rather than gaps.
fn read_object_content(
    host: &str,
    decoder: &mut Decoder<'_>,
) -> std::result::Result<Result<ObjectContent>, DecodeError> {
    let mut obj = None;
    let mut props = Map::new();
    let mut missing_set = Vec::new();
    while let Some(child) = decoder.next_child()? {
        match child.local_name() {
            "obj" => obj = MoRef::from_json(&decoder.decode(&child, Kind::ManagedObjectReference)?),
            "propSet" => {
                let (mut name, mut value) = (None, Value::Null);
                while let Some(part) = decoder.next_child()? {
                    match part.local_name() {
                        "name" => name = Some(decoder.text(&part)?),
                        "val" => value = decoder.decode(&part, Kind::Any)?,
                        _ => decoder.skip(&part)?,
                    }
                }
                if let Some(name) = name {
                    props.insert(name, value);
                }
            }
            "missingSet" => {
                missing_set.push(decoder.decode(&child, Kind::Data("MissingProperty"))?)
            }
            _ => decoder.skip(&child)?,
        }
    }
    let Some(obj) = obj else {
        return Err(DecodeError("ObjectContent without obj".into()));
    };
    Ok(with_missing(host, obj, props, missing_set))
}

/// Raises the missing properties that are errors: a lost session (how vcsim
/// reports one) and an invalid path. Other gaps stay in `missing`.
fn with_missing(
    host: &str,
    obj: MoRef,
    props: Map<String, Value>,
    mut set: Vec<Value>,
) -> Result<ObjectContent> {
    let mut missing = Vec::new();
    {
        // A lost session outranks everything else the object reports.
        set.sort_by_key(|m| {
            m.pointer("/fault/fault/_type") != Some(&Value::from("NotAuthenticated"))
        });
        for m in set {
            let path = m
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let detail = m.pointer("/fault/fault").cloned().unwrap_or(Value::Null);
            let fault_name = detail
                .get("_type")
                .and_then(Value::as_str)
                .unwrap_or("SystemError")
                .to_string();
            match FaultKind::from_name(&fault_name) {
                // vcsim reports a lost session this way instead of a fault.
                FaultKind::NotAuthenticated => {
                    return Err(Error::Fault {
                        host: host.to_string(),
                        fault: Box::new(Fault {
                            kind: FaultKind::NotAuthenticated,
                            name: fault_name,
                            message: String::new(),
                            detail,
                        }),
                    });
                }
                FaultKind::InvalidProperty => {
                    return Err(Error::InvalidProperty {
                        host: host.to_string(),
                        object: obj.to_string(),
                        path,
                    });
                }
                _ => missing.push(MissingProperty {
                    path,
                    fault: fault_name,
                }),
            }
        }
    }
    Ok(ObjectContent {
        obj,
        props,
        missing,
    })
}

fn decode_error(host: &str, method: &str, e: DecodeError) -> Error {
    Error::Decode {
        host: host.to_string(),
        method: method.to_string(),
        message: e.0,
    }
}

/// Retrieves by a PropertyFilterSpec (JSON), handing over each object.
pub async fn retrieve(
    session: &Session,
    filter: &Value,
    page_size: u32,
    mut on_object: impl FnMut(ObjectContent) -> ControlFlow<()> + Send,
) -> Result<usize> {
    let collector = session.manager("propertyCollector")?;
    retrieve_resuming(session, &collector, filter, page_size, &mut on_object).await
}

/// Every object of a retrieval, collected into a list.
pub async fn retrieve_all(session: &Session, filter: &Value) -> Result<Vec<ObjectContent>> {
    let mut all = Vec::new();
    retrieve(session, filter, DEFAULT_PAGE_SIZE, |o| {
        all.push(o);
        ControlFlow::Continue(())
    })
    .await?;
    Ok(all)
}

/// Properties of given objects, in one round trip.
pub async fn get_objects(
    session: &Session,
    objects: &[MoRef],
    paths: &[String],
) -> Result<Vec<ObjectContent>> {
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    retrieve_all(session, &filter_for_objects(objects, paths)).await
}

/// One property of one of the service content's managers (`perfManager`'s
/// `perfCounter`), or `None` when it is unset.
pub async fn manager_property(
    session: &Session,
    manager: &str,
    path: &str,
) -> Result<Option<Value>> {
    let manager = session.manager(manager)?;
    let rows = get_objects(session, std::slice::from_ref(&manager), &[path.to_string()]).await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|mut o| o.props.remove(path)))
}

/// Properties of given objects of several types, the paths chosen by type,
/// in one round trip. Types missing from `paths` get none.
pub async fn get_objects_by_type(
    session: &Session,
    objects: &[MoRef],
    paths: &std::collections::HashMap<String, Vec<String>>,
) -> Result<Vec<ObjectContent>> {
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    let filter = filter_for_objects_by(objects, |k| paths.get(k).map_or(&[][..], Vec::as_slice));
    retrieve_all(session, &filter).await
}

/// Properties of every object of a type in the inventory, through the
/// shared container view.
pub async fn discover(
    session: &Session,
    views: &Views,
    kind: &str,
    paths: &[String],
    mut on_object: impl FnMut(ObjectContent) -> ControlFlow<()> + Send,
) -> Result<usize> {
    let view = views.container_view(session, None, &[kind]).await?;
    let filter = filter_for_view(&view, kind, paths);
    match retrieve(session, &filter, DEFAULT_PAGE_SIZE, &mut on_object).await {
        Err(e) if e.fault_kind() == Some(&FaultKind::ManagedObjectNotFound) => {
            // The shared view is gone (destroyed elsewhere): make it again.
            views.forget(&view).await;
            let view = views.container_view(session, None, &[kind]).await?;
            let filter = filter_for_view(&view, kind, paths);
            retrieve(session, &filter, DEFAULT_PAGE_SIZE, &mut on_object).await
        }
        other => other,
    }
}

/// The first object of `kind` whose property `path` equals `value` (`name`,
/// or `info.url` for datastores), or `None`.
pub async fn find(
    session: &Session,
    views: &Views,
    kind: &str,
    path: &str,
    value: &Value,
) -> Result<Option<MoRef>> {
    let mut found = None;
    discover(session, views, kind, &[path.to_string()], |o| {
        if o.props.get(path) == Some(value) {
            found = Some(o.obj);
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .await?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const PAGE_1: &str = include_str!("../../tests/data/soap/rpex-page1.xml");
    const PAGE_2: &str = include_str!("../../tests/data/soap/rpex-page2.xml");
    const PAGE_3: &str = include_str!("../../tests/data/soap/rpex-page3.xml");
    const CANCEL: &str = include_str!("../../tests/data/soap/cancel-rpex.xml");

    /// Replays a recorded exchange and notes the calls made.
    struct Recorded {
        replies: Mutex<Vec<&'static str>>,
        calls: Mutex<Vec<(String, Value)>>,
    }

    impl Recorded {
        fn new(replies: &[&'static str]) -> Recorded {
            Recorded {
                replies: Mutex::new(replies.iter().rev().copied().collect()),
                calls: Mutex::new(Vec::new()),
            }
        }
        fn calls(&self) -> Vec<(String, Value)> {
            self.calls.lock().expect("lock").clone()
        }
    }

    impl PageSource for Recorded {
        fn host(&self) -> &str {
            "recorded"
        }
        fn generation(&self) -> u64 {
            0
        }
        async fn relogin(&self, _: u64) -> Result<()> {
            self.calls
                .lock()
                .expect("lock")
                .push(("Login".to_string(), Value::Null));
            Ok(())
        }
        async fn call(&self, method: &str, _: &MoRef, args: &Value) -> Result<Reply> {
            self.calls
                .lock()
                .expect("lock")
                .push((method.to_string(), args.clone()));
            let body = self
                .replies
                .lock()
                .expect("lock")
                .pop()
                .expect("a recorded reply");
            Ok(Reply {
                body: bytes::Bytes::from_static(body.as_bytes()),
                session_cookie: None,
            })
        }
    }

    fn collector() -> MoRef {
        MoRef::new("PropertyCollector", "propertyCollector")
    }

    #[tokio::test]
    async fn pages_are_followed_by_token_to_the_end() {
        let source = Recorded::new(&[PAGE_1, PAGE_2, PAGE_3]);
        let mut names = Vec::new();
        let filter = json!({"propSet": []});
        let n = drive_pages(&source, &collector(), &filter, 2, &mut |o| {
            names.push(o.props["name"].as_str().unwrap_or_default().to_string());
            ControlFlow::Continue(())
        })
        .await
        .expect("all pages");
        assert_eq!(n, 5);
        assert_eq!(
            names,
            [
                "DC0_H0_VM0",
                "DC0_H0_VM1",
                "DC0_C0_RP0_VM0",
                "DC0_C0_RP0_VM1",
                "vm with a <tag> & ü"
            ]
        );
        let calls = source.calls();
        let methods: Vec<_> = calls.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(
            methods,
            [
                "RetrievePropertiesEx",
                "ContinueRetrievePropertiesEx",
                "ContinueRetrievePropertiesEx"
            ]
        );
        assert_eq!(calls[0].1["options"]["maxObjects"], 2);
        assert_eq!(calls[1].1["token"], "page-token-1");
        assert_eq!(calls[2].1["token"], "page-token-2");
    }

    #[tokio::test]
    async fn a_session_lost_on_page_two_hands_over_no_object_twice() {
        let lost = include_str!("../../tests/data/soap/fault-not-authenticated.xml");
        let source = Recorded::new(&[PAGE_1, lost, PAGE_1, PAGE_2, PAGE_3]);
        let mut names = Vec::new();
        let n = retrieve_resuming(&source, &collector(), &json!({}), 2, &mut |o| {
            names.push(o.props["name"].as_str().unwrap_or_default().to_string());
            ControlFlow::Continue(())
        })
        .await
        .expect("retried cleanly");
        assert_eq!(n, 5);
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "no duplicates: {names:?}");
        assert_eq!(names.len(), 5, "{names:?}");
        let methods: Vec<String> = source.calls().into_iter().map(|c| c.0).collect();
        assert_eq!(
            methods,
            [
                "RetrievePropertiesEx",
                "ContinueRetrievePropertiesEx",
                "Login",
                "RetrievePropertiesEx",
                "ContinueRetrievePropertiesEx",
                "ContinueRetrievePropertiesEx"
            ]
        );
    }

    #[tokio::test]
    async fn stopping_early_cancels_the_rest() {
        let source = Recorded::new(&[PAGE_1, CANCEL]);
        let mut seen = 0;
        let n = drive_pages(&source, &collector(), &json!({}), 2, &mut |_| {
            seen += 1;
            ControlFlow::Break(())
        })
        .await
        .expect("cancelled cleanly");
        assert_eq!((n, seen), (1, 1));
        let calls = source.calls();
        assert_eq!(calls[1].0, "CancelRetrievePropertiesEx");
        assert_eq!(calls[1].1["token"], "page-token-1");
    }

    #[test]
    fn lost_session_and_invalid_paths_in_missing_set_are_errors() {
        let lost = include_str!("../../tests/data/soap/rpex-not-authenticated.xml");
        let reply = Reply {
            body: bytes::Bytes::from_static(lost.as_bytes()),
            session_cookie: None,
        };
        let err = parse_page("h", "RetrievePropertiesEx", &reply, &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
        assert!(err.is_not_authenticated(), "{err}");

        let denied = include_str!("../../tests/data/soap/rpex-no-permission.xml");
        let reply = Reply {
            body: bytes::Bytes::from_static(denied.as_bytes()),
            session_cookie: None,
        };
        let mut rows = Vec::new();
        parse_page("h", "RetrievePropertiesEx", &reply, &mut |o| {
            rows.push(o.into_row());
            ControlFlow::Continue(())
        })
        .expect("a property the user may not read is a gap, not a failure");
        assert_eq!(
            rows[0]["_missing"]["sessionList"],
            json!({"kind": "no_permission", "fault": "NoPermission"})
        );
        assert!(rows[0].get("sessionList").is_none());

        let invalid = include_str!("../../tests/data/soap/rpex-invalid-property.xml");
        let reply = Reply {
            body: bytes::Bytes::from_static(invalid.as_bytes()),
            session_cookie: None,
        };
        let err = parse_page("h", "RetrievePropertiesEx", &reply, &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
        assert!(err.to_string().contains("no.such.prop"), "{err}");
    }
}
