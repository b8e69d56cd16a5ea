//! The change log's content: an object's logged form (what counts as a change), the record of
//! one change (who, what, a compact diff, the state before it), the changes between what was
//! last logged and what the cluster holds now, and the objects at an earlier moment, replayed
//! back from now.
//!
//! The log keeps each change's state *before* it, and the store keeps the objects as last
//! logged: walking the log back from now, undoing one change at a time, gives the objects at
//! any moment the log covers. Storing the state after each change too would double the log for
//! nothing a reader needs.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use mesh_model::history::{ObjectChange, Operation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::index::ObjectKey;

/// The annotations linkerd-mcp writes on what it applies (see mesh-mcp's apply path).
const REQUESTED_BY: &str = "linkerd-mcp.io/requested-by";
const ACTED_AS: &str = "linkerd-mcp.io/acted-as";
const APPROVED_BY: &str = "linkerd-mcp.io/approved-by";
const AUDIT_ID: &str = "linkerd-mcp.io/audit-id";

/// Most diff lines a record keeps; the rest is counted.
pub const MAX_DIFF_LINES: usize = 20;
/// Longest value shown in a diff line.
const MAX_VALUE_CHARS: usize = 80;

/// An object as the change log holds it: without what changes on every write or is not
/// content (resourceVersion, generation, uid, managed fields, status, kubectl's last-applied
/// copy of the spec), so a status update or a resync is not a change. The creation time stays:
/// it never changes, and of two Servers selecting the same port the older wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// The logged form, as compact JSON (keys sorted: the same object gives the same text).
    pub text: String,
    /// Its resourceVersion.
    pub resource_version: String,
    /// The manager of its last write that was not to its status.
    pub field_manager: String,
}

impl Logged {
    /// The logged form of an object as the API server (or the collector's slimmed watch)
    /// returns it.
    pub fn of(v: &Value) -> Self {
        let mut form = v.clone();
        if let Some(m) = form["metadata"].as_object_mut() {
            for f in [
                "resourceVersion",
                "generation",
                "uid",
                "managedFields",
                "selfLink",
            ] {
                m.remove(f);
            }
            if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
                if a.is_empty() {
                    m.remove("annotations");
                }
            }
        }
        if let Some(o) = form.as_object_mut() {
            o.remove("status");
        }
        Self {
            text: form.to_string(),
            resource_version: v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            field_manager: field_manager(v),
        }
    }
}

/// The manager of the newest write that was not to the status subresource (from
/// `metadata.managedFields`).
pub fn field_manager(v: &Value) -> String {
    v["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["subresource"].as_str().unwrap_or_default() != "status")
        // RFC 3339 times in one format sort as text; entries without one keep their order.
        .max_by(|a, b| {
            let t = |f: &Value| f["time"].as_str().unwrap_or_default().to_owned();
            t(a).cmp(&t(b))
        })
        .and_then(|f| f["manager"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Every watched object's logged form, by key: what a cluster snapshot holds.
pub type Objects = BTreeMap<ObjectKey, Arc<Logged>>;

/// `group/kind/namespace/name`: an object's key in the store.
pub fn key_text(k: &ObjectKey) -> String {
    format!("{}/{}/{}/{}", k.group, k.kind, k.namespace, k.name)
}

/// The key [`key_text`] wrote, if it is one.
pub fn parse_key(s: &str) -> Option<ObjectKey> {
    let mut parts = s.splitn(4, '/');
    let (group, kind, namespace, name) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (!kind.is_empty() && !name.is_empty()).then(|| ObjectKey {
        group: group.to_owned(),
        kind: kind.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// One change as the log stores it (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// API group.
    #[serde(default)]
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `created`, `changed`, `deleted`, or `listed` (in the log's first records: the object
    /// existed when the log began).
    pub op: String,
    /// resourceVersion after the change (empty for a deletion: the watch's last version of a
    /// deleted object is not kept).
    #[serde(default)]
    pub rv: String,
    /// Field manager of the write.
    #[serde(default)]
    pub manager: String,
    /// Requester (the person acted as), when the change came through linkerd-mcp.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub requested_by: String,
    /// The caller that acted for the requester, when not the requester (e.g. the chat bot).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub via: String,
    /// Approver, when one approved it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub approved_by: String,
    /// linkerd-mcp's audit id of the change.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub audit_id: String,
    /// `path: before -> after` lines.
    #[serde(default)]
    pub diff: Vec<String>,
    /// The logged form before the change; `None` for a creation.
    #[serde(default)]
    pub before: Option<Value>,
}

impl Record {
    /// The record of the change from `before` (as last logged) to `after` (as now); `None`
    /// when nothing changed.
    pub fn of(key: &ObjectKey, before: Option<&str>, after: Option<&Logged>) -> Option<Self> {
        let parse = |t: &str| serde_json::from_str::<Value>(t).unwrap_or(Value::Null);
        let (op, b, a) = match (before, after) {
            (None, None) => return None,
            (Some(b), Some(a)) if b == a.text => return None,
            (None, Some(a)) => (Operation::Created, Value::Null, parse(&a.text)),
            (Some(b), Some(a)) => (Operation::Changed, parse(b), parse(&a.text)),
            (Some(b), None) => (Operation::Deleted, parse(b), Value::Null),
        };
        let annotation = |v: &Value, k: &str| {
            v["metadata"]["annotations"][k]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        // The requester and approver belong to this change only if it is the write that set a
        // new audit id: a later edit by someone else keeps the old annotations.
        let (mut requested_by, mut via, mut approved_by, mut audit_id) =
            (String::new(), String::new(), String::new(), String::new());
        let id = annotation(&a, AUDIT_ID);
        if !id.is_empty() && id != annotation(&b, AUDIT_ID) {
            let caller = annotation(&a, REQUESTED_BY);
            requested_by = annotation(&a, ACTED_AS);
            if requested_by.is_empty() {
                requested_by.clone_from(&caller);
            } else if caller != requested_by {
                via = caller;
            }
            approved_by = annotation(&a, APPROVED_BY);
            audit_id = id;
        }
        let mut diff = Vec::new();
        if op == Operation::Changed {
            diff_values("", &b, &a, &mut diff);
            if diff.len() > MAX_DIFF_LINES {
                let more = diff.len() - MAX_DIFF_LINES + 1;
                diff.truncate(MAX_DIFF_LINES - 1);
                diff.push(format!("… and {more} more"));
            }
        }
        Some(Self {
            group: key.group.clone(),
            kind: key.kind.clone(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            op: op.as_str().to_owned(),
            rv: after
                .map(|a| a.resource_version.clone())
                .unwrap_or_default(),
            manager: after.map(|a| a.field_manager.clone()).unwrap_or_default(),
            requested_by,
            via,
            approved_by,
            audit_id,
            diff,
            before: (!b.is_null()).then_some(b),
        })
    }

    /// The change as the model shows it.
    pub fn to_change(&self) -> ObjectChange {
        ObjectChange {
            group: self.group.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            operation: Operation::parse(&self.op).unwrap_or(Operation::Changed),
            resource_version: self.rv.clone(),
            field_manager: self.manager.clone(),
            requested_by: self.requested_by.clone(),
            via: self.via.clone(),
            approved_by: self.approved_by.clone(),
            audit_id: self.audit_id.clone(),
            diff: self.diff.clone(),
        }
    }

    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            group: self.group.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

fn show(v: &Value) -> String {
    let s = match v {
        Value::Null => "(absent)".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > MAX_VALUE_CHARS {
        let cut: String = s.chars().take(MAX_VALUE_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// Leaf-level differences; arrays are compared whole (a list's items have no stable names).
fn diff_values(path: &str, b: &Value, a: &Value, out: &mut Vec<String>) {
    if b == a {
        return;
    }
    match (b, a) {
        (Value::Object(bo), Value::Object(ao)) => {
            let mut keys: Vec<&String> = bo.keys().chain(ao.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_values(
                    &p,
                    bo.get(k).unwrap_or(&Value::Null),
                    ao.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ => out.push(format!("{path}: {} -> {}", show(b), show(a))),
    }
}

/// What changed from `logged` (the objects as last logged: key text to logged form) to
/// `now`, in key order: `(key, the object now or None, record)`. With `first`, the log begins
/// here: every object is `listed`, not created.
pub fn changes(
    logged: &HashMap<String, String>,
    now: &Objects,
    first: bool,
) -> Vec<(String, Option<String>, Record)> {
    let mut out = Vec::new();
    for (k, l) in now {
        let key = key_text(k);
        if let Some(mut r) = Record::of(k, logged.get(&key).map(String::as_str), Some(l)) {
            if first {
                r.op = Operation::Listed.as_str().to_owned();
            }
            out.push((key, Some(l.text.clone()), r));
        }
    }
    let mut gone: Vec<(&String, &String)> = logged
        .iter()
        .filter(|(k, _)| parse_key(k).is_none_or(|key| !now.contains_key(&key)))
        .collect();
    gone.sort();
    for (key, before) in gone {
        let Some(k) = parse_key(key) else { continue };
        if let Some(r) = Record::of(&k, Some(before), None) {
            out.push((key.clone(), None, r));
        }
    }
    out
}

/// [`changes`] when `since` is an earlier snapshot that `logged` already records: only
/// objects whose entry is not shared with it are compared (a snapshot shares every unchanged
/// object with the one before), so a build that changed one object of 30,000 compares one.
pub fn changes_since(
    logged: &HashMap<String, String>,
    since: &Objects,
    now: &Objects,
) -> Vec<(String, Option<String>, Record)> {
    let mut out = Vec::new();
    let mut record = |k: &ObjectKey, l: Option<&Arc<Logged>>| {
        let key = key_text(k);
        if let Some(r) = Record::of(k, logged.get(&key).map(String::as_str), l.map(|l| &**l)) {
            out.push((key, l.map(|l| l.text.clone()), r));
        }
    };
    // Both maps are in key order: one walk, one comparison a step.
    let (mut old, mut new) = (since.iter().peekable(), now.iter().peekable());
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some((ko, _)), Some((kn, _))) if ko < kn => {
                record(ko, None);
                old.next();
            }
            (Some(_), None) => {
                let (k, _) = old.next().expect("peeked");
                record(k, None);
            }
            (Some((ko, lo)), Some((kn, ln))) if ko == kn => {
                if !Arc::ptr_eq(lo, ln) {
                    record(kn, Some(ln));
                }
                old.next();
                new.next();
            }
            (_, Some(_)) => {
                let (k, l) = new.next().expect("peeked");
                record(k, Some(l));
            }
        }
    }
    out
}

/// The objects before `later` happened: `current` (the objects as last logged) with the
/// changes in `later` (oldest first) undone, newest first.
pub fn objects_before(current: HashMap<String, String>, later: &[Record]) -> Vec<Value> {
    let mut objects: HashMap<String, Value> = current
        .into_iter()
        .filter_map(|(k, v)| serde_json::from_str(&v).ok().map(|v| (k, v)))
        .collect();
    for r in later.iter().rev() {
        let key = key_text(&r.key());
        match &r.before {
            Some(b) => objects.insert(key, b.clone()),
            None => objects.remove(&key),
        };
    }
    let mut out: Vec<(String, Value)> = objects.into_iter().collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, v)| v).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy(rv: &str, ids: &[&str], annotations: &Value) -> Value {
        json!({
            "apiVersion": "policy.linkerd.io/v1alpha1", "kind": "MeshTLSAuthentication",
            "metadata": {"name": "voting-clients", "namespace": "emojivoto", "resourceVersion": rv,
                         "annotations": annotations,
                         "managedFields": [
                             {"manager": "kubectl", "operation": "Update", "time": "2026-12-07T10:00:00Z"},
                             {"manager": "linkerd-mcp", "operation": "Apply", "time": "2026-12-07T11:00:00Z"},
                             {"manager": "policy-controller", "subresource": "status", "time": "2026-12-07T12:00:00Z"}]},
            "spec": {"identities": ids},
            "status": {"conditions": [{"type": "Accepted", "lastTransitionTime": rv}]}
        })
    }

    #[test]
    fn a_status_or_version_bump_is_no_change_and_a_spec_change_is_one_with_its_actors() {
        let key = ObjectKey::of(&policy("1", &[], &json!({})));
        let v1 = Logged::of(&policy("1", &["web"], &json!({})));
        assert_eq!(
            v1.field_manager, "linkerd-mcp",
            "status writes do not count"
        );
        let bumped = Logged::of(&policy("2", &["web"], &json!({})));
        assert_eq!(Record::of(&key, Some(&v1.text), Some(&bumped)), None);
        let audited = json!({
            "linkerd-mcp.io/requested-by": "system:serviceaccount:linkerd-mcp:chatbot",
            "linkerd-mcp.io/acted-as": "alice", "linkerd-mcp.io/approved-by": "bob",
            "linkerd-mcp.io/audit-id": "a-1",
            "kubectl.kubernetes.io/last-applied-configuration": "{...}"});
        let v3 = Logged::of(&policy("3", &["web", "vote-bot"], &audited));
        let r = Record::of(&key, Some(&v1.text), Some(&v3)).unwrap();
        assert_eq!((r.op.as_str(), r.rv.as_str()), ("changed", "3"));
        assert_eq!(
            (
                r.requested_by.as_str(),
                r.approved_by.as_str(),
                r.audit_id.as_str()
            ),
            ("alice", "bob", "a-1")
        );
        assert_eq!(r.via, "system:serviceaccount:linkerd-mcp:chatbot");
        assert!(
            r.diff
                .contains(&r#"spec.identities: ["web"] -> ["web","vote-bot"]"#.to_owned()),
            "{:?}",
            r.diff
        );
        assert!(
            !r.diff.iter().any(|l| l.contains("last-applied")),
            "{:?}",
            r.diff
        );
        // A later edit by someone else keeps the annotations but is not theirs.
        let v4 = Logged::of(&policy("4", &["web"], &audited));
        let r = Record::of(&key, Some(&v3.text), Some(&v4)).unwrap();
        assert_eq!(
            (r.requested_by.as_str(), r.manager.as_str()),
            ("", "linkerd-mcp")
        );
        // Round trip through the store's text.
        let back: Record = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn replaying_the_log_back_from_now_gives_the_objects_of_any_moment() {
        let key = |n: &str| ObjectKey {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: "ns".into(),
            name: n.into(),
        };
        let deploy = |n: &str, replicas: u32| {
            Arc::new(Logged::of(
                &json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": n, "namespace": "ns"}, "spec": {"replicas": replicas}}),
            ))
        };
        // t0: nothing logged; t1: a=1, b=1; t2: a=3, b deleted, c=1.
        let t1: Objects = [(key("a"), deploy("a", 1)), (key("b"), deploy("b", 1))].into();
        let t2: Objects = [(key("a"), deploy("a", 3)), (key("c"), deploy("c", 1))].into();
        let mut store: HashMap<String, String> = HashMap::new();
        let mut log = Vec::new();
        for now in [&t1, &t2] {
            for (k, after, r) in changes(&store, now, false) {
                match after {
                    Some(a) => store.insert(k, a),
                    None => store.remove(&k),
                };
                log.push(r);
            }
        }
        let ops: Vec<(&str, &str)> = log
            .iter()
            .map(|r| (r.name.as_str(), r.op.as_str()))
            .collect();
        assert_eq!(
            ops,
            [
                ("a", "created"),
                ("b", "created"),
                ("a", "changed"),
                ("c", "created"),
                ("b", "deleted")
            ]
        );
        assert_eq!(log[2].diff, ["spec.replicas: 1 -> 3"]);
        let texts =
            |objs: Vec<Value>| -> Vec<String> { objs.iter().map(Value::to_string).collect() };
        let of = |o: &Objects| -> Vec<String> { o.values().map(|l| l.text.clone()).collect() };
        assert_eq!(texts(objects_before(store.clone(), &log[2..])), of(&t1));
        assert_eq!(texts(objects_before(store.clone(), &[])), of(&t2));
        assert!(objects_before(store, &log).is_empty(), "before everything");
        // From the snapshot before, only what differs is compared, with the same result.
        let mut logged_t1 = HashMap::new();
        for (k, a, _) in changes(&HashMap::new(), &t1, false) {
            logged_t1.insert(k, a.unwrap());
        }
        let mut t2_shared = (*Arc::new(t1.clone())).clone();
        t2_shared.insert(key("a"), deploy("a", 3));
        t2_shared.remove(&key("b"));
        t2_shared.insert(key("c"), deploy("c", 1));
        let sorted = |mut v: Vec<(String, Option<String>, Record)>| {
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(
            sorted(changes_since(&logged_t1, &t1, &t2_shared)),
            sorted(changes(&logged_t1, &t2_shared, false))
        );
        // Nothing changed: nothing logged.
        let mut again = HashMap::new();
        for (k, a, _) in changes(&HashMap::new(), &t2, true) {
            again.insert(k, a.unwrap());
        }
        assert!(changes(&again, &t2, false).is_empty());
    }
}
