//! Why a policy change (or an explain-access question) was refused, as a type: each kind says
//! what the caller can do about it, carries a label for `/metrics`, and maps to one gRPC status
//! at the boundary.

/// Why the apply pipeline refused or failed. The message says what and why, in words a
/// requester can act on; the variant says which kind of problem it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// No authenticated caller.
    #[error("{0}")]
    Unauthenticated(String),
    /// The request is malformed: validation, bounds, audit fields, unknown kinds.
    #[error("{0}")]
    Invalid(String),
    /// The caller may not act for the requester, or the requester may not make the change.
    #[error("{0}")]
    Forbidden(String),
    /// An object moved since the change was reviewed: review it again.
    #[error("{0}")]
    Stale(String),
    /// The approval policy wants people to approve this change first.
    #[error("{0}")]
    NeedsApproval(String),
    /// The API server refused the write as conflicting (another field manager, a race).
    #[error("{0}")]
    Conflict(String),
    /// The cluster is not ready for it: CRDs missing, mesh-mcp's own rights lacking.
    #[error("{0}")]
    Precondition(String),
    /// A workload or object the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The API server is throttling or the request is too large for it.
    #[error("{0}")]
    Exhausted(String),
    /// The API server or the cluster view cannot be reached now; worth retrying.
    #[error("{0}")]
    Unavailable(String),
    /// A step ran out of time.
    #[error("{0}")]
    Timeout(String),
    /// A fault of mesh-mcp itself.
    #[error("{0}")]
    Internal(String),
}

impl ApplyError {
    /// The label this error is counted under (`mesh_mcp_apply_errors_total{reason}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Invalid(_) => "invalid",
            Self::Forbidden(_) => "forbidden",
            Self::Stale(_) => "stale",
            Self::NeedsApproval(_) => "needs_approval",
            Self::Conflict(_) => "conflict",
            Self::Precondition(_) => "precondition",
            Self::NotFound(_) => "not_found",
            Self::Exhausted(_) => "exhausted",
            Self::Unavailable(_) => "unavailable",
            Self::Timeout(_) => "timeout",
            Self::Internal(_) => "internal",
        }
    }

    /// What went wrong, in words.
    pub fn message(&self) -> &str {
        match self {
            Self::Unauthenticated(m)
            | Self::Invalid(m)
            | Self::Forbidden(m)
            | Self::Stale(m)
            | Self::NeedsApproval(m)
            | Self::Conflict(m)
            | Self::Precondition(m)
            | Self::NotFound(m)
            | Self::Exhausted(m)
            | Self::Unavailable(m)
            | Self::Timeout(m)
            | Self::Internal(m) => m,
        }
    }

    /// The same kind of error, saying `message` instead.
    #[must_use]
    pub fn with_message(self, message: String) -> Self {
        match self {
            Self::Unauthenticated(_) => Self::Unauthenticated(message),
            Self::Invalid(_) => Self::Invalid(message),
            Self::Forbidden(_) => Self::Forbidden(message),
            Self::Stale(_) => Self::Stale(message),
            Self::NeedsApproval(_) => Self::NeedsApproval(message),
            Self::Conflict(_) => Self::Conflict(message),
            Self::Precondition(_) => Self::Precondition(message),
            Self::NotFound(_) => Self::NotFound(message),
            Self::Exhausted(_) => Self::Exhausted(message),
            Self::Unavailable(_) => Self::Unavailable(message),
            Self::Timeout(_) => Self::Timeout(message),
            Self::Internal(_) => Self::Internal(message),
        }
    }
}

/// The one mapping to gRPC: the code tells a client whether to fix the request
/// (`INVALID_ARGUMENT`), review again (`FAILED_PRECONDITION`), ask for rights
/// (`PERMISSION_DENIED`) or retry (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`).
impl From<ApplyError> for tonic::Status {
    fn from(e: ApplyError) -> Self {
        use tonic::Code;
        let code = match &e {
            ApplyError::Unauthenticated(_) => Code::Unauthenticated,
            ApplyError::Invalid(_) => Code::InvalidArgument,
            ApplyError::Forbidden(_) => Code::PermissionDenied,
            ApplyError::Stale(_)
            | ApplyError::NeedsApproval(_)
            | ApplyError::Conflict(_)
            | ApplyError::Precondition(_) => Code::FailedPrecondition,
            ApplyError::NotFound(_) => Code::NotFound,
            ApplyError::Exhausted(_) => Code::ResourceExhausted,
            ApplyError::Unavailable(_) => Code::Unavailable,
            ApplyError::Timeout(_) => Code::DeadlineExceeded,
            ApplyError::Internal(_) => Code::Internal,
        };
        Self::new(code, e.message().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_keeps_its_message_and_has_its_own_code_family() {
        let all = [
            (
                ApplyError::Unauthenticated("a".into()),
                tonic::Code::Unauthenticated,
            ),
            (
                ApplyError::Invalid("a".into()),
                tonic::Code::InvalidArgument,
            ),
            (
                ApplyError::Forbidden("a".into()),
                tonic::Code::PermissionDenied,
            ),
            (
                ApplyError::Stale("a".into()),
                tonic::Code::FailedPrecondition,
            ),
            (
                ApplyError::NeedsApproval("a".into()),
                tonic::Code::FailedPrecondition,
            ),
            (
                ApplyError::Conflict("a".into()),
                tonic::Code::FailedPrecondition,
            ),
            (
                ApplyError::Precondition("a".into()),
                tonic::Code::FailedPrecondition,
            ),
            (ApplyError::NotFound("a".into()), tonic::Code::NotFound),
            (
                ApplyError::Exhausted("a".into()),
                tonic::Code::ResourceExhausted,
            ),
            (
                ApplyError::Unavailable("a".into()),
                tonic::Code::Unavailable,
            ),
            (
                ApplyError::Timeout("a".into()),
                tonic::Code::DeadlineExceeded,
            ),
            (ApplyError::Internal("a".into()), tonic::Code::Internal),
        ];
        let mut labels = std::collections::BTreeSet::new();
        for (e, code) in all {
            assert!(labels.insert(e.metric_label()), "{e:?}: label reused");
            let longer = e.clone().with_message("a; and more".into());
            assert_eq!(longer.metric_label(), e.metric_label());
            let s = tonic::Status::from(longer);
            assert_eq!((s.code(), s.message()), (code, "a; and more"));
        }
    }
}
