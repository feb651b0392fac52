//! Error text: an error and its sources on one line, for logs that name the cause.

/// `err` and its sources as one line, `outer: inner: innermost`, leaving out a source whose
/// text the line already holds (many libraries repeat their source in their own message).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{msg}")]
    struct E {
        msg: &'static str,
        #[source]
        source: Option<Box<E>>,
    }

    #[test]
    fn sources_are_joined_and_repeats_left_out() {
        let inner = E {
            msg: "connection refused",
            source: None,
        };
        let mid = E {
            msg: "connect (connection refused)",
            source: Some(Box::new(inner)),
        };
        let outer = E {
            msg: "client error",
            source: Some(Box::new(mid)),
        };
        assert_eq!(
            error_chain(&outer),
            "client error: connect (connection refused)"
        );
    }
}
