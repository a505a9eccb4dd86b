//! What nodes tell each other through the store: the `NOTIFY` channels, their
//! payload (a tenant's external id) and the events the watcher reports.

/// A tenant was created or replaced.
pub(crate) const CHANGED: &str = "tidepool_tenant_changed";
/// A tenant was deleted.
pub(crate) const DELETED: &str = "tidepool_tenant_deleted";
/// Every node should drop a tenant's pools and clients.
pub(crate) const TERMINATE: &str = "tidepool_tenant_terminate";

/// Subscribes to every channel above (identifiers, not strings: no parameters here).
pub(crate) const LISTEN_ALL: &str =
    "LISTEN tidepool_tenant_changed; LISTEN tidepool_tenant_deleted; LISTEN tidepool_tenant_terminate";

/// A change reported by [`Store::watch`](crate::Store::watch); strings are tenant
/// external ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// The tenant was created or replaced: reload it.
    Changed(String),
    /// The tenant was deleted.
    Deleted(String),
    /// Drop the tenant's pools and clients.
    Terminate(String),
    /// The watcher (re)connected and may have missed changes: reload everything.
    Resync,
}

impl StoreEvent {
    /// The event a notification stands for; `None` for a channel that is not ours.
    pub(crate) fn from_notification(channel: &str, payload: &str) -> Option<StoreEvent> {
        let id = payload.to_owned();
        match channel {
            CHANGED => Some(StoreEvent::Changed(id)),
            DELETED => Some(StoreEvent::Deleted(id)),
            TERMINATE => Some(StoreEvent::Terminate(id)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_on_every_channel() {
        for channel in [CHANGED, DELETED, TERMINATE] {
            assert!(
                LISTEN_ALL.contains(&format!("LISTEN {channel};"))
                    || LISTEN_ALL.ends_with(&format!("LISTEN {channel}"))
            );
        }
    }

    #[test]
    fn notifications_become_events() {
        assert_eq!(
            StoreEvent::from_notification(CHANGED, "t1"),
            Some(StoreEvent::Changed("t1".into()))
        );
        assert_eq!(
            StoreEvent::from_notification(DELETED, "t1"),
            Some(StoreEvent::Deleted("t1".into()))
        );
        assert_eq!(
            StoreEvent::from_notification(TERMINATE, "t1"),
            Some(StoreEvent::Terminate("t1".into()))
        );
        assert_eq!(StoreEvent::from_notification("other", "t1"), None);
    }
}
