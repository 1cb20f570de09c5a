//! The validation context: the source (for locations), the diagnostics so far and the
//! placeholder values, shared by [`super::validate`] and [`super::faults`].

use std::net::SocketAddr;

use hastack_config::{Diagnostics, KeyPath, Source};

use super::Vars;

/// What validation carries along: the source (for locations), the diagnostics so far, the
/// placeholder values.
pub(super) struct Ctx<'a> {
    pub(super) src: &'a Source,
    pub(super) diags: Diagnostics,
    pub(super) vars: &'a mut Vars,
}

impl Ctx<'_> {
    pub(super) fn err(&mut self, path: &KeyPath, msg: impl Into<String>) {
        self.diags.error(self.src, path, msg);
    }

    pub(super) fn warn(&mut self, path: &KeyPath, msg: impl Into<String>) {
        self.diags.warning(self.src, path, msg);
    }

    pub(super) fn expand(&mut self, path: &KeyPath, s: &str) -> Option<String> {
        match self.vars.expand(s) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    pub(super) fn addr(&mut self, path: &KeyPath, s: &str) -> Option<SocketAddr> {
        let v = self.expand(path, s)?;
        match v.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    path,
                    format!("{v:?} is not an IP:port address, e.g. \"127.0.0.1:8080\""),
                );
                None
            }
        }
    }
}
