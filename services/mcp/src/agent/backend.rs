//! Where the agent's tool calls go: this process's own gRPC service (HTTP transport), or a
//! remote mcp service over gRPC with a token (stdio transport).

use super::*;

/// Where tool calls go: this process's own service (HTTP), or a remote one over gRPC (stdio).
#[derive(Clone, Debug)]
pub enum Backend {
    /// In process; the caller comes from the HTTP request.
    Local(Box<GraphService>),
    /// A remote mcp service, called with a bearer token.
    Remote {
        /// The gRPC client.
        client: MeshServiceClient<Channel>,
        /// The token sent with every call.
        token: String,
    },
}

/// Who is calling: the authenticated HTTP caller, or (stdio) the one holder of the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Who {
    pub(super) caller: Option<Caller>,
    pub(super) key: String,
    /// The MCP client's name: every call is an agent's.
    pub(super) agent: String,
}

impl Backend {
    pub(super) fn request<T>(&self, who: &Who, msg: T) -> Result<Request<T>, Status> {
        let mut r = Request::new(msg);
        r.set_timeout(Duration::from_secs(30));
        match self {
            Self::Local(_) => {
                if let Some(c) = &who.caller {
                    r.extensions_mut().insert(c.clone());
                }
            }
            Self::Remote { token, .. } => {
                let v = format!("Bearer {token}")
                    .parse()
                    .map_err(|_| Status::invalid_argument("the token is not a valid header"))?;
                r.metadata_mut().insert("authorization", v);
                // Names the agent to the remote service (only ever adds restrictions).
                if let Some(agent) =
                    crate::auth::agent_name(&who.agent).and_then(|a| a.parse().ok())
                {
                    r.metadata_mut().insert(crate::auth::AGENT_HEADER, agent);
                }
            }
        }
        Ok(r)
    }

    pub(super) async fn graph(
        &self,
        who: &Who,
        req: pb::GetMeshGraphRequest,
    ) -> Result<pb::MeshGraph, Status> {
        match self {
            Self::Local(s) => s.view(req).await.map(|v| v.to_pb()),
            Self::Remote { client, .. } => client
                .clone()
                .get_mesh_graph(self.request(who, req)?)
                .await
                .map(tonic::Response::into_inner),
        }
    }

    /// The graph `req` asks for, as the model holds it. In process it is the service's shared
    /// view, not encoded (a summary reads a few figures of it); remotely it is decoded.
    pub(super) async fn view(
        &self,
        who: &Who,
        req: pb::GetMeshGraphRequest,
    ) -> Result<crate::GraphView, Status> {
        match self {
            Self::Local(s) => s.view(req).await,
            Self::Remote { .. } => {
                let mut g = self.graph(who, req).await?;
                let point = g.point_in_time.take();
                let graph = mesh_model::MeshGraph::try_from(g)
                    .map_err(|e| Status::internal(format!("the graph could not be read: {e}")))?;
                Ok(crate::GraphView {
                    sources: graph.sources.clone(),
                    graph: Arc::new(graph),
                    point,
                })
            }
        }
    }

    pub(super) async fn diff(
        &self,
        who: &Who,
        req: pb::DiffMeshGraphRequest,
    ) -> Result<pb::MeshGraphDiff, Status> {
        let mut r = self.request(who, req)?;
        // A diff builds graphs to date its changes: more than one read's time.
        r.set_timeout(Duration::from_secs(120));
        match self {
            Self::Local(s) => s.diff_mesh_graph(r).await,
            Self::Remote { client, .. } => client.clone().diff_mesh_graph(r).await,
        }
        .map(tonic::Response::into_inner)
    }

    pub(super) async fn explain(
        &self,
        who: &Who,
        req: pb::ExplainAccessRequest,
    ) -> Result<pb::PolicyVerdict, Status> {
        let r = self.request(who, req)?;
        match self {
            Self::Local(s) => s.explain_access(r).await,
            Self::Remote { client, .. } => client.clone().explain_access(r).await,
        }
        .map(tonic::Response::into_inner)
    }

    pub(super) async fn propose(
        &self,
        who: &Who,
        req: pb::ProposePolicyRequest,
    ) -> Result<pb::ProposePolicyResponse, Status> {
        let r = self.request(who, req)?;
        match self {
            Self::Local(s) => s.propose_policy(r).await,
            Self::Remote { client, .. } => client.clone().propose_policy(r).await,
        }
        .map(tonic::Response::into_inner)
    }

    pub(super) async fn start_rollout(
        &self,
        who: &Who,
        req: pb::StartRolloutRequest,
    ) -> Result<pb::Rollout, Status> {
        let r = self.request(who, req)?;
        match self {
            Self::Local(s) => MeshService::start_rollout(&**s, r).await,
            Self::Remote { client, .. } => client.clone().start_rollout(r).await,
        }
        .map(tonic::Response::into_inner)
    }

    pub(super) async fn get_rollout(
        &self,
        who: &Who,
        req: pb::GetRolloutRequest,
    ) -> Result<pb::Rollout, Status> {
        let r = self.request(who, req)?;
        match self {
            Self::Local(s) => MeshService::get_rollout(&**s, r).await,
            Self::Remote { client, .. } => client.clone().get_rollout(r).await,
        }
        .map(tonic::Response::into_inner)
    }

    pub(super) async fn advance_rollout(
        &self,
        who: &Who,
        req: pb::AdvanceRolloutRequest,
    ) -> Result<pb::AdvanceRolloutResponse, Status> {
        let r = self.request(who, req)?;
        match self {
            Self::Local(s) => MeshService::advance_rollout(&**s, r).await,
            Self::Remote { client, .. } => client.clone().advance_rollout(r).await,
        }
        .map(tonic::Response::into_inner)
    }

    pub(super) async fn request_approval(
        &self,
        who: &Who,
        req: pb::RequestApprovalRequest,
    ) -> Result<pb::Approval, Status> {
        let r = self.request(who, req)?;
        match self {
            Self::Local(s) => MeshService::request_approval(&**s, r).await,
            Self::Remote { client, .. } => client.clone().request_approval(r).await,
        }
        .map(tonic::Response::into_inner)
    }

    pub(super) async fn get_approval(&self, who: &Who, id: String) -> Result<pb::Approval, Status> {
        let r = self.request(who, pb::GetApprovalRequest { id })?;
        match self {
            Self::Local(s) => MeshService::get_approval(&**s, r).await,
            Self::Remote { client, .. } => client.clone().get_approval(r).await,
        }
        .map(tonic::Response::into_inner)
    }

    pub(super) async fn list_approvals(
        &self,
        who: &Who,
        req: pb::ListApprovalsRequest,
    ) -> Result<pb::ListApprovalsResponse, Status> {
        let r = self.request(who, req)?;
        match self {
            Self::Local(s) => MeshService::list_approvals(&**s, r).await,
            Self::Remote { client, .. } => client.clone().list_approvals(r).await,
        }
        .map(tonic::Response::into_inner)
    }

    pub(super) async fn apply(
        &self,
        who: &Who,
        rpc: Rpc,
        req: pb::ApplyRequest,
    ) -> Result<pb::ApplyResponse, Status> {
        let r = self.request(who, req)?;
        match (self, rpc) {
            (Self::Local(s), Rpc::AuthorizationPolicy) => s.apply_authorization_policy(r).await,
            (Self::Local(s), Rpc::HttpRoute) => s.apply_http_route(r).await,
            (Self::Remote { client, .. }, Rpc::AuthorizationPolicy) => {
                client.clone().apply_authorization_policy(r).await
            }
            (Self::Remote { client, .. }, Rpc::HttpRoute) => {
                client.clone().apply_http_route(r).await
            }
        }
        .map(tonic::Response::into_inner)
    }
}
