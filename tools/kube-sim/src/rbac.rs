//! RBAC evaluation over the Role, ClusterRole, RoleBinding and ClusterRoleBinding objects stored
//! in kube-sim, as the real authorizer does it: a request is allowed when any binding that names
//! the user (or one of its groups, or its service account) grants a rule matching it.
//! `system:masters` may do anything.

use serde_json::Value;

use crate::{auth::UserInfo, store::Store};

const RBAC: &str = "rbac.authorization.k8s.io";

/// What a request asks to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `impersonate`, ...
    pub verb: String,
    /// API group.
    pub group: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource, e.g. `status`.
    pub subresource: String,
    /// Namespace; empty at the cluster scope.
    pub namespace: String,
    /// Object name; empty for collections.
    pub name: String,
    /// Non-resource path (discovery), when `resource` is empty.
    pub path: String,
}

fn has(list: &Value, want: &str) -> bool {
    list.as_array().is_some_and(|a| {
        a.iter()
            .any(|x| x.as_str().is_some_and(|x| x == "*" || x == want))
    })
}

fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if !has(&rule["verbs"], &a.verb) {
        return false;
    }
    if a.resource.is_empty() {
        return rule["nonResourceURLs"].as_array().is_some_and(|urls| {
            urls.iter()
                .filter_map(Value::as_str)
                .any(|u| u == a.path || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p)))
        });
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource_ok = rule["resources"].as_array().is_some_and(|rs| {
        rs.iter().filter_map(Value::as_str).any(|r| {
            r == "*"
                || r == resource
                || (r.starts_with("*/") && !a.subresource.is_empty() && r[2..] == a.subresource)
        })
    });
    if !resource_ok || !has(&rule["apiGroups"], &a.group) {
        return false;
    }
    match rule["resourceNames"].as_array() {
        Some(names) if !names.is_empty() => {
            names.iter().any(|n| n.as_str() == Some(a.name.as_str()))
        }
        _ => true,
    }
}

fn subject_matches(s: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let name = s["name"].as_str().unwrap_or_default();
    match s["kind"].as_str() {
        Some("User") => name == user.name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = s["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn role_allows(store: &Store, role_ref: &Value, binding_ns: &str, a: &Attributes) -> bool {
    let name = role_ref["name"].as_str().unwrap_or_default();
    let role = match role_ref["kind"].as_str() {
        Some("ClusterRole") => store
            .list(RBAC, "clusterroles", None)
            .find(|(k, _)| k.name == name),
        Some("Role") => store
            .list(RBAC, "roles", Some(binding_ns))
            .find(|(k, _)| k.name == name),
        _ => None,
    };
    role.and_then(|(_, r)| r["rules"].as_array())
        .is_some_and(|rules| rules.iter().any(|rule| rule_allows(rule, a)))
}

/// Whether `user` may do `a`.
pub(crate) fn allowed(store: &Store, user: &UserInfo, a: &Attributes) -> bool {
    if user.groups.iter().any(|g| g == "system:masters") {
        return true;
    }
    let bound = |b: &Value, ns: &str| {
        b["subjects"]
            .as_array()
            .is_some_and(|subjects| subjects.iter().any(|s| subject_matches(s, user, ns)))
    };
    if store
        .list(RBAC, "clusterrolebindings", None)
        .any(|(_, b)| bound(b, "") && role_allows(store, &b["roleRef"], "", a))
    {
        return true;
    }
    !a.namespace.is_empty()
        && store
            .list(RBAC, "rolebindings", Some(&a.namespace))
            .any(|(_, b)| {
                bound(b, &a.namespace) && role_allows(store, &b["roleRef"], &a.namespace, a)
            })
}

/// The real server's 403 message.
pub(crate) fn forbidden_message(user: &str, a: &Attributes) -> String {
    if a.resource.is_empty() {
        return format!(
            "forbidden: User \"{user}\" cannot {} path \"{}\"",
            a.verb, a.path
        );
    }
    let qualified = if a.group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    let what = if a.name.is_empty() {
        qualified
    } else {
        format!("{qualified} \"{}\"", a.name)
    };
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    format!(
        "{what} is forbidden: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        a.verb, a.group
    )
}
