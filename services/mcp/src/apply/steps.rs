//! The two steps of the pipeline whose answer is the API server's: whether an identity may make
//! a write (a `SubjectAccessReview`), and the write itself (server-side apply, as the requester).
//! They are a seam: [`ApiServer`] is the product's; tests implement [`ApiSteps`] to reach paths
//! a healthy cluster never takes (a write refused after others stood, a missing review).

use futures_util::future::BoxFuture;
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use mesh_proto::pb;
use serde_json::Value;

/// An object a step acts on, as the API server names it.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// API group (empty for core).
    pub group: &'a str,
    /// Kind.
    pub kind: &'a str,
    /// Resource (plural).
    pub plural: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
}

/// What the pipeline asks of the API server about a requester's writes. Both steps ask the API
/// server unless overridden, so a test replaces only the step it needs to change.
pub trait ApiSteps: Send + Sync + 'static {
    /// Whether `id` may `verb` `target`, asked through `client` (mesh-mcp's own identity) with a
    /// `SubjectAccessReview`.
    fn may<'a>(
        &'a self,
        client: &'a Client,
        id: &'a pb::Identity,
        verb: &'a str,
        target: Target<'a>,
    ) -> BoxFuture<'a, Result<bool, kube::Error>> {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
        };
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(id.user.clone()),
                groups: Some(id.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(target.group.to_owned()),
                    resource: Some(target.plural.to_owned()),
                    namespace: Some(target.namespace.to_owned()),
                    name: Some(target.name.to_owned()),
                    verb: Some(verb.to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        Box::pin(async move {
            let answer = Api::<SubjectAccessReview>::all(client.clone())
                .create(&PostParams::default(), &sar)
                .await?;
            Ok(answer.status.is_some_and(|s| s.allowed))
        })
    }

    /// Server-side apply of `body` to `target` through `api` (a client impersonating the
    /// requester); a dry-run when `params` says so.
    fn apply<'a>(
        &'a self,
        api: &'a Api<DynamicObject>,
        target: Target<'a>,
        body: &'a Value,
        params: &'a PatchParams,
    ) -> BoxFuture<'a, Result<DynamicObject, kube::Error>> {
        Box::pin(async move { api.patch(target.name, params, &Patch::Apply(body)).await })
    }
}

/// The API server, asked as Kubernetes documents it: both steps as [`ApiSteps`] defines them.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiServer;

impl ApiSteps for ApiServer {}
