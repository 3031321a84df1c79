//! ContainerView and ListView, from the ViewManager.
//!
//! A container view over the whole inventory is what makes "every VM" one
//! property retrieval. Such views are kept for the life of the session and
//! re-used by every caller; they die with the session, so a view made under
//! an older login is made again.

use serde_json::{Value, json};

use super::fault::{Error, FaultKind, Result};
use super::moref::MoRef;
use super::session::Session;

impl Session {
    /// A recursive ContainerView of the given types under `container`
    /// (the root folder when `None`), made once per session and shared.
    pub async fn container_view(&self, container: Option<&MoRef>, types: &[&str]) -> Result<MoRef> {
        let root;
        let container = match container {
            Some(c) => c,
            None => {
                root = self.manager("rootFolder")?;
                &root
            }
        };
        let key = format!("{container}|{}", types.join(","));
        let generation = self.generation();
        let mut views = self.inner.views.lock().await;
        if let Some((view, made_in)) = views.get(&key)
            && *made_in == generation
        {
            return Ok(view.clone());
        }
        let view = self.create_container_view(container, types, true).await?;
        views.insert(key, (view.clone(), self.generation()));
        Ok(view)
    }

    /// Forgets a cached view the server no longer knows (it was destroyed or
    /// its session expired).
    pub(crate) async fn forget_view(&self, view: &MoRef) {
        self.inner.views.lock().await.retain(|_, (v, _)| v != view);
    }

    /// CreateContainerView, uncached; the caller destroys it.
    pub async fn create_container_view(
        &self,
        container: &MoRef,
        types: &[&str],
        recursive: bool,
    ) -> Result<MoRef> {
        let manager = self.manager("viewManager")?;
        let args = json!({"container": container.to_json(), "type": types, "recursive": recursive});
        let returned = self.invoke("CreateContainerView", &manager, &args).await?;
        self.returned_view(returned)
    }

    /// CreateListView of the given objects; the caller destroys it. An
    /// object the server does not know is a ManagedObjectNotFound fault
    /// naming it.
    pub async fn create_list_view(&self, objects: &[MoRef]) -> Result<MoRef> {
        let manager = self.manager("viewManager")?;
        let refs: Vec<Value> = objects.iter().map(MoRef::to_json).collect();
        let returned = self
            .invoke("CreateListView", &manager, &json!({"obj": refs}))
            .await?;
        self.returned_view(returned)
    }

    pub async fn destroy_view(&self, view: &MoRef) -> Result<()> {
        match self.invoke("DestroyView", view, &Value::Null).await {
            Ok(_) => Ok(()),
            Err(e) if e.fault_kind() == Some(&FaultKind::ManagedObjectNotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn destroy_cached_views(&self) {
        let views: Vec<(MoRef, u64)> = self
            .inner
            .views
            .lock()
            .await
            .drain()
            .map(|(_, v)| v)
            .collect();
        let generation = self.generation();
        for (view, made_in) in views {
            if made_in == generation
                && let Err(e) = self.destroy_view(&view).await
            {
                tracing::debug!(host = %self.host(), "could not destroy view {view}: {e}");
            }
        }
    }

    fn returned_view(&self, returned: Value) -> Result<MoRef> {
        MoRef::from_json(&returned).ok_or_else(|| Error::Decode {
            host: self.host().to_string(),
            method: "Create*View".into(),
            message: format!("expected a view reference, got {returned}"),
        })
    }
}
