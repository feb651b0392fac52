//! The endpoint model: what one etcd value says about one backend.
//!
//! A value is either the legacy string `running` (the original sidekick's) or a JSON object
//! with optional metadata: `weight` (0–256), `tags` (a list of short words), `container` and
//! `hostname`. Unknown fields are ignored so newer sidekicks can add some. Values are
//! untrusted: every string that can reach a template is restricted to a character set that
//! cannot form HAProxy syntax (no whitespace, no `#`, no quotes, no line breaks).
//!
//! [`EndpointValue`] is the wire form, the one contract between the two programs: the sidekick
//! serializes it ([`EndpointValue::to_json`]), the watcher deserializes it and validates it
//! into [`Metadata`] ([`parse_value`]).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Largest value accepted, in bytes. Sidekicks write well under 300.
pub const MAX_VALUE_BYTES: usize = 4096;
/// The legacy value the original sidekick wrote.
pub const LEGACY_VALUE: &str = "running";
/// Weight used when the value does not give one.
pub const DEFAULT_WEIGHT: u16 = 100;
/// HAProxy's largest server weight.
pub const MAX_WEIGHT: u16 = 256;
/// The most tags a value may carry.
pub const MAX_TAGS: usize = 32;
const MAX_WORD: usize = 128;

/// Why a value is not endpoint metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("value is {0} bytes, more than the {MAX_VALUE_BYTES} allowed")]
    TooLarge(usize),
    #[error("value is not valid UTF-8")]
    NotUtf8,
    #[error("value is neither \"running\" nor a JSON object: {0}")]
    NotJson(String),
    #[error("weight {0} is outside 0..=256")]
    Weight(u64),
    #[error("more than {MAX_TAGS} tags")]
    TooManyTags,
    #[error("{field} {value:?} may hold only ASCII letters, digits and . _ - : = / + (1 to {MAX_WORD} characters)")]
    BadWord { field: &'static str, value: String },
}

/// Metadata of one endpoint, as validated from its etcd value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Server weight, `None` when the value did not give one.
    pub weight: Option<u16>,
    pub tags: Vec<String>,
    pub container: Option<String>,
    pub hostname: Option<String>,
}

impl Metadata {
    /// The weight to render: the value's, or [`DEFAULT_WEIGHT`].
    pub fn effective_weight(&self) -> u16 {
        self.weight.unwrap_or(DEFAULT_WEIGHT)
    }
}

/// The JSON value of an endpoint key, as written and read: what the sidekick serializes and
/// the watcher deserializes before validating it ([`parse_value`]).
///
/// Absent fields are left out when written, so a value holds only what is known. Fields are
/// declared in alphabetical order, which is the order they are written in (the sidekick's
/// values have always had sorted keys: `{"container":…,"hostname":…,"weight":…}`). Unknown
/// fields are ignored when read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EndpointValue {
    /// The host agent that wrote the value (`dockreg agent --agent-id`), so that a restarted
    /// agent knows its own keys; absent in a sidekick's value. Not shown to templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The container's short id (12 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The container's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Wider than a weight so that an out-of-range one is reported as such
    /// ([`ValueError::Weight`]), not as malformed JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u64>,
}

impl EndpointValue {
    /// The value's JSON text, as the sidekick writes it into etcd. (serde_json fails only on a
    /// map with non-string keys or a failing `Serialize` impl, neither of which this has; the
    /// error is passed on rather than unwrapped on a runtime path.)
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }

    /// Checks the fields against the limits and the safe character set.
    pub fn validate(self) -> Result<Metadata, ValueError> {
        let weight = match self.weight {
            Some(w) if w > u64::from(MAX_WEIGHT) => return Err(ValueError::Weight(w)),
            Some(w) => Some(w as u16),
            None => None,
        };
        if self.tags.len() > MAX_TAGS {
            return Err(ValueError::TooManyTags);
        }
        let tags = self
            .tags
            .into_iter()
            .map(|t| check_word("tag", t))
            .collect::<Result<Vec<_>, _>>()?;
        let container = self
            .container
            .map(|c| check_word("container", c))
            .transpose()?;
        let hostname = self
            .hostname
            .map(|h| check_word("hostname", h))
            .transpose()?;
        Ok(Metadata {
            weight,
            tags,
            container,
            hostname,
        })
    }
}

/// Checks one tag as the watcher will (the sidekick's `--tag`): ASCII letters, digits and
/// `. _ - : = / +`, 1 to 128 characters.
pub fn check_tag(value: &str) -> Result<String, ValueError> {
    check_word("tag", value.to_string())
}

fn check_word(field: &'static str, value: String) -> Result<String, ValueError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_WORD
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'=' | b'/' | b'+')
        });
    if ok {
        Ok(value)
    } else {
        Err(ValueError::BadWord { field, value })
    }
}

/// Parses an etcd value into endpoint metadata.
pub fn parse_value(raw: &[u8]) -> Result<Metadata, ValueError> {
    if raw.len() > MAX_VALUE_BYTES {
        return Err(ValueError::TooLarge(raw.len()));
    }
    let text = std::str::from_utf8(raw).map_err(|_| ValueError::NotUtf8)?;
    if text == LEGACY_VALUE {
        return Ok(Metadata::default());
    }
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ValueError::NotJson(e.to_string()))?;
    if !json.is_object() {
        return Err(ValueError::NotJson("not an object".into()));
    }
    EndpointValue::deserialize(json)
        .map_err(|e| ValueError::NotJson(e.to_string()))?
        .validate()
}

/// One live backend of a service: its address and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub meta: Metadata,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_and_json() {
        assert_eq!(parse_value(b"running").unwrap(), Metadata::default());
        let m =
            parse_value(br#"{"weight":50,"tags":["v2","zone=a"],"container":"abc123","extra":1}"#)
                .unwrap();
        assert_eq!(m.weight, Some(50));
        assert_eq!(m.tags, vec!["v2", "zone=a"]);
        assert_eq!(m.container.as_deref(), Some("abc123"));
        assert_eq!(
            parse_value(b"{}").unwrap().effective_weight(),
            DEFAULT_WEIGHT
        );
    }

    #[test]
    fn rejects_bad_values() {
        assert!(matches!(
            parse_value(b"stopped"),
            Err(ValueError::NotJson(_))
        ));
        assert!(matches!(
            parse_value(b"running\n"),
            Err(ValueError::NotJson(_))
        ));
        assert!(matches!(parse_value(b"[1]"), Err(ValueError::NotJson(_))));
        assert!(matches!(parse_value(b"\xff"), Err(ValueError::NotUtf8)));
        assert_eq!(
            parse_value(br#"{"weight":257}"#),
            Err(ValueError::Weight(257))
        );
        assert!(matches!(
            parse_value(br#"{"weight":-1}"#),
            Err(ValueError::NotJson(_))
        ));
        assert!(matches!(
            parse_value(br#"{"tags":["a b"]}"#),
            Err(ValueError::BadWord { field: "tag", .. })
        ));
        assert!(matches!(
            parse_value(br#"{"container":"x\nbackend evil"}"#),
            Err(ValueError::BadWord { .. })
        ));
        assert!(matches!(
            parse_value(br##"{"hostname":"#"}"##),
            Err(ValueError::BadWord { .. })
        ));
        let big = vec![b' '; MAX_VALUE_BYTES + 1];
        assert_eq!(
            parse_value(&big),
            Err(ValueError::TooLarge(MAX_VALUE_BYTES + 1))
        );
    }

    #[test]
    fn value_round_trips_with_sorted_keys() {
        let value = EndpointValue {
            container: Some("0123456789ab".into()),
            hostname: Some("web-1".into()),
            tags: vec!["v2".into(), "zone=a".into()],
            weight: Some(50),
            agent: None,
        };
        let text = value.to_json().unwrap();
        assert_eq!(
            text,
            r#"{"container":"0123456789ab","hostname":"web-1","tags":["v2","zone=a"],"weight":50}"#
        );
        let back: EndpointValue = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
        assert_eq!(
            parse_value(text.as_bytes()).unwrap(),
            Metadata {
                weight: Some(50),
                tags: vec!["v2".into(), "zone=a".into()],
                container: Some("0123456789ab".into()),
                hostname: Some("web-1".into()),
            }
        );
        // Absent fields are left out, so an empty value is `{}`.
        assert_eq!(EndpointValue::default().to_json().unwrap(), "{}");
        assert_eq!(parse_value(b"{}").unwrap(), Metadata::default());
    }
}
