//! The event feed: how components tell the harness what they noticed, so that each fault's
//! recovery can be split into **detection** (fault -> a component reports the member
//! down) and **repair** (detection -> clients served again).
//!
//! Three ways in, all ending in one [`EventSink`] stamped with the harness's clock:
//!
//! * **push**: `POST /events` on the run's control API (see [`crate::control`]) with
//!   `{"kind":"detected","subject":"app1","source":"proxy","detail":"..."}`
//!   (`kind` is `detected`, `repaired` or `info`). Any component or script can send it.
//! * **HAProxy stats CSV** ([`EventSourceSpec::Haproxy`]): the harness polls
//!   `.../stats;csv` and turns each server's status change into events: into `DOWN`/`MAINT`
//!   = `detected`, back to `UP` = `repaired`; subject `<backend>/<server>`.
//! * **JSON status scrape** ([`EventSourceSpec::Json`]): the harness polls a component's
//!   `GET /status` and reads an array of members at a JSON pointer, with a name field and a
//!   state field; a state listed in `down_states` means down. This is how `hastack proxy`'s
//!   `/status` plugs in without the harness knowing its types.
//!
//! Events are timestamped when the harness receives them, so detection includes up to one
//! poll interval of scrape delay: keep intervals short (100 ms default).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::report::{ComponentEvent, EventKind};

/// Most events kept per run (a flapping component must not grow memory without bound).
pub const MAX_EVENTS: usize = 100_000;

/// Where events go.
#[derive(Debug, Clone)]
pub struct EventSink {
    start: Instant,
    events: Arc<Mutex<Vec<ComponentEvent>>>,
    dropped: Arc<Mutex<u64>>,
}

impl EventSink {
    /// A sink whose timestamps count from `start` (the start of the load).
    pub fn new(start: Instant) -> Self {
        EventSink {
            start,
            events: Arc::new(Mutex::new(Vec::new())),
            dropped: Arc::new(Mutex::new(0)),
        }
    }

    /// Record an event now. Events before the start of the load are ignored (start-up
    /// noise such as members coming up).
    pub fn emit(&self, source: &str, kind: EventKind, subject: &str, detail: &str) {
        self.emit_late(source, kind, subject, detail, Duration::ZERO);
    }

    /// Record an event seen now that may have happened up to `uncertainty` earlier (a
    /// polled source).
    pub fn emit_late(
        &self,
        source: &str,
        kind: EventKind,
        subject: &str,
        detail: &str,
        uncertainty: Duration,
    ) {
        let now = Instant::now();
        if now < self.start {
            return;
        }
        info!(source, ?kind, subject, detail, "component event");
        let mut ev = self.events.lock();
        if ev.len() >= MAX_EVENTS {
            *self.dropped.lock() += 1;
            return;
        }
        ev.push(ComponentEvent {
            at: now - self.start,
            source: source.to_string(),
            kind,
            subject: subject.to_string(),
            detail: detail.to_string(),
            uncertainty_s: uncertainty.as_secs_f64(),
        });
    }

    /// Every event so far, in arrival order, and how many were dropped over the cap.
    pub fn snapshot(&self) -> (Vec<ComponentEvent>, u64) {
        (self.events.lock().clone(), *self.dropped.lock())
    }
}

/// An event source the harness polls.
#[derive(Debug, Clone, PartialEq)]
pub enum EventSourceSpec {
    /// HAProxy's stats page in CSV (`http://host:port/stats;csv`).
    Haproxy {
        /// Source name in events.
        source: String,
        /// The CSV URL.
        url: String,
        /// Poll interval.
        interval: Duration,
        /// Namespace mode: the host it is polled from (`None` = the client namespace, or the
        /// harness's own namespace without a topology).
        host: Option<String>,
    },
    /// A JSON status endpoint.
    Json {
        /// Source name in events.
        source: String,
        /// The URL.
        url: String,
        /// Poll interval.
        interval: Duration,
        /// JSON pointer to the array of members, e.g. `/pools/app/members`.
        members: String,
        /// Field holding a member's name.
        name_field: String,
        /// Field holding a member's state.
        state_field: String,
        /// States that mean down.
        down_states: Vec<String>,
        /// Namespace mode: the host it is polled from (see the HAProxy variant).
        host: Option<String>,
    },
}

impl EventSourceSpec {
    /// The namespace host it is polled from, if any.
    pub fn host(&self) -> Option<&str> {
        match self {
            EventSourceSpec::Haproxy { host, .. } | EventSourceSpec::Json { host, .. } => {
                host.as_deref()
            }
        }
    }
}

/// A member name and whether it is down, as one poll saw it.
pub type MemberStates = BTreeMap<String, bool>;

/// Parse HAProxy's stats CSV into server states (`backend/server` -> down?). Rows for
/// FRONTEND and BACKEND aggregates are skipped. Unknown layouts give an error naming what
/// is missing.
pub fn parse_haproxy_csv(text: &str) -> Result<MemberStates, String> {
    let mut lines = text.lines();
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or("not HAProxy stats CSV: the first line must start with \"# pxname\"")?;
    let cols: Vec<&str> = header.split(',').collect();
    let find = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or(format!("HAProxy stats CSV has no `{name}` column"))
    };
    let (px, sv, st) = (find("pxname")?, find("svname")?, find("status")?);
    let mut out = MemberStates::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(p), Some(s), Some(status)) = (f.get(px), f.get(sv), f.get(st)) else {
            continue;
        };
        if *s == "FRONTEND" || *s == "BACKEND" || s.is_empty() {
            continue;
        }
        let down = status.starts_with("DOWN") || status.starts_with("MAINT");
        out.insert(format!("{p}/{s}"), down);
    }
    Ok(out)
}

/// Read member states from a JSON document.
pub fn parse_json_members(
    text: &str,
    members: &str,
    name_field: &str,
    state_field: &str,
    down_states: &[String],
) -> Result<MemberStates, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("status is not JSON: {e}"))?;
    let arr = v
        .pointer(members)
        .and_then(serde_json::Value::as_array)
        .ok_or(format!("no array at JSON pointer {members}"))?;
    let mut out = MemberStates::new();
    for m in arr {
        let name = match m.get(name_field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => continue,
        };
        let state = m
            .get(state_field)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        out.insert(name, down_states.iter().any(|d| d == state));
    }
    Ok(out)
}

/// Turn two consecutive polls into events (first poll: no events, it is the baseline).
pub fn diff_states(prev: &MemberStates, now: &MemberStates) -> Vec<(EventKind, String)> {
    let mut out = Vec::new();
    for (name, &down) in now {
        match prev.get(name) {
            Some(&was) if was != down => out.push((
                if down {
                    EventKind::Detected
                } else {
                    EventKind::Repaired
                },
                name.clone(),
            )),
            _ => {}
        }
    }
    out
}

/// Poll `spec` until `cancel`, emitting into `sink`.
pub async fn run_source(spec: EventSourceSpec, sink: EventSink, cancel: CancellationToken) {
    let (source, url, interval) = match &spec {
        EventSourceSpec::Haproxy {
            source,
            url,
            interval,
            ..
        }
        | EventSourceSpec::Json {
            source,
            url,
            interval,
            ..
        } => (source.clone(), url.clone(), *interval),
    };
    let mut prev: Option<MemberStates> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let polled = Instant::now();
        let got = http_get(&url, interval.max(Duration::from_millis(500))).await;
        // The change happened after the previous poll: at most one interval plus this
        // request's time before now.
        let uncertainty = interval + polled.elapsed();
        let parsed = match got {
            Ok((status, body)) if status.is_success() => {
                let text = String::from_utf8_lossy(&body);
                match &spec {
                    EventSourceSpec::Haproxy { .. } => parse_haproxy_csv(&text),
                    EventSourceSpec::Json {
                        members,
                        name_field,
                        state_field,
                        down_states,
                        ..
                    } => parse_json_members(&text, members, name_field, state_field, down_states),
                }
            }
            Ok((status, _)) => Err(format!("status {status}")),
            Err(e) => Err(e),
        };
        match parsed {
            Ok(now) => {
                if let Some(p) = &prev {
                    for (kind, name) in diff_states(p, &now) {
                        sink.emit_late(&source, kind, &name, "status poll", uncertainty);
                    }
                }
                prev = Some(now);
            }
            Err(e) => debug!(%source, %url, error = %e, "event source poll failed"),
        }
    }
}

/// Largest body read by [`http_get`].
pub const MAX_GET: usize = 4 * 1024 * 1024;

/// GET an `http://` URL with a timeout: status and body (at most [`MAX_GET`] bytes).
pub async fn http_get(url: &str, timeout: Duration) -> Result<(StatusCode, Bytes), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let fut = async {
        let resp = client
            .get(uri)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_GET)
            .collect()
            .await
            .map_err(|e| format!("reading {url}: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| {
        format!(
            "GET {url}: no answer within {}",
            humantime::format_duration(timeout)
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight\n\
web,FRONTEND,,,0,1,,1,0,0,0,0,0,,,,,OPEN,\n\
app,app1,0,0,0,1,,1,0,0,,0,,0,0,0,0,UP,1\n\
app,app2,0,0,0,1,,1,0,0,,0,,0,0,0,0,DOWN,1\n\
app,app3,0,0,0,1,,1,0,0,,0,,0,0,0,0,UP 1/2,1\n\
app,BACKEND,0,0,0,1,,1,0,0,0,0,,0,0,0,0,UP,2\n";

    #[test]
    fn haproxy_csv_states() {
        let s = parse_haproxy_csv(CSV).unwrap();
        assert_eq!(s.len(), 3);
        assert!(!s["app/app1"]);
        assert!(s["app/app2"]);
        // "UP 1/2" is up and going down: not yet detected.
        assert!(!s["app/app3"]);
        assert!(parse_haproxy_csv("hello").is_err());
        assert!(
            parse_haproxy_csv("# pxname,svname\n")
                .unwrap_err()
                .contains("status")
        );
    }

    #[test]
    fn json_states_and_diff() {
        let doc = r#"{"pools":{"app":{"members":[{"addr":"a","state":"healthy"},{"addr":"b","state":"ejected"}]}}}"#;
        let down = vec!["ejected".to_string(), "down".to_string()];
        let s = parse_json_members(doc, "/pools/app/members", "addr", "state", &down).unwrap();
        assert!(!s["a"] && s["b"]);
        let mut next = s.clone();
        next.insert("a".into(), true);
        next.insert("b".into(), false);
        let d = diff_states(&s, &next);
        assert_eq!(
            d,
            vec![
                (EventKind::Detected, "a".to_string()),
                (EventKind::Repaired, "b".to_string())
            ]
        );
        assert!(diff_states(&MemberStates::new(), &next).is_empty());
        assert!(parse_json_members("[]", "/x", "a", "b", &down).is_err());
    }

    proptest::proptest! {
        /// Status pages are network bytes: arbitrary input never panics.
        #[test]
        fn arbitrary_status_text_never_panics(text in ".{0,400}", ptr in "(/[a-z]{0,5}){0,3}") {
            let _ = parse_haproxy_csv(&text);
            let _ = parse_haproxy_csv(&format!("# pxname,svname,status\n{text}"));
            let _ = parse_json_members(&text, &ptr, "name", "state", &["down".to_string()]);
        }
    }
}
