//! What both programs share: the key layout and the endpoint value contract, the etcd
//! connection, backoff, atomic file writes, and process plumbing (logging, shutdown).

pub mod backoff;
pub mod config;
pub mod endpoint;
pub(crate) mod errors;
pub mod etcd;
pub mod files;
pub mod keys;
pub mod process;
pub mod serve;
