//! Authentication: bearer tokens from a kube-apiserver `--token-auth-file` CSV
//! (`token,user,uid,"group1,group2"`); anonymous requests are refused.

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Groups, including `system:authenticated`.
    pub groups: Vec<String>,
}

/// The audience of tokens that are not bound to another (the API server's own).
pub(crate) const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// The token file's users.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    users: Vec<(String, UserInfo)>,
    /// Tokens bound to another audience, as projected service account tokens are.
    bound: Vec<(String, String)>,
}

/// Splits one CSV line, honouring double quotes.
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                out.last_mut().expect("one field").push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().expect("one field").push(c),
        }
    }
    out
}

impl Tokens {
    /// Parses the CSV text; line numbers in errors are 1-based.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut users = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f = csv_fields(line);
            if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
                return Err(format!(
                    "token file line {}: want token,user,uid[,\"groups\"]",
                    i + 1
                ));
            }
            let mut groups: Vec<String> = f
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            groups.push("system:authenticated".into());
            users.push((
                f[0].clone(),
                UserInfo {
                    name: f[1].clone(),
                    uid: f[2].clone(),
                    groups,
                },
            ));
        }
        Ok(Self {
            users,
            bound: Vec::new(),
        })
    }

    /// The user a token belongs to.
    /// Binds tokens to audiences other than the API server's: `(token, audience)`.
    pub fn bind(mut self, bound: Vec<(String, String)>) -> Self {
        self.bound = bound;
        self
    }

    /// The audiences a token is valid for.
    pub fn audiences(&self, token: &str) -> Vec<String> {
        match self.bound.iter().find(|(t, _)| t == token) {
            Some((_, aud)) => vec![aud.clone()],
            None => vec![API_AUDIENCE.to_owned()],
        }
    }

    /// The user of a token presented to the API server itself (tokens bound to another
    /// audience are not accepted there).
    pub fn api_user(&self, token: &str) -> Option<&UserInfo> {
        if self.bound.iter().any(|(t, _)| t == token) {
            return None;
        }
        self.user(token)
    }

    /// The user of a token, whatever its audience.
    pub fn user(&self, token: &str) -> Option<&UserInfo> {
        self.users.iter().find(|(t, _)| t == token).map(|(_, u)| u)
    }
}

/// Groups Kubernetes gives a service account user `system:serviceaccount:<ns>:<name>`.
pub(crate) fn service_account_groups(user: &str) -> Vec<String> {
    match user
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, _)) => vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
        ],
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines_parse_like_kube_apiserver() {
        let t = Tokens::parse("# comment\nt1,alice,u1,\"devs,ops\"\nt2,bob,u2\n").unwrap();
        assert_eq!(
            t.user("t1").unwrap().groups,
            ["devs", "ops", "system:authenticated"]
        );
        assert_eq!(t.user("t2").unwrap().name, "bob");
        assert!(t.user("nope").is_none());
        assert_eq!(
            Tokens::parse("onlytoken\n").unwrap_err(),
            "token file line 1: want token,user,uid[,\"groups\"]"
        );
    }
}
