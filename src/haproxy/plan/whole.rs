//! The decision for a change as a whole — nothing, a reload, or runtime operations — as the
//! module's rules state it. Production code plans section by section
//! ([`plan_partial`](super::plan_partial)); the tests state the rules with this.

use super::{diff, Op};
use crate::haproxy::config::{parse, Config};
use std::fmt;

/// What to do about a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The two texts mean the same to HAProxy.
    Nothing,
    /// Only a reload applies the change.
    Reload { reason: String },
    /// These runtime API operations apply the change, in this order.
    Runtime(Vec<Op>),
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Plan::Nothing => f.write_str("no change"),
            Plan::Reload { reason } => write!(f, "reload: {reason}"),
            Plan::Runtime(ops) => {
                f.write_str("runtime: ")?;
                for (i, op) in ops.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{op}")?;
                }
                Ok(())
            }
        }
    }
}

/// Decides how the change from `old` (what HAProxy runs) to `new` is applied; see the module
/// documentation for the rules.
pub fn plan(old: &str, new: &str) -> Plan {
    plan_parsed(&parse(old), &parse(new))
}

/// [`plan`] over texts already parsed.
pub fn plan_parsed(old: &Config, new: &Config) -> Plan {
    match diff(old, new) {
        Ok(ops) if ops.is_empty() => Plan::Nothing,
        Ok(ops) => Plan::Runtime(ops),
        Err(reason) => Plan::Reload { reason },
    }
}
