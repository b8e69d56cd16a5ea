//! mesh-mcp: serves the mesh graph. It holds no state of its own beyond an in-memory copy of the
//! published graph, kept current by [`Follower`] from the store, so any replica answers reads
//! without a store round trip per request.

mod follower;

pub use self::follower::{Follower, FollowerError, Step};
