//! Degradation: what a route answers instead of an error, and the operator's switch that
//! turns a route off on purpose (e.g. registration during a sale, so checkout keeps its
//! capacity).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use parking_lot::Mutex;
use serde::Serialize;

use crate::RejectReason;

/// A canned response, loaded once at config time (the body file is read then, not per
/// request).
#[derive(Clone, Debug, PartialEq)]
pub struct StaticResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers (`content-type` among them).
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl StaticResponse {
    /// Build the response. Clones the header map (a small allocation): this is the
    /// degraded path, not the hot one. The body is shared, never copied.
    pub fn to_response(&self) -> Response<Bytes> {
        let mut r = Response::new(self.body.clone());
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// What a route falls back to.
#[derive(Clone, Debug, PartialEq)]
pub enum FallbackAction {
    /// Answer this.
    Static(Arc<StaticResponse>),
    /// Send the request to this pool instead (the proxy resolves the name).
    Pool(String),
}

/// A route's fallback and the refusals it covers.
#[derive(Clone, Debug)]
pub struct Fallback {
    /// What to do.
    pub action: FallbackAction,
    /// Which refusals it answers (indexed by [`RejectReason`]); others get their plain
    /// status (429, 503, 504).
    pub on: [bool; RejectReason::ALL.len()],
    /// Whether it also answers when the upstream itself failed (5xx, connection error).
    pub on_upstream_error: bool,
    served: Arc<AtomicU64>,
}

impl Fallback {
    /// A fallback covering `on` reasons (and upstream errors if `on_upstream_error`).
    pub fn new(action: FallbackAction, on: &[RejectReason], on_upstream_error: bool) -> Self {
        let mut mask = [false; RejectReason::ALL.len()];
        for r in on {
            mask[r.index()] = true;
        }
        Fallback {
            action,
            on: mask,
            on_upstream_error,
            served: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether this fallback answers a refusal for `reason`.
    pub fn covers(&self, reason: RejectReason) -> bool {
        self.on[reason.index()]
    }

    /// The action for `reason`, counting it as served; `None` when not covered.
    pub fn for_reason(&self, reason: RejectReason) -> Option<&FallbackAction> {
        self.covers(reason).then(|| {
            self.served.fetch_add(1, Ordering::Relaxed);
            &self.action
        })
    }

    /// The action for an upstream failure, counting it; `None` when not covered.
    pub fn for_upstream_error(&self) -> Option<&FallbackAction> {
        self.on_upstream_error.then(|| {
            self.served.fetch_add(1, Ordering::Relaxed);
            &self.action
        })
    }

    pub(crate) fn served_counter(&self) -> &Arc<AtomicU64> {
        &self.served
    }

    /// Fallbacks served so far.
    pub fn served_total(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

/// A route's manual on/off switch. Lock-free to read on every request.
#[derive(Debug, Default)]
pub struct RouteSwitch {
    disabled: AtomicBool,
}

impl RouteSwitch {
    /// Whether the route is switched off.
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// Switch the route off (it answers its fallback, or 503).
    pub fn disable(&self) {
        self.disabled.store(true, Ordering::Relaxed);
    }

    /// Switch it back on.
    pub fn enable(&self) {
        self.disabled.store(false, Ordering::Relaxed);
    }
}

/// The switches of every route, by route name. Keep ONE board for the life of the process
/// and hand each newly built route its switch with [`SwitchBoard::switch`]: a reload then
/// keeps every route's on/off state, because the switch object itself outlives the config.
#[derive(Debug, Default)]
pub struct SwitchBoard {
    switches: Mutex<BTreeMap<String, Arc<RouteSwitch>>>,
}

/// One route's switch state, for `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SwitchState {
    /// Route name.
    pub route: String,
    /// Whether it is switched off.
    pub disabled: bool,
}

impl SwitchBoard {
    /// An empty board.
    pub fn new() -> Arc<SwitchBoard> {
        Arc::new(SwitchBoard::default())
    }

    /// The switch of `route`, created enabled the first time.
    pub fn switch(&self, route: &str) -> Arc<RouteSwitch> {
        Arc::clone(self.switches.lock().entry(route.to_string()).or_default())
    }

    /// Disable `route` (admin command). Returns false if no such route was ever built.
    pub fn disable(&self, route: &str) -> bool {
        self.switches
            .lock()
            .get(route)
            .map(|s| s.disable())
            .is_some()
    }

    /// Enable `route`. Returns false if no such route was ever built.
    pub fn enable(&self, route: &str) -> bool {
        self.switches
            .lock()
            .get(route)
            .map(|s| s.enable())
            .is_some()
    }

    /// Forget switches of routes no longer configured (keep disabled ones if you want an
    /// operator's decision to survive a route being briefly removed).
    pub fn retain(&self, keep: impl Fn(&str, &RouteSwitch) -> bool) {
        self.switches.lock().retain(|k, v| keep(k, v));
    }

    /// Every switch, by route name.
    pub fn states(&self) -> Vec<SwitchState> {
        self.switches
            .lock()
            .iter()
            .map(|(k, v)| SwitchState {
                route: k.clone(),
                disabled: v.is_disabled(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_survives_a_rebuild() {
        let board = SwitchBoard::new();
        let old = board.switch("register");
        assert!(board.disable("register"));
        assert!(old.is_disabled());
        // A reload builds a new route and asks the same board.
        let new = board.switch("register");
        assert!(new.is_disabled());
        assert!(board.enable("register"));
        assert!(!new.is_disabled() && !old.is_disabled());
        assert!(!board.disable("nope"));
        assert_eq!(board.states().len(), 1);
    }

    #[test]
    fn fallback_covers_only_its_reasons() {
        let f = Fallback::new(
            FallbackAction::Pool("static".into()),
            &[RejectReason::BreakerOpen, RejectReason::Disabled],
            false,
        );
        assert!(f.for_reason(RejectReason::BreakerOpen).is_some());
        assert!(f.for_reason(RejectReason::RateLimited).is_none());
        assert!(f.for_upstream_error().is_none());
        assert_eq!(f.served_total(), 1);
    }
}
