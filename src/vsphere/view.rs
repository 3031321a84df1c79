//! ContainerView and ListView, from the ViewManager.
//!
//! A container view over the whole inventory is what makes "every VM" one
//! property retrieval. [`Views`] keeps such views for the life of the
//! session and shares them between callers; they die with the session, so
//! a view made under an older login is made again.

use serde_json::{Value, json};
use std::collections::HashMap;

use super::fault::{Error, FaultKind, Result};
use super::moref::MoRef;
use super::session::Session;

/// The shared container views of one vCenter, by container and types, with
/// the login they were made under.
#[derive(Default)]
pub struct Views {
    cache: tokio::sync::Mutex<HashMap<String, (MoRef, u64)>>,
}

impl Views {
    /// A recursive ContainerView of the given types under `container`
    /// (the root folder when `None`), made once per login and shared.
    pub async fn container_view(
        &self,
        session: &Session,
        container: Option<&MoRef>,
        types: &[&str],
    ) -> Result<MoRef> {
        let root;
        let container = match container {
            Some(c) => c,
            None => {
                root = session.manager("rootFolder")?;
                &root
            }
        };
        let key = format!("{container}|{}", types.join(","));
        let generation = session.generation();
        let mut views = self.cache.lock().await;
        if let Some((view, made_in)) = views.get(&key)
            && *made_in == generation
        {
            return Ok(view.clone());
        }
        let view = create_container_view(session, container, types, true).await?;
        views.insert(key, (view.clone(), session.generation()));
        Ok(view)
    }

    /// Forgets a cached view the server no longer knows (it was destroyed or
    /// its session expired).
    pub async fn forget(&self, view: &MoRef) {
        self.cache.lock().await.retain(|_, (v, _)| v != view);
    }

    /// Destroys the views made under the current login (on the way out).
    pub async fn destroy_all(&self, session: &Session) {
        let views: Vec<(MoRef, u64)> = self.cache.lock().await.drain().map(|(_, v)| v).collect();
        let generation = session.generation();
        for (view, made_in) in views {
            if made_in == generation
                && let Err(e) = destroy_view(session, &view).await
            {
                tracing::debug!(host = %session.host(), "could not destroy view {view}: {e}");
            }
        }
    }
}

/// CreateContainerView, uncached; the caller destroys it.
pub async fn create_container_view(
    session: &Session,
    container: &MoRef,
    types: &[&str],
    recursive: bool,
) -> Result<MoRef> {
    let manager = session.manager("viewManager")?;
    let args = json!({"container": container.to_json(), "type": types, "recursive": recursive});
    let returned = session
        .invoke("CreateContainerView", &manager, &args)
        .await?;
    returned_view(session, returned)
}

/// CreateListView of the given objects; the caller destroys it. An object
/// the server does not know is a ManagedObjectNotFound fault naming it.
pub async fn create_list_view(session: &Session, objects: &[MoRef]) -> Result<MoRef> {
    let manager = session.manager("viewManager")?;
    let refs: Vec<Value> = objects.iter().map(MoRef::to_json).collect();
    let returned = session
        .invoke("CreateListView", &manager, &json!({"obj": refs}))
        .await?;
    returned_view(session, returned)
}

pub async fn destroy_view(session: &Session, view: &MoRef) -> Result<()> {
    match session.invoke("DestroyView", view, &Value::Null).await {
        Ok(_) => Ok(()),
        Err(e) if e.fault_kind() == Some(&FaultKind::ManagedObjectNotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

fn returned_view(session: &Session, returned: Value) -> Result<MoRef> {
    MoRef::from_json(&returned).ok_or_else(|| Error::Decode {
        host: session.host().to_string(),
        method: "Create*View".into(),
        message: format!("expected a view reference, got {returned}"),
    })
}
