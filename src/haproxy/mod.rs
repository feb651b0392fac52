//! Talking to HAProxy: reading its configuration text (`config`), deciding whether a change
//! needs a reload at all (`plan`), applying it through the runtime API on the admin socket
//! when it does not ([`admin`], the one place that writes runtime command text), reloading
//! through the master CLI (confirmed through `show proc`) or an operator's command, and
//! validating a candidate configuration with `haproxy -c`.
//!
//! Errors here name the socket, file, server or command at fault, never the command-line flag
//! that set it: flags are the watcher's (`crate::watcher`) business.

pub mod admin;
pub(crate) mod config;
mod master;
pub(crate) mod plan;
mod reload;
mod validate;

pub use master::{MasterError, MasterSocket, ProcList};
// The seams of `watcher::pipeline`, public as long as the pipeline is.
pub use admin::{ApplyError, RuntimeUpdate};
pub use reload::{Reload, ReloadError};
pub use validate::{CheckError, Validate};

pub(crate) use admin::{RuntimeApplier, RuntimePath, RuntimeSocket};
pub(crate) use reload::Reloader;
pub(crate) use validate::{find_binary, Validator};
