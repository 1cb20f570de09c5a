//! The `[coord]` config section: the embedded store's listener, data directory and limits.
//!
//! Defaults are written once, in [`ServerConfig::default`]; the TOML layer only overrides.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hastack_config::{ByteSize, Diagnostics, Dur, KeyPath, Source};
use serde::Deserialize;

/// The section name.
pub const SECTION: &str = "coord";

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const ETCD_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// The embedded server's runtime configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// gRPC listener (etcd's client URL). Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// Directory holding `coord.redb`.
    pub data_dir: PathBuf,
    /// The client URL announced in `MemberList` (default `http://<listen>`).
    pub advertise: Option<String>,
    /// Admin listener (`/status`, `/metrics`).
    pub admin: Option<SocketAddr>,
    /// Revisions of history kept for watches before automatic compaction.
    pub history_revisions: i64,
    /// Largest request accepted (etcd's `--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Most leases at once.
    pub max_leases: usize,
    /// Most watchers at once, over every stream.
    pub max_watchers: usize,
    /// Most concurrent gRPC streams per connection.
    pub max_streams_per_connection: u32,
    /// Interval of progress notifications to idle watchers that asked for them.
    pub progress_notify: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 2379)),
            data_dir: PathBuf::from("hastack-coord.data"),
            advertise: None,
            admin: None,
            history_revisions: 100_000,
            max_request_bytes: ETCD_MAX_REQUEST_BYTES,
            max_leases: 100_000,
            max_watchers: 100_000,
            max_streams_per_connection: 1_000,
            // etcd's default (`--experimental-watch-progress-notify-interval`) is 10 minutes;
            // a shorter one costs nothing on one node and lets resumed watches start closer.
            progress_notify: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoordToml {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    advertise: Option<String>,
    admin: Option<String>,
    history_revisions: Option<i64>,
    max_request_bytes: Option<ByteSize>,
    max_leases: Option<usize>,
    max_watchers: Option<usize>,
    max_streams_per_connection: Option<u32>,
    progress_notify: Option<Dur>,
}

/// Load and validate the `[coord]` section of `src`. Relative `data_dir`s are resolved against
/// the config file's directory.
pub fn load(src: &Source) -> Result<(ServerConfig, Diagnostics), Diagnostics> {
    let Some(t) = src.section::<CoordToml>(SECTION)? else {
        let mut d = Diagnostics::new();
        d.error(src, &KeyPath::root(), "no [coord] section: nothing to run");
        return Err(d);
    };
    let root = KeyPath::root().key(SECTION);
    let mut errors = Diagnostics::new();
    let warnings = Diagnostics::new();
    let mut c = ServerConfig::default();
    let addr = |errors: &mut Diagnostics, key: &str, v: &str| -> Option<SocketAddr> {
        match v.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errors.error(
                    src,
                    &root.key(key),
                    format!(
                        "{key} = {v:?} is not an address: write IP:PORT, like \"127.0.0.1:2379\""
                    ),
                );
                None
            }
        }
    };
    if let Some(l) = &t.listen {
        if let Some(a) = addr(&mut errors, "listen", l) {
            c.listen = a;
        }
    }
    if let Some(a) = &t.admin {
        c.admin = addr(&mut errors, "admin", a);
    }
    match t.data_dir {
        Some(d) if d.as_os_str().is_empty() => {
            errors.error(src, &root.key("data_dir"), "data_dir is empty: name a directory")
        }
        Some(d) => {
            c.data_dir = match (d.is_relative(), src.path().and_then(|p| p.parent())) {
                (true, Some(base)) => base.join(d),
                _ => d,
            }
        }
        None => errors.error(
            src,
            &root,
            "data_dir is required: the directory where the store keeps its data (it must survive restarts)",
        ),
    }
    if let Some(a) = t.advertise {
        if !(a.starts_with("http://") || a.starts_with("https://")) {
            errors.error(
                src,
                &root.key("advertise"),
                format!("advertise = {a:?} must be a URL like \"http://127.0.0.1:2379\""),
            );
        }
        c.advertise = Some(a);
    }
    if let Some(h) = t.history_revisions {
        if h < 1 {
            errors.error(
                src,
                &root.key("history_revisions"),
                "history_revisions must be at least 1",
            );
        }
        c.history_revisions = h;
    }
    if let Some(b) = t.max_request_bytes {
        let b = b.as_usize();
        if !(1024..=64 * 1024 * 1024).contains(&b) {
            errors.error(
                src,
                &root.key("max_request_bytes"),
                "max_request_bytes must be between 1KiB and 64MiB (etcd's default is 1.5MiB)",
            );
        }
        c.max_request_bytes = b;
    }
    for (key, v, target) in [
        ("max_leases", t.max_leases, &mut c.max_leases),
        ("max_watchers", t.max_watchers, &mut c.max_watchers),
    ] {
        if let Some(v) = v {
            if v == 0 {
                errors.error(src, &root.key(key), format!("{key} must be at least 1"));
            }
            *target = v;
        }
    }
    if let Some(s) = t.max_streams_per_connection {
        if s == 0 {
            errors.error(
                src,
                &root.key("max_streams_per_connection"),
                "max_streams_per_connection must be at least 1",
            );
        }
        c.max_streams_per_connection = s;
    }
    if let Some(p) = t.progress_notify {
        if p.0 < Duration::from_millis(100) {
            errors.error(
                src,
                &root.key("progress_notify"),
                "progress_notify must be at least 100ms",
            );
        }
        c.progress_notify = p.0;
    }
    if errors.has_errors() {
        errors.extend(warnings);
        return Err(errors);
    }
    Ok((c, warnings))
}

/// One line for `hastack check`.
pub fn summary(c: &ServerConfig) -> String {
    format!(
        "coord: embedded single-node etcd-API store on {} (data in {}, {} revisions of history{})",
        c.listen,
        c.data_dir.display(),
        c.history_revisions,
        c.admin
            .map(|a| format!(", admin on {a}"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServerConfig, String> {
        let src = Source::parse("t.toml", text.to_string()).map_err(|d| d.to_string())?;
        load(&src).map(|(c, _)| c).map_err(|d| d.to_string())
    }

    #[test]
    fn defaults_and_overrides() {
        let c = parse("[coord]\ndata_dir = \"/tmp/x\"\nlisten = \"127.0.0.1:0\"\nmax_request_bytes = \"2MiB\"\n").unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.max_request_bytes, 2 * 1024 * 1024);
        assert_eq!(
            c.history_revisions,
            ServerConfig::default().history_revisions
        );
    }

    #[test]
    fn errors_are_located_and_named() {
        let e = parse("[coord]\ndata_dir = \"/x\"\nlisten = \"nowhere\"\nmax_leases = 0\n")
            .unwrap_err();
        assert!(e.contains("t.toml:3"), "{e}");
        assert!(e.contains("not an address"), "{e}");
        assert!(e.contains("max_leases must be at least 1"), "{e}");
        let e = parse("[coord]\nlisten = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(e.contains("data_dir is required"), "{e}");
        let e = parse("[coord]\ndata_dir = \"/x\"\nlisen = \"1\"\n").unwrap_err();
        assert!(e.contains("lisen"), "{e}");
    }
}
