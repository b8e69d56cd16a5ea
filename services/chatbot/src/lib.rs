//! mesh-chatbot: the mesh in Slack and Discord. One command core answers from the mcp service;
//! every policy change is dry-run as the requester, shown on a card, and applied as the
//! requester only after someone else approves; alerts follow `WatchMeshGraph`.

pub mod alerts;
pub mod app;
pub mod approvals;
pub mod cli;
pub mod command;
pub mod core;
pub mod discord;
pub mod identity;
pub mod mcp_error;
pub mod metrics;
pub mod payload;
pub mod reply;
pub mod requests;
pub mod rollouts;
pub mod slack;
