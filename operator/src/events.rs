//! Events on our objects (`kubectl describe` shows them): started, completed, skipped, failed,
//! deleted, each with a reason. Publishing never fails a reconcile: a lost Event is logged.
//!
//! Tests use [`Events::memory`] to read what would have been published.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// One published Event, as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub object: String,
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

#[derive(Clone)]
enum Sink {
    Api(Recorder),
    Memory(Arc<Mutex<Vec<Published>>>),
}

/// Where a controller or the agent publishes its Events.
#[derive(Clone)]
pub struct Events {
    sink: Sink,
}

impl Events {
    /// Publish through the API server as `controller` (e.g. `bulwark-controller`,
    /// `bulwark-agent`), from `instance` (pod or node name).
    pub fn new(client: kube::Client, controller: &str, instance: Option<String>) -> Events {
        let reporter = Reporter {
            controller: controller.to_owned(),
            instance,
        };
        Events {
            sink: Sink::Api(Recorder::new(client, reporter)),
        }
    }

    /// Keep Events in memory; the returned list shows them.
    pub fn memory() -> (Events, Arc<Mutex<Vec<Published>>>) {
        let list = Arc::new(Mutex::new(Vec::new()));
        (
            Events {
                sink: Sink::Memory(list.clone()),
            },
            list,
        )
    }

    pub async fn normal<K>(&self, object: &K, reason: &str, note: impl Into<String>)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish(object, EventType::Normal, reason, note.into())
            .await
    }

    pub async fn warning<K>(&self, object: &K, reason: &str, note: impl Into<String>)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish(object, EventType::Warning, reason, note.into())
            .await
    }

    async fn publish<K>(&self, object: &K, type_: EventType, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let reference: ObjectReference = object.object_ref(&());
        match &self.sink {
            Sink::Memory(list) => list
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(Published {
                    object: format!("{}/{}", K::kind(&()), reference.name.unwrap_or_default()),
                    warning: type_ == EventType::Warning,
                    reason: reason.to_owned(),
                    note,
                }),
            Sink::Api(recorder) => {
                // The API server caps notes at 1 KiB.
                let note: String = note.chars().take(1000).collect();
                let event = Event {
                    type_,
                    reason: reason.to_owned(),
                    note: Some(note),
                    action: reason.to_owned(),
                    secondary: None,
                };
                if let Err(error) = recorder.publish(&event, &reference).await {
                    tracing::warn!(%error, reason, object = ?reference.name, "cannot publish Event");
                }
            }
        }
    }
}
