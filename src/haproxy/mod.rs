//! Talking to HAProxy: validating a candidate configuration with `haproxy -c`, reloading
//! through the master CLI (confirmed through `show proc`) or an operator's command, deciding
//! whether a change needs a reload at all ([`plan`]), and applying it through the runtime API
//! on the admin socket when it does not ([`admin`]).

pub mod admin;
mod master;
pub mod plan;
mod reload;
mod validate;

pub use admin::{RuntimeApplier, RuntimePath, RuntimeSocket, RuntimeUpdate};
pub use master::{MasterSocket, ProcList};
pub use reload::{Reload, ReloadError, Reloader};
pub use validate::{find_binary, CheckError, Validate, Validator};
