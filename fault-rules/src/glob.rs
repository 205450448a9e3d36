//! Path globs: `*` matches within one path component, `**` across components, `?` one character.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_owned(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn matches(&self, path: &str) -> bool {
        matches(self.pattern.as_bytes(), path.as_bytes())
    }
}

fn matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => {
            // `**/` also matches no directory at all.
            let rest_after_slash = rest.strip_prefix(b"/").unwrap_or(rest);
            (0..=text.len()).any(|skip| matches(rest, &text[skip..]))
                || matches(rest_after_slash, text)
        }
        [b'*', rest @ ..] => {
            let component = text.iter().position(|&c| c == b'/').unwrap_or(text.len());
            (0..=component).any(|skip| matches(rest, &text[skip..]))
        }
        [b'?', rest @ ..] => text.first().is_some_and(|&c| c != b'/') && matches(rest, &text[1..]),
        [c, rest @ ..] => text.first() == Some(c) && matches(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn star_stays_in_one_component_and_double_star_crosses() {
        let wal = Glob::new("wal/*");
        assert!(wal.matches("wal/000001.log"));
        assert!(!wal.matches("wal/sub/000001.log"));
        assert!(!wal.matches("data/wal/x"));
        let deep = Glob::new("**/*.log");
        assert!(deep.matches("a/b/c.log"));
        assert!(deep.matches("c.log"));
        assert!(!deep.matches("c.txt"));
        assert!(Glob::new("*").matches("anything"));
        assert!(Glob::new("seg-??").matches("seg-01"));
        assert!(!Glob::new("seg-??").matches("seg-1"));
    }
}
