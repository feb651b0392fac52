//! Parsing a configuration again after a change, at the cost of the change: the text before
//! and after the changed bytes is compared with the previous text, the sections wholly outside
//! the change are kept (shared, not copied), and only the sections the change touches are
//! parsed again. A change in the lines before the first section, or a text with conditional
//! blocks, is parsed whole. The result equals [`parse`](super::parse) of the new text (a
//! property test holds them equal).

use super::{common_ends, parse_spans, Config};
use std::sync::Arc;

/// A configuration text, parsed, with where each section starts in it.
#[derive(Debug, Clone)]
pub struct Parsed {
    text: Arc<String>,
    config: Arc<Config>,
    /// Byte offset of each section's first line in `text`.
    starts: Vec<usize>,
}

impl Parsed {
    /// Parses `text` whole.
    pub fn new(text: Arc<String>) -> Self {
        let (config, starts) = parse_spans(&text);
        Self {
            text,
            config: Arc::new(config),
            starts,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Parses `text`, a changed version of this one, keeping the sections the change does
    /// not touch.
    pub fn update(&self, text: Arc<String>) -> Self {
        if Arc::ptr_eq(&text, &self.text) || *text == *self.text {
            return Self {
                text,
                config: self.config.clone(),
                starts: self.starts.clone(),
            };
        }
        self.splice(&text).unwrap_or_else(|| Self::new(text))
    }

    /// The spliced parse, or `None` when only a whole parse will do.
    fn splice(&self, text: &Arc<String>) -> Option<Self> {
        let (old, new) = (self.text.as_bytes(), text.as_bytes());
        if self.config.conditional {
            return None;
        }
        let (prefix, suffix) = common_ends(old, new);
        // The first section touched: the last one starting before the first changed byte
        // (text inserted right at a section's start may belong to the section before it).
        let first = self.starts.iter().rposition(|&s| s < prefix)?;
        // The first section kept after the change: it starts, with the newline before it,
        // inside the unchanged end of the text.
        let unchanged_from = old.len() - suffix;
        let last = self.starts[first + 1..]
            .iter()
            .position(|&s| s > unchanged_from)
            .map_or(self.starts.len(), |p| first + 1 + p);
        let shift = new.len() as isize - old.len() as isize;
        let from = self.starts[first];
        let to_old = self.starts.get(last).copied().unwrap_or(old.len());
        let to = usize::try_from(to_old as isize + shift).ok()?;
        let middle = text.get(from..to)?;
        let (parsed, starts) = parse_spans(middle);
        if !parsed.preamble.is_empty() || parsed.conditional {
            return None;
        }
        let mut config = Config {
            preamble: self.config.preamble.clone(),
            sections: Vec::with_capacity(first + parsed.sections.len() + self.starts.len() - last),
            conditional: false,
        };
        config
            .sections
            .extend_from_slice(&self.config.sections[..first]);
        config.sections.extend(parsed.sections);
        config
            .sections
            .extend_from_slice(&self.config.sections[last..]);
        let mut all = Vec::with_capacity(config.sections.len());
        all.extend_from_slice(&self.starts[..first]);
        all.extend(starts.iter().map(|s| s + from));
        all.extend(
            self.starts[last..]
                .iter()
                .map(|&s| (s as isize + shift) as usize),
        );
        Some(Self {
            text: text.clone(),
            config: Arc::new(config),
            starts: all,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::config::parse;
    use proptest::prelude::*;

    const BASE: &str = "# head\nglobal\n    maxconn 10\n\nbackend a\n    balance roundrobin\n    server a1 10.0.0.1:80 check\n\nbackend b\n    server b1 10.0.0.2:80\n    server b2 10.0.0.3:80\n\nbackend c\n    server c1 10.0.0.4:80\n";

    fn check(old: &str, new: &str) -> Parsed {
        let p = Parsed::new(Arc::new(old.to_string())).update(Arc::new(new.to_string()));
        assert_eq!(**p.config(), parse(new), "{old:?} -> {new:?}");
        assert_eq!(p.starts, parse_spans(new).1, "{old:?} -> {new:?}");
        p
    }

    #[test]
    fn a_server_added_reparses_its_section_and_shares_the_others() {
        let new = BASE.replace(
            "    server b2 10.0.0.3:80\n",
            "    server b2 10.0.0.3:80\n    server b3 10.0.0.9:80\n",
        );
        let old = Parsed::new(Arc::new(BASE.to_string()));
        let p = check(BASE, &new);
        let p2 = old.update(Arc::new(new));
        assert_eq!(*p2.config, *p.config);
        for k in [0, 1, 3] {
            assert!(
                Arc::ptr_eq(&old.config.sections[k], &p2.config.sections[k]),
                "{k}"
            );
        }
        assert!(!Arc::ptr_eq(
            &old.config.sections[2],
            &p2.config.sections[2]
        ));
    }

    #[test]
    fn edits_at_the_edges_and_across_sections() {
        let cases = [
            BASE.replace("# head\n", "# other head\n"),
            BASE.replace("backend c\n", "backend c2\n"),
            BASE.replace("\nbackend b\n", "\n"),
            format!("{BASE}backend d\n    server d1 10.0.0.5:80\n"),
            BASE.replace(
                "backend a\n",
                "backend z\n    server z 1.1.1.1:1\nbackend a\n",
            ),
            BASE.replace("    maxconn 10\n", ".if defined(X)\n.endif\n"),
            String::new(),
            BASE.replace('\n', "\r\n"),
            BASE.trim_end().to_string(),
        ];
        for new in &cases {
            check(BASE, new);
            check(new, BASE);
        }
    }

    proptest! {
        #[test]
        fn update_equals_a_whole_parse(
            lines in prop::collection::vec(
                prop::sample::select(vec![
                    "backend a", "backend b", "listen l", "global", "defaults", "",
                    "    server s1 10.0.0.1:80", "    server s2 10.0.0.2:80 weight 5",
                    "    balance roundrobin", "# comment", "\tserver s3 10.0.0.3:80 check",
                    ".if 1", ".endif",
                ]),
                0..14,
            ),
            at in 0usize..14,
            cut in 0usize..4,
            insert in prop::collection::vec(
                prop::sample::select(vec!["backend n", "    server n1 10.0.0.9:80", "", "frontend f"]),
                0..3,
            ),
        ) {
            let old = lines.join("\n") + "\n";
            let mut new_lines = lines.clone();
            let at = at.min(new_lines.len());
            let cut = cut.min(new_lines.len() - at);
            new_lines.splice(at..at + cut, insert);
            let new = new_lines.join("\n") + "\n";
            let p = Parsed::new(Arc::new(old)).update(Arc::new(new.clone()));
            prop_assert_eq!(&**p.config(), &parse(&new));
            prop_assert_eq!(&p.starts, &parse_spans(&new).1);
        }
    }
}
