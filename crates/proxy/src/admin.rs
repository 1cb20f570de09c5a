//! The proxy's admin endpoints (served by `hastack-admin` next to `/metrics`):
//!
//! * `GET /status`: listeners, pools, members with state, weights, in-flight, ejections,
//!   last probe.
//! * `GET /ready`: 200 when every listener is bound and every pool has a usable member,
//!   else 503 with the reasons (for a VIP tracker or an outer load balancer).
//! * `POST /admin/reload`: re-read the config file and swap it in (422 with every error
//!   when the new file is invalid; the running config stays).
//! * `POST /admin/members/{pool}/{member}/{drain|enable|disable}`.
//! * `POST /admin/routes/{route}/{disable|enable}`: switch a route off (it answers its
//!   fallback, or 503, at once) or back on. The state belongs to the route name and
//!   survives reloads. 404 for a route the current configuration does not have. Route
//!   names containing `/` (the default `host + path_prefix` names) are written with `%2F`.

use hastack_admin::{AdminHandler, AdminRequest, AdminResponse, HandlerFuture};
use hastack_core::health::Event;
use http::{Method, StatusCode};
use tokio::time::Instant;
use tracing::info;

use crate::{Proxy, ProxyError};

pub(crate) struct ProxyAdmin {
    proxy: Proxy,
}

impl ProxyAdmin {
    pub(crate) fn new(proxy: Proxy) -> Self {
        ProxyAdmin { proxy }
    }
}

impl AdminHandler for ProxyAdmin {
    fn describe(&self) -> &'static str {
        "GET /status, GET /ready, POST /admin/reload, POST /admin/members/{pool}/{member}/{drain|enable|disable}, POST /admin/routes/{route}/{disable|enable}"
    }

    fn handle(&self, req: &AdminRequest) -> Option<HandlerFuture> {
        let segs = req.segments();
        let proxy = self.proxy.clone();
        match (&req.method, segs.as_slice()) {
            (&Method::GET, ["status"]) => {
                let view = proxy.status();
                Some(Box::pin(async move {
                    AdminResponse::json(StatusCode::OK, &view)
                }))
            }
            (&Method::GET, ["ready"]) => Some(Box::pin(async move {
                match proxy.readiness() {
                    Ok(()) => AdminResponse::text(StatusCode::OK, "ready\n"),
                    Err(why) => AdminResponse::text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {}\n", why.join("; ")),
                    ),
                }
            })),
            (&Method::POST, ["admin", "reload"]) => Some(Box::pin(async move {
                match proxy.reload().await {
                    Ok(report) => AdminResponse::json(StatusCode::OK, &report),
                    Err(ProxyError::Config(d)) => AdminResponse::error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &format!("the new configuration is invalid; the running one stays:\n{d}"),
                    ),
                    Err(e @ ProxyError::NoConfigFile) => {
                        AdminResponse::error(StatusCode::CONFLICT, &e.to_string())
                    }
                    Err(e) => AdminResponse::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("reload failed; the running configuration stays: {e}"),
                    ),
                }
            })),
            (&Method::POST, ["admin", "members", pool, member, action]) => {
                let pool = percent_decode(pool);
                let member = percent_decode(member);
                let action = (*action).to_string();
                Some(Box::pin(async move {
                    member_command(&proxy, &pool, &member, &action)
                }))
            }
            (&Method::POST, ["admin", "routes", route, action]) => {
                let route = percent_decode(route);
                let action = (*action).to_string();
                Some(Box::pin(
                    async move { route_command(&proxy, &route, &action) },
                ))
            }
            (_, ["status" | "ready"]) | (_, ["admin", ..]) => {
                let m = req.method.clone();
                let p = req.path.clone();
                Some(Box::pin(async move {
                    AdminResponse::error(
                        StatusCode::METHOD_NOT_ALLOWED,
                        &format!(
                            "{m} is not allowed on {p}: use GET /status, GET /ready and POST /admin/..."
                        ),
                    )
                }))
            }
            _ => None,
        }
    }
}

fn member_command(proxy: &Proxy, pool: &str, member: &str, action: &str) -> AdminResponse {
    let ev = match action {
        "drain" => Event::Drain,
        "enable" => Event::Enable,
        "disable" => Event::Disable,
        other => {
            return AdminResponse::error(
                StatusCode::BAD_REQUEST,
                &format!("unknown action {other:?}: use drain, enable or disable"),
            );
        }
    };
    let Some(m) = proxy.member(pool, member) else {
        return AdminResponse::error(
            StatusCode::NOT_FOUND,
            &format!("no member {member:?} in pool {pool:?} (see GET /status)"),
        );
    };
    let now = Instant::now();
    m.report(now, ev);
    info!(pool, member, action, "operator command");
    AdminResponse::json(StatusCode::OK, &m.view(now))
}

fn route_command(proxy: &Proxy, route: &str, action: &str) -> AdminResponse {
    let disable = match action {
        "disable" => true,
        "enable" => false,
        other => {
            return AdminResponse::error(
                StatusCode::BAD_REQUEST,
                &format!("unknown action {other:?}: use disable or enable"),
            );
        }
    };
    match proxy.switch_route(route, disable) {
        Some(view) => AdminResponse::json(StatusCode::OK, &view),
        None => AdminResponse::error(
            StatusCode::NOT_FOUND,
            &format!("no route {route:?} in the running configuration (see GET /status)"),
        ),
    }
}

/// Decode `%XX` escapes (member names are often `host:port`, which clients may escape).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_escapes_and_keeps_the_rest() {
        assert_eq!(percent_decode("127.0.0.1%3A9001"), "127.0.0.1:9001");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%41%"), "A%");
    }
}
