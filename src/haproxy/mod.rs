//! Talking to HAProxy: validating a candidate configuration with `haproxy -c`, and reloading
//! through the master CLI (confirmed through `show proc`) or an operator's command.

mod master;
pub mod plan;
mod reload;
mod validate;

pub use master::{MasterSocket, ProcList};
pub use reload::{Reload, Reloader};
pub use validate::{find_binary, CheckError, Validate, Validator};
