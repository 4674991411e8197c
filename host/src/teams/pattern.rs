//! Model-name patterns: what a credential's `models` list holds. `*` matches any run of characters
//! (none included); every other character matches itself. Nothing else is special, so a pattern
//! reads the way a team writes its prefix (`fraud-*`) and a name never means more than it says.

use anyhow::bail;

/// A model-name pattern, checked when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// Parses `text`: 1-128 characters a model name may have (letters, digits, `-`, `_`, `.`) or `*`.
    pub fn parse(text: &str) -> anyhow::Result<Pattern> {
        if text.is_empty() || text.len() > 128 {
            bail!("model pattern {text:?} must have 1-128 characters");
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*')))
        {
            bail!(
                "model pattern {text:?} has {bad:?}: use letters, digits, '-', '_', '.' and '*' (any run of characters)"
            );
        }
        Ok(Pattern(text.to_owned()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        // Greedy matching with one backtrack point (the last `*`): linear in practice, and at worst
        // pattern × name, both at most 128 bytes. Patterns and names are ASCII (checked on both
        // sides), so bytes are characters.
        let (p, n) = (self.0.as_bytes(), name.as_bytes());
        let (mut pi, mut ni) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ni < n.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ni));
                pi += 1;
            } else if pi < p.len() && p[pi] == n[ni] {
                pi += 1;
                ni += 1;
            } else if let Some((sp, sn)) = star {
                // The last `*` takes one more character of the name.
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(name)
    }

    #[test]
    fn a_star_matches_any_run_and_the_rest_is_literal() {
        assert!(m("fraud-*", "fraud-features"));
        assert!(m("fraud-*", "fraud-"), "a star matches nothing too");
        assert!(!m("fraud-*", "fraud"));
        assert!(!m("fraud-*", "antifraud-x"), "anchored at the start");
        assert!(!m("fraud-*", "Fraud-x"), "case matters, as in model names");
        assert!(m("*", "anything"));
        assert!(m("*-eta", "pricing-eta"));
        assert!(!m("*-eta", "pricing-eta2"), "anchored at the end");
        assert!(m("a*b*c", "a-b-b-c"));
        assert!(m("a*b*c", "abc"));
        assert!(!m("a*b*c", "a-c-b"));
        assert!(m("**x", "yx"));
        assert!(m("pricing-eta", "pricing-eta"));
        assert!(!m("pricing-eta", "pricing-etas"));
        assert!(
            !m("fraud.x", "fraudyx"),
            "a dot is a dot, not any character"
        );
    }

    #[test]
    fn patterns_hold_only_name_characters_and_stars() {
        for bad in [
            "",
            "fraud/*",
            "fraud-?",
            "fraud-[ab]",
            "../*",
            "a b",
            &"x".repeat(129),
        ] {
            let err = Pattern::parse(bad).unwrap_err().to_string();
            assert!(err.contains("model pattern"), "{bad:?}: {err}");
        }
        assert_eq!(Pattern::parse("fraud-*").unwrap().to_string(), "fraud-*");
    }
}
