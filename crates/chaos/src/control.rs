//! The run-time control API (served by `hastack-admin`): fault proxies can be hurt and
//! healed by hand, and components can push events.
//!
//! | request | effect |
//! |---|---|
//! | `GET /status` | every fault proxy: address, upstream, active faults, counters |
//! | `POST /admin/proxies/<name>/faults` body `{"kind":"latency","delay":"200ms",...}` | apply a fault (replaces one of the same kind); optional `"duration":"5s"` clears it after that |
//! | `POST /admin/proxies/<name>/clear` body empty or `{"kind":"latency"}` | clear one kind, or all |
//! | `POST /events` body `{"kind":"detected","subject":"app1","source":"proxy","detail":""}` | record a component event (when a run is going) |

use std::collections::BTreeMap;
use std::sync::Arc;

use hastack_admin::{AdminHandler, AdminRequest, AdminResponse, HandlerFuture};
use hastack_config::Dur;
use http::{Method, StatusCode};
use serde::Deserialize;

use crate::events::EventSink;
use crate::fault::proxy::{FaultProxyHandle, ProxyFault};
use crate::fault::{FaultKind, TargetKind};
use crate::report::EventKind;

/// The control API's handler.
#[derive(Debug, Clone)]
pub struct Control {
    proxies: Arc<BTreeMap<String, FaultProxyHandle>>,
    events: Option<EventSink>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearRequest {
    kind: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventRequest {
    kind: EventKind,
    subject: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    detail: String,
}

impl Control {
    /// A handler for these proxies; `events` receives pushed events.
    pub fn new(proxies: Vec<FaultProxyHandle>, events: Option<EventSink>) -> Self {
        Control {
            proxies: Arc::new(
                proxies
                    .into_iter()
                    .map(|p| (p.name().to_string(), p))
                    .collect(),
            ),
            events,
        }
    }

    fn answer(&self, req: &AdminRequest) -> Option<AdminResponse> {
        let segs = req.segments();
        Some(match (&req.method, segs.as_slice()) {
            (&Method::GET, ["status"]) => {
                let v: BTreeMap<&str, _> = self
                    .proxies
                    .iter()
                    .map(|(n, p)| (n.as_str(), p.status()))
                    .collect();
                AdminResponse::json(StatusCode::OK, &serde_json::json!({ "proxies": v }))
            }
            (&Method::POST, ["admin", "proxies", name, action]) => {
                let Some(p) = self.proxies.get(*name) else {
                    let known: Vec<&str> = self.proxies.keys().map(String::as_str).collect();
                    return Some(AdminResponse::error(
                        StatusCode::NOT_FOUND,
                        &format!("no fault proxy `{name}`; known: {}", known.join(", ")),
                    ));
                };
                match *action {
                    "faults" => self.apply(p, &req.body),
                    "clear" => Self::clear(p, &req.body),
                    _ => return None,
                }
            }
            (&Method::POST, ["events"]) => {
                let Some(sink) = &self.events else {
                    return Some(AdminResponse::error(
                        StatusCode::CONFLICT,
                        "no run is recording events (this control API belongs to a standalone fault proxy)",
                    ));
                };
                match serde_json::from_slice::<EventRequest>(&req.body) {
                    Ok(e) => {
                        sink.emit(
                            e.source.as_deref().unwrap_or("push"),
                            e.kind,
                            &e.subject,
                            &e.detail,
                        );
                        AdminResponse::json(StatusCode::OK, &serde_json::json!({"recorded": true}))
                    }
                    Err(e) => AdminResponse::error(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "bad event: {e}; expected {{\"kind\":\"detected\"|\"repaired\"|\"info\",\"subject\":\"...\",\"source\":\"...\",\"detail\":\"...\"}}"
                        ),
                    ),
                }
            }
            _ => return None,
        })
    }

    fn apply(&self, p: &FaultProxyHandle, body: &[u8]) -> AdminResponse {
        let parsed = serde_json::from_slice::<serde_json::Value>(body)
            .map_err(|e| e.to_string())
            .and_then(|mut v| {
                // `duration` belongs to the request, the rest is the fault.
                let duration = match v.as_object_mut().and_then(|o| o.remove("duration")) {
                    Some(d) => Some(serde_json::from_value::<Dur>(d).map_err(|e| e.to_string())?),
                    None => None,
                };
                let fault = serde_json::from_value::<ProxyFault>(v).map_err(|e| e.to_string())?;
                Ok((fault, duration))
            });
        let (fault, duration) = match parsed {
            Ok(r) => r,
            Err(e) => {
                return AdminResponse::error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "bad fault: {e}; expected e.g. {{\"kind\":\"latency\",\"delay\":\"200ms\",\"jitter\":\"20ms\",\"direction\":\"both\",\"duration\":\"5s\"}}; kinds: {}",
                        ProxyFault::kinds()
                    ),
                );
            }
        };
        let kind = fault.kind();
        if let Err(e) = p.apply(fault.clone()) {
            return AdminResponse::error(StatusCode::BAD_REQUEST, &e);
        }
        if let Some(d) = duration {
            let p = p.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d.0).await;
                // Clear only if it is still the fault we set (not replaced meanwhile).
                if p.active().contains(&fault) {
                    p.clear(kind);
                }
            });
        }
        AdminResponse::json(StatusCode::OK, &p.status())
    }

    fn clear(p: &FaultProxyHandle, body: &[u8]) -> AdminResponse {
        if body.iter().all(u8::is_ascii_whitespace) {
            p.clear_all();
            return AdminResponse::json(StatusCode::OK, &p.status());
        }
        match serde_json::from_slice::<ClearRequest>(body) {
            Ok(c) => match FaultKind::from_name(&c.kind)
                .filter(|k| k.target() == TargetKind::FaultProxy)
            {
                Some(kind) => {
                    p.clear(kind);
                    AdminResponse::json(StatusCode::OK, &p.status())
                }
                None => AdminResponse::error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "unknown fault kind `{}`; kinds: {}",
                        c.kind,
                        ProxyFault::kinds()
                    ),
                ),
            },
            Err(e) => AdminResponse::error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "bad clear request: {e}; send an empty body to clear all, or {{\"kind\":\"latency\"}}"
                ),
            ),
        }
    }
}

impl AdminHandler for Control {
    fn handle(&self, req: &AdminRequest) -> Option<HandlerFuture> {
        let resp = self.answer(req)?;
        Some(Box::pin(async move { resp }))
    }

    fn describe(&self) -> &'static str {
        "GET /status, POST /admin/proxies/<name>/faults, POST /admin/proxies/<name>/clear, POST /events"
    }
}

/// A metrics registry for a run or a standalone proxy.
pub fn new_registry() -> hastack_admin::SharedRegistry {
    Arc::new(parking_lot::Mutex::new(
        prometheus_client::registry::Registry::default(),
    ))
}

/// Run one fault proxy with a control API (`hastack chaos fault-proxy`) until `shutdown`.
/// `faults` are applied at start. Returns the bound addresses through `ready` once
/// listening (proxy, control).
pub async fn standalone(
    cfg: crate::fault::proxy::FaultProxyConfig,
    control: Option<std::net::SocketAddr>,
    faults: Vec<ProxyFault>,
    shutdown: tokio_util::sync::CancellationToken,
    ready: impl FnOnce(std::net::SocketAddr, Option<std::net::SocketAddr>),
) -> Result<(), crate::ChaosError> {
    let proxy = crate::fault::proxy::FaultProxy::start(cfg).await?;
    let handle = proxy.handle();
    for f in faults {
        handle
            .apply(f.clone())
            .map_err(|reason| crate::ChaosError::BadTarget {
                fault: f.kind().to_string(),
                target: handle.name().to_string(),
                reason,
            })?;
    }
    let registry = new_registry();
    handle.register_metrics(&mut registry.lock());
    let mut control_addr = None;
    if let Some(addr) = control {
        let listener =
            hastack_admin::bind(addr)
                .await
                .map_err(|source| crate::ChaosError::Bind {
                    addr,
                    what: "the fault proxy's control API".to_string(),
                    source,
                })?;
        control_addr = listener.local_addr().ok();
        tokio::spawn(hastack_admin::serve(
            listener,
            Arc::new(Control::new(vec![handle.clone()], None)),
            registry,
            shutdown.clone(),
        ));
    }
    ready(handle.listen_addr(), control_addr);
    shutdown.cancelled().await;
    proxy.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, path: &str, body: &str) -> AdminRequest {
        AdminRequest {
            method,
            path: path.to_string(),
            query: None,
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    #[tokio::test]
    async fn pushed_events_reach_the_run() {
        let sink = EventSink::new(tokio::time::Instant::now());
        let c = Control::new(vec![], Some(sink.clone()));
        let r = c
            .answer(&req(
                Method::POST,
                "/events",
                r#"{"kind":"detected","subject":"app1","source":"proxy","detail":"3 failed checks"}"#,
            ))
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        let (events, _) = sink.snapshot();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Detected);
        assert_eq!(events[0].source, "proxy");
        let r = c
            .answer(&req(
                Method::POST,
                "/events",
                r#"{"kind":"exploded","subject":"x"}"#,
            ))
            .unwrap();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&r.body).contains("detected"));
        assert!(c.answer(&req(Method::GET, "/nothing", "")).is_none());
    }
}
