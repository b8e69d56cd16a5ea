//! The resources kube-sim serves: built-in kinds our code and tests use, plus every
//! CustomResourceDefinition stored in it (registered when the CRD is written).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// How a list field merges under server-side apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole (the default).
    Atomic,
    /// Merged item by item, keyed by these fields.
    Map(Vec<String>),
    /// Merged as a set of scalars.
    Set,
}

/// One served resource (a group, its served versions, and a plural name).
#[derive(Clone, Debug)]
pub struct Resource {
    /// API group; empty for core.
    pub group: String,
    /// Served versions, preferred (storage) first.
    pub versions: Vec<String>,
    /// Plural name, used in paths.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Verbs served.
    pub verbs: Vec<&'static str>,
    /// OpenAPI v3 schema per version (custom resources only).
    pub schemas: BTreeMap<String, Value>,
    /// Whether `status` is a subresource (apply and updates ignore it on the main resource).
    pub status_subresource: bool,
}

const CRUD: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl Resource {
    fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        short: &[&str],
    ) -> Self {
        Self {
            group: group.to_owned(),
            versions: vec![version.to_owned()],
            plural: plural.to_owned(),
            singular: kind.to_lowercase(),
            kind: kind.to_owned(),
            namespaced,
            short_names: short.iter().map(|s| (*s).to_owned()).collect(),
            verbs: CRUD.to_vec(),
            schemas: BTreeMap::new(),
            status_subresource: false,
        }
    }

    fn create_only(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            verbs: vec!["create"],
            ..Self::builtin(group, version, plural, kind, namespaced, &[])
        }
    }

    /// `pods` for core, `deployments.apps` otherwise, as error messages name resources.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `v1` or `apps/v1`.
    pub fn group_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Whether this is a custom resource (defined by a CRD).
    pub fn is_custom(&self) -> bool {
        !self.schemas.is_empty()
    }

    /// The schema of a path of field names, following `properties` and `items`.
    pub fn schema_at<'a>(&'a self, version: &str, path: &[&str]) -> Option<&'a Value> {
        let mut s = self.schemas.get(version)?;
        for p in path {
            s = if let Some(items) = s.get("items") {
                items.get("properties").and_then(|props| props.get(*p))?
            } else {
                s.get("properties").and_then(|props| props.get(*p))?
            };
        }
        Some(s)
    }

    /// How the list at `path` (field names only) merges.
    pub fn list_type(&self, version: &str, path: &[&str]) -> ListType {
        if self.is_custom() {
            let Some(s) = self.schema_at(version, path) else {
                return ListType::Atomic;
            };
            return match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("map") => ListType::Map(
                    s.get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|k| {
                            k.iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
                Some("set") => ListType::Set,
                _ => ListType::Atomic,
            };
        }
        // Built-in kinds carry no schema here; these are the keyed lists of the kinds our
        // tests and seeds use (from the Kubernetes API's patch-merge-key markers).
        match path.last().copied() {
            Some("containers" | "initContainers" | "env" | "volumes") => {
                ListType::Map(vec!["name".into()])
            }
            Some("volumeMounts") => ListType::Map(vec!["mountPath".into()]),
            Some("ports") if path.contains(&"containers") => {
                ListType::Map(vec!["containerPort".into(), "protocol".into()])
            }
            Some("ports") => ListType::Map(vec!["port".into(), "protocol".into()]),
            Some("finalizers") => ListType::Set,
            Some("ownerReferences") => ListType::Map(vec!["uid".into()]),
            _ => ListType::Atomic,
        }
    }

    /// The `APIResource` entry for discovery.
    pub fn discovery(&self) -> Value {
        let mut v = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs,
        });
        if !self.short_names.is_empty() {
            v["shortNames"] = json!(self.short_names);
        }
        v
    }
}

/// Every served resource.
#[derive(Clone, Debug)]
pub struct Registry {
    resources: Vec<Resource>,
}

impl Default for Registry {
    fn default() -> Self {
        let b = Resource::builtin;
        Self {
            resources: vec![
                b("", "v1", "namespaces", "Namespace", false, &["ns"]),
                b("", "v1", "pods", "Pod", true, &["po"]),
                b("", "v1", "services", "Service", true, &["svc"]),
                b("", "v1", "serviceaccounts", "ServiceAccount", true, &["sa"]),
                b("", "v1", "configmaps", "ConfigMap", true, &["cm"]),
                b("", "v1", "secrets", "Secret", true, &[]),
                b("", "v1", "events", "Event", true, &["ev"]),
                b("", "v1", "endpoints", "Endpoints", true, &["ep"]),
                b("apps", "v1", "deployments", "Deployment", true, &["deploy"]),
                b("apps", "v1", "statefulsets", "StatefulSet", true, &["sts"]),
                b("apps", "v1", "daemonsets", "DaemonSet", true, &["ds"]),
                b("apps", "v1", "replicasets", "ReplicaSet", true, &["rs"]),
                b("events.k8s.io", "v1", "events", "Event", true, &["ev"]),
                b("coordination.k8s.io", "v1", "leases", "Lease", true, &[]),
                b(
                    "rbac.authorization.k8s.io",
                    "v1",
                    "roles",
                    "Role",
                    true,
                    &[],
                ),
                b(
                    "rbac.authorization.k8s.io",
                    "v1",
                    "rolebindings",
                    "RoleBinding",
                    true,
                    &[],
                ),
                b(
                    "rbac.authorization.k8s.io",
                    "v1",
                    "clusterroles",
                    "ClusterRole",
                    false,
                    &[],
                ),
                b(
                    "rbac.authorization.k8s.io",
                    "v1",
                    "clusterrolebindings",
                    "ClusterRoleBinding",
                    false,
                    &[],
                ),
                b(
                    "apiextensions.k8s.io",
                    "v1",
                    "customresourcedefinitions",
                    "CustomResourceDefinition",
                    false,
                    &["crd", "crds"],
                ),
                Resource::create_only(
                    "authorization.k8s.io",
                    "v1",
                    "subjectaccessreviews",
                    "SubjectAccessReview",
                    false,
                ),
                Resource::create_only(
                    "authorization.k8s.io",
                    "v1",
                    "selfsubjectaccessreviews",
                    "SelfSubjectAccessReview",
                    false,
                ),
                Resource::create_only(
                    "authentication.k8s.io",
                    "v1",
                    "tokenreviews",
                    "TokenReview",
                    false,
                ),
            ],
        }
    }
}

impl Registry {
    /// All resources.
    pub fn all(&self) -> &[Resource] {
        &self.resources
    }

    /// The resource at `/…/{group}/{version}/{plural}`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| {
            r.group == group && r.plural == plural && r.versions.iter().any(|v| v == version)
        })
    }

    /// The resource serving `kind` in `apiVersion` (`v1`, `apps/v1`).
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&Resource> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        self.resources
            .iter()
            .find(|r| r.group == group && r.kind == kind && r.versions.iter().any(|v| v == version))
    }

    /// Groups and their versions, in a stable order (core first).
    pub fn groups(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for r in &self.resources {
            let vs = out.entry(r.group.as_str()).or_default();
            for v in &r.versions {
                if !vs.contains(&v.as_str()) {
                    vs.push(v);
                }
            }
        }
        out
    }

    /// Registers (or replaces) the resource a CRD defines. Returns a message when the CRD is
    /// unusable.
    pub fn register_crd(&mut self, crd: &Value) -> Result<(), String> {
        let r = crd_resource(crd)?;
        self.resources
            .retain(|x| !(x.group == r.group && x.plural == r.plural));
        self.resources.push(r);
        Ok(())
    }

    /// Forgets the resource a CRD defined.
    pub fn unregister_crd(&mut self, crd: &Value) {
        if let Ok(r) = crd_resource(crd) {
            self.resources
                .retain(|x| !(x.group == r.group && x.plural == r.plural));
        }
    }
}

/// The resource a CRD object defines.
pub(crate) fn crd_resource(crd: &Value) -> Result<Resource, String> {
    let spec = &crd["spec"];
    let s = |v: &Value| v.as_str().map(str::to_owned);
    let group = s(&spec["group"]).ok_or("spec.group: Required value")?;
    let names = &spec["names"];
    let plural = s(&names["plural"]).ok_or("spec.names.plural: Required value")?;
    let kind = s(&names["kind"]).ok_or("spec.names.kind: Required value")?;
    let mut versions = Vec::new();
    let mut schemas = BTreeMap::new();
    let mut status_subresource = false;
    for v in spec["versions"]
        .as_array()
        .ok_or("spec.versions: Required value")?
    {
        let name = s(&v["name"]).ok_or("spec.versions[].name: Required value")?;
        if v["served"] == json!(false) {
            continue;
        }
        let schema = v["schema"]["openAPIV3Schema"].clone();
        schemas.insert(
            name.clone(),
            if schema.is_null() {
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
            } else {
                schema
            },
        );
        status_subresource |= !v["subresources"]["status"].is_null();
        if v["storage"] == json!(true) {
            versions.insert(0, name);
        } else {
            versions.push(name);
        }
    }
    if versions.is_empty() {
        return Err("spec.versions: must have at least one served version".into());
    }
    Ok(Resource {
        group,
        versions,
        singular: s(&names["singular"]).unwrap_or_else(|| kind.to_lowercase()),
        plural,
        kind,
        namespaced: spec["scope"] != json!("Cluster"),
        short_names: names["shortNames"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        verbs: CRUD.to_vec(),
        schemas,
        status_subresource,
    })
}
