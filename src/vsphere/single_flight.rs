//! A value that many callers refresh together: the first caller that finds
//! it missing or old starts a refresh, and the others wait for that one and
//! share its outcome, failure included. With a vCenter that stopped
//! answering, every caller has its answer after one deadline, not one
//! deadline each in turn. If the caller running it gives up (its deadline
//! passed), the next one waiting takes over.

use std::future::Future;
use std::sync::{Arc, Mutex};

use super::fault::Result;

type Refresh<T> = Arc<tokio::sync::OnceCell<Result<Arc<T>>>>;

pub struct SingleFlight<T> {
    current: Mutex<Option<Arc<T>>>,
    pending: Mutex<Option<Refresh<T>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        SingleFlight {
            current: Mutex::new(None),
            pending: Mutex::new(None),
        }
    }
}

impl<T> SingleFlight<T> {
    /// The value of the last refresh that succeeded.
    pub fn current(&self) -> Option<Arc<T>> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    /// Joins the refresh in progress, or starts one with `make`; a value
    /// it makes becomes the current one.
    pub async fn refresh<F>(&self, make: impl FnOnce() -> F) -> Result<Arc<T>>
    where
        F: Future<Output = Result<T>>,
    {
        let refresh = match self.pending.lock() {
            Ok(mut pending) => pending.get_or_insert_with(Refresh::default).clone(),
            Err(_) => Refresh::default(),
        };
        let outcome = refresh
            .get_or_init(|| async { make().await.map(Arc::new) })
            .await
            .clone();
        if let Ok(mut pending) = self.pending.lock()
            && pending.as_ref().is_some_and(|p| Arc::ptr_eq(p, &refresh))
        {
            *pending = None;
        }
        if let Ok(value) = &outcome
            && let Ok(mut current) = self.current.lock()
        {
            *current = Some(value.clone());
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn callers_at_once_share_one_refresh_and_its_failure() {
        let flight: Arc<SingleFlight<u32>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let callers = (0..8).map(|_| {
            let (flight, runs) = (flight.clone(), runs.clone());
            tokio::spawn(async move {
                flight
                    .refresh(|| async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Err::<u32, _>(crate::vsphere::Error::Config("down".into()))
                    })
                    .await
            })
        });
        for caller in futures::future::join_all(callers).await {
            assert!(caller.expect("joined").is_err());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flight.current().is_none());
        let value = flight.refresh(|| async { Ok(7) }).await.expect("refreshed");
        assert_eq!((*value, flight.current().map(|v| *v)), (7, Some(7)));
    }
}
