//! Field ownership (`metadata.managedFields`, FieldsV1) and server-side apply.
//!
//! A field path is a list of FieldsV1 segments: `f:name` (a map key), `k:{"name":"x"}` (an item
//! of a keyed list), `v:"x"` (an item of a set), and `.` (the item itself). Lists are atomic
//! unless the resource says they are keyed (`x-kubernetes-list-type: map`) or sets.
//!
//! Apply, as the real server does it: a field the applier sets that another manager owns with a
//! different value is a conflict (unless forced, which takes ownership); the same value is
//! shared. A field the applier set last time and omits now is removed, unless another manager
//! owns it. Updates (create, PUT, merge and JSON patches) move ownership of every field they
//! change to the updater.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::resources::{ListType, Resource};

/// One field path.
pub(crate) type FieldPath = Vec<String>;
/// A set of field paths.
pub(crate) type FieldSet = BTreeSet<FieldPath>;

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    /// `manager`.
    pub(crate) manager: String,
    /// `Apply` or `Update`.
    pub(crate) operation: String,
    /// `apiVersion` the manager used.
    pub(crate) api_version: String,
    /// `time`.
    pub(crate) time: String,
    /// What it owns.
    pub(crate) fields: FieldSet,
}

/// What the object's fields are, as FieldsV1 paths (identity metadata excluded).
pub(crate) fn fields_of(obj: &Value, r: &Resource, version: &str) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "status" if r.status_subresource => {}
            "metadata" => {
                for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(x) = v.get(mk) {
                        let mut names = vec!["metadata", mk];
                        let mut path = vec!["f:metadata".to_owned(), format!("f:{mk}")];
                        collect(x, r, version, &mut names, &mut path, &mut out);
                    }
                }
            }
            _ => {
                let mut names = vec![k.as_str()];
                let mut path = vec![format!("f:{k}")];
                collect(v, r, version, &mut names, &mut path, &mut out);
            }
        }
    }
    out
}

fn collect<'a>(
    v: &'a Value,
    r: &Resource,
    version: &str,
    names: &mut Vec<&'a str>,
    path: &mut FieldPath,
    out: &mut FieldSet,
) {
    match v {
        Value::Object(m) if !m.is_empty() => collect_map(m, r, version, names, path, out),
        Value::Array(items) => match r.list_type(version, names) {
            ListType::Map(keys) => {
                for item in items {
                    path.push(key_segment(item, &keys));
                    let mut dot = path.clone();
                    dot.push(".".into());
                    out.insert(dot);
                    if let Some(m) = item.as_object() {
                        collect_map(m, r, version, names, path, out);
                    }
                    path.pop();
                }
            }
            ListType::Set => {
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p);
                }
            }
            ListType::Atomic => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

fn collect_map<'a>(
    m: &'a Map<String, Value>,
    r: &Resource,
    version: &str,
    names: &mut Vec<&'a str>,
    path: &mut FieldPath,
    out: &mut FieldSet,
) {
    for (k, x) in m {
        names.push(k);
        path.push(format!("f:{k}"));
        collect(x, r, version, names, path, out);
        path.pop();
        names.pop();
    }
}

fn key_segment(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    format!("k:{}", Value::Object(m))
}

fn matches_key(item: &Value, seg: &str) -> bool {
    let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(&seg[2..]) else {
        return false;
    };
    keys.iter().all(|(k, v)| item.get(k) == Some(v))
}

/// The value at a path, if present.
pub(crate) fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        cur = match seg.as_str() {
            "." => cur,
            s if s.starts_with("f:") => cur.get(&s[2..])?,
            s if s.starts_with("k:") => cur.as_array()?.iter().find(|i| matches_key(i, s))?,
            s if s.starts_with("v:") => {
                let want: Value = serde_json::from_str(&s[2..]).ok()?;
                cur.as_array()?.iter().find(|i| **i == want)?
            }
            _ => return None,
        };
    }
    Some(cur)
}

/// Removes the field at a path (an item, for `k:`/`v:` paths and their `.`).
pub(crate) fn remove_at(obj: &mut Value, path: &[String]) {
    let path = match path.last().map(String::as_str) {
        Some(".") => &path[..path.len() - 1],
        _ => path,
    };
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parent {
        let next = match seg.as_str() {
            s if s.starts_with("f:") => cur.get_mut(&s[2..]),
            s if s.starts_with("k:") => cur
                .as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| matches_key(i, s))),
            _ => None,
        };
        let Some(n) = next else { return };
        cur = n;
    }
    match last.as_str() {
        s if s.starts_with("f:") => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(&s[2..]);
            }
        }
        s if s.starts_with("k:") => {
            if let Some(a) = cur.as_array_mut() {
                a.retain(|i| !matches_key(i, s));
            }
        }
        s if s.starts_with("v:") => {
            if let (Some(a), Ok(want)) =
                (cur.as_array_mut(), serde_json::from_str::<Value>(&s[2..]))
            {
                a.retain(|i| *i != want);
            }
        }
        _ => {}
    }
}

/// Deep-merges `applied` into `live`: maps key by key, keyed lists item by item, sets as a
/// union, everything else replaced.
pub(crate) fn merge(
    live: &mut Value,
    applied: &Value,
    r: &Resource,
    version: &str,
    names: &mut Vec<String>,
) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                names.push(k.clone());
                match l.get_mut(k) {
                    Some(lv) => merge(lv, av, r, version, names),
                    None => {
                        l.insert(k.clone(), av.clone());
                    }
                }
                names.pop();
            }
        }
        (Value::Array(l), Value::Array(a)) => {
            let path: Vec<&str> = names.iter().map(String::as_str).collect();
            match r.list_type(version, &path) {
                ListType::Map(keys) => {
                    for item in a {
                        let seg = key_segment(item, &keys);
                        match l.iter_mut().find(|i| matches_key(i, &seg)) {
                            Some(existing) => merge(existing, item, r, version, names),
                            None => l.push(item.clone()),
                        }
                    }
                }
                ListType::Set => {
                    for item in a {
                        if !l.contains(item) {
                            l.push(item.clone());
                        }
                    }
                }
                ListType::Atomic => *l = a.clone(),
            }
        }
        (l, a) => *l = a.clone(),
    }
}

/// `.spec.containers[name="web"].image`, as conflict messages print paths.
pub(crate) fn display(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg.as_str() {
            "." => {}
            s if s.starts_with("f:") => {
                out.push('.');
                out.push_str(&s[2..]);
            }
            s if s.starts_with("k:") => {
                let keys: Map<String, Value> = serde_json::from_str(&s[2..]).unwrap_or_default();
                let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            s if s.starts_with("v:") => out.push_str(&format!("[={}]", &s[2..])),
            s => out.push_str(s),
        }
    }
    out
}

/// FieldsV1 JSON of a set.
pub(crate) fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            cur = cur
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("FieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// The set a FieldsV1 JSON describes (its leaves).
pub(crate) fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, x) in m {
                    path.push(k.clone());
                    walk(x, path, out);
                    path.pop();
                }
            }
            _ => {
                if !path.is_empty() {
                    out.insert(path.clone());
                }
            }
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// The managedFields entries of an object.
pub(crate) fn entries(obj: Option<&Value>) -> Vec<Entry> {
    obj.and_then(|o| o["metadata"]["managedFields"].as_array())
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or_default().to_owned(),
            operation: e["operation"].as_str().unwrap_or("Update").to_owned(),
            api_version: e["apiVersion"].as_str().unwrap_or_default().to_owned(),
            time: e["time"].as_str().unwrap_or_default().to_owned(),
            fields: from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

/// Writes entries (dropping empty ones) into `obj.metadata.managedFields`.
pub(crate) fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            })
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Conflicts of an apply: other manager -> (its apiVersion, fields).
pub(crate) type Conflicts = BTreeMap<String, (String, Vec<FieldPath>)>;

/// Who owns what after an apply, and the merged object.
pub(crate) struct Applied {
    /// The object to store.
    pub(crate) object: Value,
    /// Conflicts found (empty, or overridden when forced).
    pub(crate) conflicts: Conflicts,
}

/// Server-side apply of `applied` by `manager` onto `live` (None when creating).
pub(crate) fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    r: &Resource,
    version: &str,
    now: &str,
) -> Applied {
    let applied_set = fields_of(applied, r, version);
    let mut entries = entries(live);
    let mine = |e: &Entry| e.manager == manager && e.operation == "Apply";

    let mut conflicts = Conflicts::new();
    if let Some(live) = live {
        for e in entries.iter().filter(|e| !mine(e)) {
            for p in applied_set.intersection(&e.fields) {
                // Item markers and (empty) maps are structure, not values: they never conflict.
                if p.last().is_some_and(|s| s == ".")
                    || value_at(applied, p).is_some_and(Value::is_object)
                {
                    continue;
                }
                if value_at(live, p) != value_at(applied, p) {
                    conflicts
                        .entry(e.manager.clone())
                        .or_insert_with(|| (e.api_version.clone(), Vec::new()))
                        .1
                        .push(p.clone());
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Applied {
            object: live.cloned().unwrap_or(Value::Null),
            conflicts,
        };
    }
    if force {
        for e in entries.iter_mut().filter(|e| !mine(e)) {
            if let Some((_, paths)) = conflicts.get(&e.manager) {
                for p in paths {
                    e.fields.remove(p);
                }
            }
        }
    }

    let mut object = live.cloned().unwrap_or_else(|| json!({}));
    let previous: FieldSet = entries
        .iter()
        .find(|e| mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !mine(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    for p in previous.difference(&applied_set) {
        if !others.contains(p) {
            remove_at(&mut object, p);
        }
    }
    let mut body = applied.clone();
    if let Some(m) = body.as_object_mut()
        && r.status_subresource
    {
        m.remove("status");
    }
    merge(&mut object, &body, r, version, &mut Vec::new());

    entries.retain(|e| !mine(e));
    entries.push(Entry {
        manager: manager.to_owned(),
        operation: "Apply".into(),
        api_version: r.group_version(version),
        time: now.to_owned(),
        fields: applied_set,
    });
    write_entries(&mut object, entries);
    Applied {
        object,
        conflicts: if force { Conflicts::new() } else { conflicts },
    }
}

/// Records an update by `manager`: it takes ownership of every field it changed; fields that
/// disappeared are owned by nobody.
pub(crate) fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    r: &Resource,
    version: &str,
    now: &str,
) {
    let new_set = fields_of(new, r, version);
    let old_set = old.map(|o| fields_of(o, r, version)).unwrap_or_default();
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| !old_set.contains(*p) || old.and_then(|o| value_at(o, p)) != value_at(new, p))
        .cloned()
        .collect();
    let mut entries = entries(old);
    for e in &mut entries {
        e.fields
            .retain(|p| new_set.contains(p) && !changed.contains(p));
    }
    match entries
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Update")
    {
        Some(e) => {
            e.fields.extend(changed);
            e.time = now.to_owned();
        }
        None => entries.push(Entry {
            manager: manager.to_owned(),
            operation: "Update".into(),
            api_version: r.group_version(version),
            time: now.to_owned(),
            fields: changed,
        }),
    }
    write_entries(new, entries);
}

/// The conflict message and causes, worded as the real server words them.
pub(crate) fn conflict_message(conflicts: &Conflicts) -> (String, Vec<Value>) {
    let n: usize = conflicts.values().map(|(_, p)| p.len()).sum();
    let mut causes = Vec::new();
    let mut parts = Vec::new();
    for (manager, (api_version, paths)) in conflicts {
        for p in paths {
            causes.push(json!({
                "type": "FieldManagerConflict",
                "message": format!("conflict with \"{manager}\" using {api_version}"),
                "field": display(p),
            }));
        }
        if let [only] = paths.as_slice() {
            parts.push(format!(
                "conflict with \"{manager}\" using {api_version}: {}",
                display(only)
            ));
        } else {
            let list: Vec<String> = paths.iter().map(|p| format!("- {}", display(p))).collect();
            parts.push(format!(
                "conflicts with \"{manager}\" using {api_version}:\n{}",
                list.join("\n")
            ));
        }
    }
    let plural = if n == 1 { "conflict" } else { "conflicts" };
    (
        format!("Apply failed with {n} {plural}: {}", parts.join("\n")),
        causes,
    )
}

#[cfg(test)]
mod tests;
