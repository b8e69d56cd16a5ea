//! Bearer-token authentication on every RPC, from a static token file in kube-apiserver's
//! `--token-auth-file` CSV format (`token,user,uid,"group1,group2"`).

use std::{collections::HashMap, sync::Arc};

use tonic::{Request, Status};

/// Who made a request (put in the request's extensions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// User name.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
}

/// Checks bearer tokens.
#[derive(Clone, Debug, Default)]
pub struct TokenAuth {
    tokens: Arc<HashMap<String, Caller>>,
}

impl TokenAuth {
    /// Parses a token file; errors name the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (token, rest) = line.split_once(',').ok_or_else(|| {
                format!(
                    "token file line {}: want token,user,uid[,\"groups\"]",
                    i + 1
                )
            })?;
            let mut parts = rest.splitn(3, ',');
            let user = parts.next().unwrap_or_default().trim();
            let _uid = parts.next();
            let groups = parts
                .next()
                .map(|g| {
                    g.trim()
                        .trim_matches('"')
                        .split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if token.is_empty() || user.is_empty() {
                return Err(format!(
                    "token file line {}: want token,user,uid[,\"groups\"]",
                    i + 1
                ));
            }
            tokens.insert(
                token.to_owned(),
                Caller {
                    user: user.to_owned(),
                    groups,
                },
            );
        }
        Ok(Self {
            tokens: Arc::new(tokens),
        })
    }

    /// The tonic interceptor: `UNAUTHENTICATED` unless a known bearer token is sent.
    pub fn check(&self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = token else {
            return Err(Status::unauthenticated(
                "no bearer token: send `authorization: Bearer <token>`",
            ));
        };
        let caller = self
            .tokens
            .get(token)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown bearer token"))?;
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}
