//! HAProxy's `show servers state` as the benchmarks read it, with their own parser.

/// A server's state in `show servers state`: operational state, admin flags, user weight.
#[derive(Debug, Clone, Copy)]
pub struct ServerState {
    pub op: u32,
    pub admin: u32,
    pub weight: u32,
}

impl ServerState {
    /// Taking new requests: running, no maintenance or drain flag, a weight above 0.
    pub fn in_rotation(&self) -> bool {
        self.op == 2 && self.admin & 0x3f == 0 && self.weight > 0
    }
}

/// Server `name` in a `show servers state <backend>` answer (fields: be_id be_name srv_id
/// srv_name srv_addr srv_op_state srv_admin_state srv_uweight …); `None` when not listed.
///
/// Deliberately the benchmark's own parser, not `dockreg::haproxy::admin`'s nor the test kit's:
/// the benchmarks time how soon HAProxy shows a change, and must not measure with the code they
/// measure.
pub fn server_state(text: &str, name: &str) -> Option<ServerState> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 || f[3] != name || f[0].starts_with('#') {
            return None;
        }
        Some(ServerState {
            op: f[5].parse().ok()?,
            admin: f[6].parse().ok()?,
            weight: f[7].parse().ok()?,
        })
    })
}

/// Every server of a `show servers state` answer (all backends, or one): backend name, server
/// name and state, in the order listed.
pub fn all_servers(text: &str) -> Vec<(&str, &str, ServerState)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 || f[0].starts_with('#') || f[0].parse::<u32>().is_err() {
                return None;
            }
            let state = ServerState {
                op: f[5].parse().ok()?,
                admin: f[6].parse().ok()?,
                weight: f[7].parse().ok()?,
            };
            Some((f[1], f[3], state))
        })
        .collect()
}
