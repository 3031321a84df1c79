//! Reloads the method catalog when a file in a method directory changes.

use notify::{EventKind, RecursiveMode, event::AccessKind, event::AccessMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use std::path::PathBuf;
use std::time::Duration;

/// Keeps the watch alive; dropping it stops watching.
pub struct Watch {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

/// Watches `dirs` (recursively, for `lib/`) and calls `on_change` once per
/// burst of changes. Our own reads of the files show up as access events;
/// they are ignored, or every reload would trigger the next.
pub fn watch(dirs: &[PathBuf], on_change: impl Fn() + Send + 'static) -> Result<Watch, String> {
    let mut debouncer = new_debouncer(
        Duration::from_millis(100),
        None,
        move |result: DebounceEventResult| match result {
            Ok(events) => {
                let relevant = events.iter().any(|e| match e.event.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                    EventKind::Access(_) => false,
                    _ => true,
                });
                if relevant {
                    on_change();
                }
            }
            Err(errors) => {
                for e in errors {
                    tracing::warn!("watching method directories: {e}");
                }
            }
        },
    )
    .map_err(|e| format!("cannot watch the method directories: {e}"))?;
    for dir in dirs {
        if dir.is_dir() {
            debouncer
                .watch(dir, RecursiveMode::Recursive)
                .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        }
    }
    Ok(Watch {
        _debouncer: debouncer,
    })
}
