//! core/v1 and events.k8s.io/v1 Events are one resource stored once (in the core form), as in
//! the real server; events.k8s.io/v1 renames some fields. So `kubectl describe` (which reads
//! core Events) shows what controllers recorded through events.k8s.io/v1 (kube-rs's Recorder).

use serde_json::Value;

use crate::registry::ResourceType;

/// (events.k8s.io/v1 name, core/v1 name).
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn is_events_v1(rt: &ResourceType) -> bool {
    rt.group == "events.k8s.io" && rt.plural == "events"
}

fn rename(mut obj: Value, from_events: bool) -> Value {
    if let Some(m) = obj.as_object_mut() {
        for (events, core) in RENAMED {
            let (from, to) = if from_events {
                (events, core)
            } else {
                (core, events)
            };
            if let Some(v) = m.remove(*from) {
                m.insert((*to).to_owned(), v);
            }
        }
    }
    obj
}

/// The stored form of an object written through `rt`.
pub fn to_storage(rt: &ResourceType, obj: Value) -> Value {
    if is_events_v1(rt) {
        rename(obj, true)
    } else {
        obj
    }
}

/// The form `rt` serves of a stored object.
pub fn from_storage(rt: &ResourceType, obj: Value) -> Value {
    if is_events_v1(rt) {
        rename(obj, false)
    } else {
        obj
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::builtins;
    use serde_json::json;

    #[test]
    fn events_v1_fields_round_trip_through_the_core_form() {
        let types = builtins();
        let ev = types.iter().find(|t| t.group == "events.k8s.io").unwrap();
        let v1 = json!({"regarding": {"name": "g"}, "note": "hi", "reason": "Activated", "reportingController": "lapse"});
        let core = to_storage(ev, v1.clone());
        assert_eq!(
            core,
            json!({"involvedObject": {"name": "g"}, "message": "hi", "reason": "Activated", "reportingComponent": "lapse"})
        );
        assert_eq!(from_storage(ev, core), v1);
    }
}
