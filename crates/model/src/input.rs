//! Bounds on untrusted text, checked before it is parsed. YAML parsers spend time that grows
//! with the square of nesting depth (`x: [[[[...` of 100 KB took 17 s), so every YAML or JSON
//! document a service accepts (manifests, identity maps, topologies, chat forms) is measured
//! here first, in one linear pass, and refused with a specific error when it is too large or too
//! deep. Real documents are far inside the bounds: a Kubernetes object nests about 10 levels.

/// How large and how deep a document may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputLimits {
    /// Bytes.
    pub max_bytes: usize,
    /// Nesting levels: block indentation levels plus open `[`/`{` collections.
    pub max_depth: usize,
}

impl InputLimits {
    /// A policy manifest of up to 16 objects (an apply request, a chat form, a plan).
    pub const MANIFEST: Self = Self {
        max_bytes: 1024 * 1024,
        max_depth: 64,
    };
    /// A configuration file (identity map, approval policy).
    pub const CONFIG: Self = Self {
        max_bytes: 1024 * 1024,
        max_depth: 32,
    };
    /// A simulated mesh's topology (generated ones hold tens of thousands of workloads).
    pub const TOPOLOGY: Self = Self {
        max_bytes: 64 * 1024 * 1024,
        max_depth: 32,
    };
}

/// Why a document was refused before parsing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Over the byte limit.
    #[error("{size} bytes; at most {limit} are accepted")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Nested deeper than the limit.
    #[error("nested more than {limit} levels deep (line {line}); refused before parsing")]
    TooDeep {
        /// The limit.
        limit: usize,
        /// The 1-based line where the limit was passed.
        line: usize,
    },
}

/// Checks `text` against `limits` in one pass, without parsing it. Flow collections are counted
/// outside quoted strings; block levels by the indentation stack, a `- ` item adding one. The
/// count is an upper bound of the parser's depth, so nothing within the limits is refused
/// wrongly by more than the slack of that bound.
pub fn check(text: &str, limits: InputLimits) -> Result<(), InputError> {
    if text.len() > limits.max_bytes {
        return Err(InputError::TooLarge {
            size: text.len(),
            limit: limits.max_bytes,
        });
    }
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // Quote state carries across lines: flow scalars may span lines.
    let mut quote: Option<char> = None;
    for (n, line) in text.lines().enumerate() {
        let too_deep = |depth: usize| {
            (depth > limits.max_depth).then_some(InputError::TooDeep {
                limit: limits.max_depth,
                line: n + 1,
            })
        };
        let content = line.trim_start_matches([' ', '\t']);
        if flow == 0 && quote.is_none() && !content.is_empty() && !content.starts_with('#') {
            let mut indent = line.len() - content.len();
            // Each leading `- ` opens a level of its own: `- - - x` is three deep.
            let mut levels = 1;
            let mut rest = content;
            while let Some(r) = rest.strip_prefix('-') {
                if !(r.is_empty() || r.starts_with(' ')) {
                    break;
                }
                levels += 1;
                rest = r.trim_start_matches(' ');
            }
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            for _ in 0..levels {
                indents.push(indent);
                indent += 1;
            }
            if let Some(e) = too_deep(indents.len()) {
                return Err(e);
            }
        }
        for c in content.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    flow += 1;
                    if let Some(e) = too_deep(indents.len() + flow) {
                        return Err(e);
                    }
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
    use super::*;

    const L: InputLimits = InputLimits {
        max_bytes: 1 << 20,
        max_depth: 8,
    };

    #[test]
    fn real_documents_pass() {
        let doc = "apiVersion: v1\nkind: X\nmetadata:\n  name: a\n  labels: {app: a}\nspec:\n  \
                   rules:\n  - matches:\n    - path: {type: PathPrefix, value: \"/[x\"}\n      \
                   method: GET\n  # a comment with [[[[ brackets\n";
        check(doc, L).unwrap();
        check(r#"{"a": {"b": [1, 2, {"c": "]]]"}]}}"#, L).unwrap();
    }

    #[test]
    fn deep_flow_and_block_nesting_are_refused_with_their_line() {
        let flow = format!("x: {}", "[".repeat(100_000));
        assert_eq!(
            check(&flow, L),
            Err(InputError::TooDeep { limit: 8, line: 1 })
        );
        let block: String = (0..20).map(|i| format!("{}a:\n", "  ".repeat(i))).collect();
        assert_eq!(
            check(&block, L),
            Err(InputError::TooDeep { limit: 8, line: 9 })
        );
        let dashes = format!("{}x\n", "- ".repeat(20));
        assert!(matches!(check(&dashes, L), Err(InputError::TooDeep { .. })));
        // Brackets inside quotes are text, not nesting.
        check(&format!("x: \"{}\"", "[".repeat(100)), L).unwrap();
    }

    #[test]
    fn size_is_checked_first() {
        let big = "a".repeat(L.max_bytes + 1);
        assert_eq!(
            check(&big, L),
            Err(InputError::TooLarge {
                size: L.max_bytes + 1,
                limit: L.max_bytes
            })
        );
    }
}
