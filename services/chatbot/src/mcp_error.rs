//! Why the mesh service could not answer the bot, by what a chat user can do about it. gRPC
//! statuses become these at the one place the bot calls mesh-mcp; replies and the approval flow
//! decide on the kind, not on status codes.

/// What went wrong between the bot and mesh-mcp.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum McpError {
    /// The bot's own token is unreadable, not a header value, or was refused.
    #[error("{0}")]
    Credentials(String),
    /// The request is not valid.
    #[error("{0}")]
    Invalid(String),
    /// It names a workload or object that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Kubernetes RBAC does not allow it for the requester.
    #[error("{0}")]
    Forbidden(String),
    /// The cluster changed since the review, or another manager owns a field.
    #[error("{0}")]
    Stale(String),
    /// No answer in time: a change may or may not have happened.
    #[error("{0}")]
    Unanswered(String),
    /// The call broke off: a change may or may not have happened.
    #[error("{0}")]
    Broken(String),
    /// Any other refusal or failure of the mesh service.
    #[error("{0}")]
    Refused(String),
    /// The answer could not be read.
    #[error("{0}")]
    Unreadable(String),
}

impl McpError {
    /// What went wrong, in words.
    pub fn message(&self) -> &str {
        match self {
            Self::Credentials(m)
            | Self::Invalid(m)
            | Self::NotFound(m)
            | Self::Forbidden(m)
            | Self::Stale(m)
            | Self::Unanswered(m)
            | Self::Broken(m)
            | Self::Refused(m)
            | Self::Unreadable(m) => m,
        }
    }

    /// Whether a change sent with this answer may have been made anyway.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Unanswered(_) | Self::Broken(_))
    }

    /// What a chat user is told it means.
    pub fn meaning(&self) -> &'static str {
        match self {
            Self::Unanswered(_) => "The mesh service did not answer in time; try again shortly.",
            Self::Credentials(_) => "The bot's token was refused by the mesh service.",
            Self::Forbidden(_) => "Kubernetes RBAC does not allow this for you.",
            Self::Invalid(_) => "The request is not valid.",
            Self::Stale(_) => "The cluster changed, or another manager owns a field.",
            Self::NotFound(_) | Self::Broken(_) | Self::Refused(_) | Self::Unreadable(_) => {
                "The mesh service refused the request."
            }
        }
    }
}

impl From<tonic::Status> for McpError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let m = s.message().to_owned();
        match s.code() {
            Code::Unauthenticated => Self::Credentials(m),
            Code::InvalidArgument => Self::Invalid(m),
            Code::NotFound => Self::NotFound(m),
            Code::PermissionDenied => Self::Forbidden(m),
            Code::FailedPrecondition => Self::Stale(m),
            Code::Unavailable | Code::DeadlineExceeded => Self::Unanswered(m),
            Code::Unknown | Code::Cancelled => Self::Broken(m),
            _ => Self::Refused(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_what_a_user_can_do() {
        use tonic::{Code, Status};
        let kind = |c: Code| McpError::from(Status::new(c, "why"));
        assert_eq!(
            kind(Code::FailedPrecondition),
            McpError::Stale("why".into())
        );
        assert_eq!(
            kind(Code::PermissionDenied),
            McpError::Forbidden("why".into())
        );
        for c in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Unknown,
            Code::Cancelled,
        ] {
            assert!(kind(c).outcome_unknown(), "{c:?}");
        }
        for c in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::Internal,
            Code::Unauthenticated,
        ] {
            assert!(!kind(c).outcome_unknown(), "{c:?}");
        }
        assert_eq!(kind(Code::Internal).message(), "why");
    }
}
