//! The `health` table of a pool, as written in the config file, and its validation.
//!
//! ```toml
//! [proxy.pools.app.health]
//! type = "http"            # "http" (default) or "tcp"
//! path = "/health"         # http only; default "/"
//! method = "GET"           # http only; default GET
//! host = "app.internal"    # http only; default the member's ip:port
//! expect_status = "200-399" # http only; "200", "200-299", 204, or a list of those
//! body_contains = "ok"     # http only; searched in the first 64KiB of the body
//! interval = "2s"          # between probes of a healthy member
//! fast_interval = "500ms"  # while a member changes state; default interval/4 (>= 100ms)
//! down_interval = "2s"     # between probes of a dead member; default = interval
//! timeout = "1s"           # per probe; default min(1s, interval); must be <= interval
//! jitter = 0.1             # +-10% on every wait (0..=0.5, or "10%")
//! rise = 2                 # consecutive passes that bring a member back
//! fall = 3                 # consecutive failures that take it down
//! ```

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use hastack_config::{Diagnostics, Dur, KeyPath, Source};
use http::Method;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::check::{Check, HttpCheck, MAX_BODY, human};
use crate::schedule::{MAX_INTERVAL, MAX_JITTER, MIN_INTERVAL, Schedule};

/// Default `interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default (and largest default) `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Floor of the default `fast_interval` (interval / 4).
pub const MIN_DEFAULT_FAST_INTERVAL: Duration = Duration::from_millis(100);
/// Default `jitter`.
pub const DEFAULT_JITTER: f64 = 0.1;
/// Default `rise`.
pub const DEFAULT_RISE: u32 = 2;
/// Default `fall`.
pub const DEFAULT_FALL: u32 = 3;

/// `type = "http" | "tcp"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// An HTTP/1.1 request.
    #[default]
    Http,
    /// A TCP connect.
    Tcp,
}

/// `expect_status`: `"200"`, `200`, `"200-299"`, or a list of those, kept as written
/// (as `(low, high)` pairs) until validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSpec(pub Vec<(i64, i64)>);

impl fmt::Display for StatusSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

fn parse_status_text(s: &str) -> Result<(i64, i64), String> {
    let bad = || {
        format!(
            "invalid status {s:?}: write a code like \"200\", a range like \"200-399\", or a list of them"
        )
    };
    let num = |t: &str| t.trim().parse::<i64>().map_err(|_| bad());
    match s.split_once('-') {
        Some((lo, hi)) => Ok((num(lo)?, num(hi)?)),
        None => {
            let n = num(s)?;
            Ok((n, n))
        }
    }
}

impl<'de> Deserialize<'de> for StatusSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StatusSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status like 200 or \"200-399\", or a list of them")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<StatusSpec, E> {
                Ok(StatusSpec(vec![(n, n)]))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<StatusSpec, E> {
                let n = i64::try_from(n).unwrap_or(i64::MAX);
                Ok(StatusSpec(vec![(n, n)]))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<StatusSpec, E> {
                parse_status_text(s)
                    .map(|r| StatusSpec(vec![r]))
                    .map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StatusSpec, A::Error> {
                let mut out = Vec::new();
                while let Some(one) = seq.next_element::<StatusSpec>()? {
                    out.extend(one.0);
                }
                if out.is_empty() {
                    return Err(de::Error::custom(
                        "expect_status is an empty list: give at least one status, like \"200-399\"",
                    ));
                }
                Ok(StatusSpec(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A fraction: `0.1`, `0`, or `"10%"`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Fraction;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a fraction like 0.1 or a percentage like \"10%\"")
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> Result<Fraction, E> {
                Ok(Fraction(x))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Fraction, E> {
                Ok(Fraction(n as f64))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Fraction, E> {
                Ok(Fraction(n as f64))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Fraction, E> {
                s.trim()
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<f64>().ok())
                    .map(|p| Fraction(p / 100.0))
                    .ok_or_else(|| {
                        E::custom(format!(
                            "invalid fraction {s:?}: write a number like 0.1 or a percentage like \"10%\""
                        ))
                    })
            }
        }
        d.deserialize_any(V)
    }
}

/// The `health` table of a pool (see the module docs for every key and its default).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// `"http"` (default) or `"tcp"`.
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// HTTP path and query; default `/`.
    pub path: Option<String>,
    /// HTTP method; default `GET`.
    pub method: Option<String>,
    /// HTTP `Host` header; default the member's address.
    pub host: Option<String>,
    /// Healthy statuses; default `200-399`.
    pub expect_status: Option<StatusSpec>,
    /// Text the body must contain.
    pub body_contains: Option<String>,
    /// Between probes of a healthy member; default 2s.
    pub interval: Option<Dur>,
    /// While a member changes state; default interval / 4, at least 100ms.
    pub fast_interval: Option<Dur>,
    /// Between probes of a dead member; default = interval.
    pub down_interval: Option<Dur>,
    /// Per-probe bound; default min(1s, interval).
    pub timeout: Option<Dur>,
    /// Jitter fraction; default 0.1.
    pub jitter: Option<Fraction>,
    /// Passes to come back; default 2.
    pub rise: Option<u32>,
    /// Failures to go down; default 3.
    pub fall: Option<u32>,
}

/// A validated `health` table: what the prober and the health machine need.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedHealth {
    /// What to probe.
    pub check: Check,
    /// When to probe.
    pub schedule: Schedule,
    /// Consecutive passes that bring a member back.
    pub rise: u32,
    /// Consecutive failures that take a member down.
    pub fall: u32,
}

impl ValidatedHealth {
    /// `policy` with this table's `rise`/`fall` and active checks on.
    pub fn apply(&self, policy: hastack_core::HealthPolicy) -> hastack_core::HealthPolicy {
        hastack_core::HealthPolicy {
            rise: self.rise,
            fall: self.fall,
            active_checks: true,
            ..policy
        }
    }
}

/// The standard methods, which are accepted in any case (`get` means `GET`).
const STANDARD_METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
];

impl HealthCheckConfig {
    /// Check every key and build the runtime pieces. `at` is the path of this table (e.g.
    /// `proxy.pools.app.health`); every problem is reported to `diags`, located at its key.
    /// Returns `None` when there was any error.
    pub fn validate(
        &self,
        src: &Source,
        at: &KeyPath,
        diags: &mut Diagnostics,
    ) -> Option<ValidatedHealth> {
        let errors_before = diags.error_count();
        let mut error = |key: &str, msg: String| diags.error(src, &at.key(key), msg);

        // Timing.
        let interval = self.interval.map_or(DEFAULT_INTERVAL, Duration::from);
        let min_ok = |key: &str, d: Duration, error: &mut dyn FnMut(&str, String)| {
            if d < MIN_INTERVAL {
                error(
                    key,
                    format!(
                        "{key} ({}) is too short: it must be at least {}",
                        human(d),
                        human(MIN_INTERVAL)
                    ),
                );
            } else if d > MAX_INTERVAL {
                error(
                    key,
                    format!(
                        "{key} ({}) is too long: it must be at most {}",
                        human(d),
                        human(MAX_INTERVAL)
                    ),
                );
            }
        };
        min_ok("interval", interval, &mut error);
        let fast_interval = match self.fast_interval {
            Some(d) => {
                min_ok("fast_interval", d.0, &mut error);
                d.0
            }
            None => (interval / 4).max(MIN_DEFAULT_FAST_INTERVAL.min(interval)),
        };
        let down_interval = match self.down_interval {
            Some(d) => {
                min_ok("down_interval", d.0, &mut error);
                d.0
            }
            None => interval,
        };
        let timeout = match self.timeout {
            Some(d) => {
                if d.0.is_zero() {
                    error(
                        "timeout",
                        "timeout (0s) must be positive: how long one probe may take, like \"1s\""
                            .to_string(),
                    );
                } else if d.0 > interval {
                    error(
                        "timeout",
                        format!(
                            "timeout ({}) must not exceed interval ({})",
                            human(d.0),
                            human(interval)
                        ),
                    );
                }
                d.0
            }
            None => DEFAULT_TIMEOUT.min(interval),
        };
        let jitter = self.jitter.map_or(DEFAULT_JITTER, |j| j.0);
        if !(0.0..=MAX_JITTER).contains(&jitter) {
            error(
                "jitter",
                format!(
                    "jitter ({jitter}) must be between 0 and {MAX_JITTER}: a fraction of each interval, like 0.1 for +-10%"
                ),
            );
        }
        let rise = self.rise.unwrap_or(DEFAULT_RISE);
        let fall = self.fall.unwrap_or(DEFAULT_FALL);
        for (key, n) in [("rise", rise), ("fall", fall)] {
            if n == 0 {
                error(
                    key,
                    format!(
                        "{key} must be at least 1 (consecutive probes that change a member's state)"
                    ),
                );
            }
        }

        let check = match self.kind {
            CheckKind::Tcp => {
                for (key, set) in [
                    ("path", self.path.is_some()),
                    ("method", self.method.is_some()),
                    ("host", self.host.is_some()),
                    ("expect_status", self.expect_status.is_some()),
                    ("body_contains", self.body_contains.is_some()),
                ] {
                    if set {
                        error(
                            key,
                            format!(
                                "{key} only applies to HTTP checks: remove it, or set type = \"http\""
                            ),
                        );
                    }
                }
                Check::Tcp
            }
            CheckKind::Http => Check::Http(self.http_check(&mut error)),
        };

        if diags.error_count() > errors_before {
            return None;
        }
        if fast_interval > interval {
            diags.warning(
                src,
                &at.key("fast_interval"),
                format!(
                    "fast_interval ({}) is longer than interval ({}): probing slows down while a member changes state",
                    human(fast_interval),
                    human(interval)
                ),
            );
        }
        Some(ValidatedHealth {
            check,
            schedule: Schedule {
                interval,
                fast_interval,
                down_interval,
                timeout,
                jitter,
            },
            rise,
            fall,
        })
    }

    fn http_check(&self, error: &mut dyn FnMut(&str, String)) -> HttpCheck {
        let path = self.path.clone().unwrap_or_else(|| "/".to_string());
        if !path.starts_with('/') {
            error(
                "path",
                format!("path {path:?} must start with \"/\", like \"/health\""),
            );
        } else if path.parse::<http::uri::PathAndQuery>().is_err() {
            error(
                "path",
                format!(
                    "path {path:?} is not a valid URL path (no spaces or control characters; percent-encode them)"
                ),
            );
        }

        let method = match self.method.as_deref() {
            None => Method::GET,
            Some(m) => {
                let upper = m.to_ascii_uppercase();
                let text = if STANDARD_METHODS.contains(&upper.as_str()) {
                    upper.as_str()
                } else {
                    m
                };
                match Method::from_bytes(text.as_bytes()) {
                    Ok(Method::CONNECT) => {
                        error(
                            "method",
                            "method CONNECT cannot be used for a health check: use GET or HEAD"
                                .to_string(),
                        );
                        Method::GET
                    }
                    Ok(method) => method,
                    Err(_) => {
                        error(
                            "method",
                            format!(
                                "method {m:?} is not a valid HTTP method: use GET, HEAD, OPTIONS or another method token"
                            ),
                        );
                        Method::GET
                    }
                }
            }
        };

        if let Some(host) = &self.host {
            let valid = !host.is_empty()
                && host.parse::<http::uri::Authority>().is_ok()
                && http::HeaderValue::from_str(host).is_ok();
            if !valid {
                error(
                    "host",
                    format!(
                        "host {host:?} is not a valid host name: write it like \"app.example.com\" or \"app.example.com:8080\""
                    ),
                );
            }
        }

        let expect_status = match &self.expect_status {
            None => 200..=399,
            Some(spec) => status_range(spec).unwrap_or_else(|msg| {
                error("expect_status", msg);
                200..=399
            }),
        };

        if let Some(needle) = &self.body_contains {
            if needle.is_empty() {
                error(
                    "body_contains",
                    "body_contains is empty: remove it, or give the text the body must contain"
                        .to_string(),
                );
            } else if needle.len() > MAX_BODY {
                error(
                    "body_contains",
                    format!(
                        "body_contains is {} bytes long, but only the first 64KiB of a body are read",
                        needle.len()
                    ),
                );
            }
            if method == Method::HEAD {
                error(
                    "body_contains",
                    "body_contains cannot be checked with method HEAD: a HEAD response has no body; use GET"
                        .to_string(),
                );
            }
        }

        HttpCheck {
            method,
            path,
            host: self.host.clone(),
            expect_status,
            body_contains: self.body_contains.clone(),
        }
    }
}

/// The one contiguous range a [`StatusSpec`] covers, or why it is not one.
fn status_range(spec: &StatusSpec) -> Result<RangeInclusive<u16>, String> {
    let mut ranges = Vec::with_capacity(spec.0.len());
    for &(lo, hi) in &spec.0 {
        for n in [lo, hi] {
            if !(100..=599).contains(&n) {
                return Err(format!(
                    "status {n} is not an HTTP status: statuses run from 100 to 599"
                ));
            }
        }
        if lo > hi {
            return Err(format!(
                "status range {lo}-{hi} is backwards: write the lower status first, like \"{hi}-{lo}\""
            ));
        }
        ranges.push((lo, hi));
    }
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    match merged.as_slice() {
        [(lo, hi)] => {
            let lo = u16::try_from(*lo).unwrap_or(100);
            let hi = u16::try_from(*hi).unwrap_or(599);
            Ok(lo..=hi)
        }
        _ => Err(format!(
            "expect_status [{spec}] leaves gaps: a health check accepts one contiguous range of statuses, like \"200-399\" (list entries must touch or overlap)"
        )),
    }
}

// For callers that want to show or reuse what a spec covers.
impl StatusSpec {
    /// The contiguous range this spec covers, if it is one.
    pub fn range(&self) -> Option<RangeInclusive<u16>> {
        status_range(self).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse and validate a file with a `[health]` table; type errors and semantic errors
    /// both come back as `Err`.
    fn validate(text: &str) -> Result<(ValidatedHealth, Diagnostics), Diagnostics> {
        let src = Source::parse("t.toml", text.to_string()).unwrap();
        let cfg = src
            .section::<HealthCheckConfig>("health")?
            .unwrap_or_default();
        let mut diags = Diagnostics::new();
        match cfg.validate(&src, &KeyPath::of(&["health"]), &mut diags) {
            Some(v) => {
                assert!(!diags.has_errors());
                Ok((v, diags))
            }
            None => {
                assert!(diags.has_errors(), "None without an error");
                Err(diags)
            }
        }
    }

    #[test]
    fn defaults() {
        let (v, warnings) = validate("[health]\n").unwrap();
        assert!(warnings.is_empty());
        assert_eq!(v.check, Check::Http(HttpCheck::default()));
        assert_eq!(v.schedule, Schedule::default());
        assert_eq!((v.rise, v.fall), (2, 3));
        let p = v.apply(hastack_core::HealthPolicy::default());
        assert_eq!((p.rise, p.fall, p.active_checks), (2, 3, true));
    }

    #[test]
    fn everything_set() {
        let (v, _) = validate(
            r#"
[health]
type = "http"
path = "/health?deep=1"
method = "head"
host = "app.internal:8080"
expect_status = ["200-204", 205, "206"]
interval = "5s"
fast_interval = "1s"
down_interval = "10s"
timeout = "5s"
jitter = "20%"
rise = 1
fall = 5
"#,
        )
        .unwrap();
        assert_eq!(
            v.check,
            Check::Http(HttpCheck {
                method: Method::HEAD,
                path: "/health?deep=1".into(),
                host: Some("app.internal:8080".into()),
                expect_status: 200..=206,
                body_contains: None,
            })
        );
        assert_eq!(
            v.schedule,
            Schedule {
                interval: Duration::from_secs(5),
                fast_interval: Duration::from_secs(1),
                down_interval: Duration::from_secs(10),
                timeout: Duration::from_secs(5),
                jitter: 0.2,
            }
        );
        assert_eq!((v.rise, v.fall), (1, 5));
    }

    #[test]
    fn derived_defaults_follow_interval() {
        let (v, _) = validate("[health]\ntype = \"tcp\"\ninterval = \"200ms\"\n").unwrap();
        assert_eq!(v.check, Check::Tcp);
        assert_eq!(v.schedule.fast_interval, Duration::from_millis(100));
        assert_eq!(v.schedule.down_interval, Duration::from_millis(200));
        assert_eq!(v.schedule.timeout, Duration::from_millis(200));
        let (v, _) = validate("[health]\ninterval = \"50ms\"\n").unwrap();
        assert_eq!(v.schedule.fast_interval, Duration::from_millis(50));
        let (v, _) = validate("[health]\ninterval = \"10s\"\njitter = 0\n").unwrap();
        assert_eq!(v.schedule.fast_interval, Duration::from_millis(2500));
        assert_eq!(v.schedule.jitter, 0.0);
    }

    #[test]
    fn timeout_longer_than_interval_is_located() {
        let err = validate("[health]\ninterval = \"1s\"\ntimeout = \"2s\"\n").unwrap_err();
        let d = &err.items()[0];
        assert_eq!(d.line, Some(3), "{err}");
        assert!(
            d.message
                .contains("timeout (2s) must not exceed interval (1s)"),
            "{err}"
        );
        assert_eq!(d.path.as_deref(), Some("health.timeout"));
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let err = validate(
            r#"
[health]
path = "health"
method = "GE T"
host = "a b"
expect_status = ["200", "300"]
body_contains = ""
interval = "1ms"
jitter = 0.9
rise = 0
fall = 0
"#,
        )
        .unwrap_err();
        let text = err.to_string();
        for want in [
            "t.toml:3:1: error: health.path: path \"health\" must start with \"/\"",
            "health.method: method \"GE T\" is not a valid HTTP method",
            "health.host: host \"a b\" is not a valid host name",
            "health.expect_status: expect_status [200, 300] leaves gaps",
            "health.body_contains: body_contains is empty",
            "health.interval: interval (1ms) is too short: it must be at least 10ms",
            "health.jitter: jitter (0.9) must be between 0 and 0.5",
            "health.rise: rise must be at least 1",
            "health.fall: fall must be at least 1",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(err.error_count(), 9, "{text}");
    }

    #[test]
    fn http_keys_on_a_tcp_check() {
        let err = validate("[health]\ntype = \"tcp\"\npath = \"/\"\nbody_contains = \"x\"\n")
            .unwrap_err();
        assert_eq!(err.error_count(), 2);
        assert!(
            err.to_string()
                .contains("path only applies to HTTP checks: remove it, or set type = \"http\""),
            "{err}"
        );
    }

    #[test]
    fn status_forms() {
        let range = |t: &str| {
            validate(&format!("[health]\nexpect_status = {t}\n"))
                .map(|(v, _)| match v.check {
                    Check::Http(h) => h.expect_status,
                    Check::Tcp => unreachable!(),
                })
                .map_err(|e| e.to_string())
        };
        assert_eq!(range("200").unwrap(), 200..=200);
        assert_eq!(range("\"204\"").unwrap(), 204..=204);
        assert_eq!(range("\"200-299\"").unwrap(), 200..=299);
        assert_eq!(range("[200, 201, \"202-204\"]").unwrap(), 200..=204);
        assert!(range("\"299-200\"").unwrap_err().contains("backwards"));
        assert!(
            range("700")
                .unwrap_err()
                .contains("statuses run from 100 to 599")
        );
        assert!(
            range("\"ok\"")
                .unwrap_err()
                .contains("a range like \"200-399\"")
        );
        assert!(range("[]").unwrap_err().contains("empty list"));
    }

    #[test]
    fn head_cannot_check_a_body_and_connect_is_refused() {
        let err = validate("[health]\nmethod = \"HEAD\"\nbody_contains = \"ok\"\n").unwrap_err();
        assert!(err.to_string().contains("a HEAD response has no body"));
        let err = validate("[health]\nmethod = \"CONNECT\"\n").unwrap_err();
        assert!(err.to_string().contains("CONNECT cannot be used"));
    }

    #[test]
    fn unknown_keys_and_types_are_syntax_errors() {
        let src = Source::parse(
            "t.toml",
            "[health]\ninterval = \"2s\"\nintreval = \"1s\"\n".to_string(),
        )
        .unwrap();
        let err = src.section::<HealthCheckConfig>("health").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `intreval`"),
            "{err}"
        );
        assert_eq!(err.items()[0].line, Some(3));
        let src = Source::parse("t.toml", "[health]\ntype = \"udp\"\n".to_string()).unwrap();
        let err = src.section::<HealthCheckConfig>("health").unwrap_err();
        assert!(err.to_string().contains("unknown variant `udp`"), "{err}");
        let src = Source::parse("t.toml", "[health]\njitter = \"lots\"\n".to_string()).unwrap();
        let err = src.section::<HealthCheckConfig>("health").unwrap_err();
        assert!(err.to_string().contains("percentage like \"10%\""), "{err}");
    }

    #[test]
    fn slow_fast_interval_is_a_warning() {
        let (_, warnings) =
            validate("[health]\ninterval = \"1s\"\nfast_interval = \"3s\"\n").unwrap();
        assert_eq!(warnings.warning_count(), 1);
        assert!(warnings.to_string().contains("probing slows down"));
    }

    #[test]
    fn absurd_durations_are_errors() {
        let err = validate("[health]\ninterval = \"100000h\"\ndown_interval = \"1us\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("health.interval: interval (11years"), "{err}");
        assert!(
            err.contains("is too long: it must be at most 1day"),
            "{err}"
        );
        assert!(err.contains("down_interval (1us) is too short"), "{err}");
    }

    proptest::proptest! {
        /// Whatever text or number a key holds, loading and validating never panics, and
        /// `validate` returns a value exactly when it reported no error.
        #[test]
        fn arbitrary_values_never_panic(
            key in proptest::sample::select(vec![
                "type", "path", "method", "host", "expect_status", "body_contains", "interval",
                "fast_interval", "down_interval", "timeout", "jitter", "rise", "fall",
            ]),
            text in "[ -~]{0,24}",
            number in proptest::num::i64::ANY,
            float in proptest::num::f64::ANY,
            which in 0u8..4,
        ) {
            let value = match which {
                0 => format!("{text:?}"),
                1 => number.to_string(),
                2 if float.is_finite() => format!("{float:e}"),
                _ => format!("[{text:?}, {number}]"),
            };
            let Ok(src) = Source::parse("t.toml", format!("[health]\n{key} = {value}\n")) else {
                return Ok(());
            };
            if let Ok(Some(cfg)) = src.section::<HealthCheckConfig>("health") {
                let mut diags = Diagnostics::new();
                let v = cfg.validate(&src, &KeyPath::of(&["health"]), &mut diags);
                proptest::prop_assert_eq!(v.is_some(), !diags.has_errors());
            }
        }
    }

    #[test]
    fn spec_display_and_range() {
        let s = StatusSpec(vec![(200, 299), (300, 300)]);
        assert_eq!(s.to_string(), "200-299, 300");
        assert_eq!(s.range(), Some(200..=300));
    }
}
