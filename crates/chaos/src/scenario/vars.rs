//! Placeholders: `{port:NAME}`, `{dir}`, `{scenario}`, `{{`/`}}`, and in namespace mode
//! `{ip:HOST}` and `{net:N}`, expanded in addresses, arguments, environment values, URLs,
//! fault subjects and file contents.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;

use crate::netns::NetnsTopology;

/// Placeholder values for one run.
#[derive(Debug, Clone)]
pub struct Vars {
    /// The run's directory (`{dir}`).
    pub dir: PathBuf,
    /// The scenario file (`{scenario}`).
    pub scenario: PathBuf,
    /// The hastack binary (`command = "hastack"`).
    pub hastack_exe: PathBuf,
    ports: BTreeMap<String, u16>,
    netns: Option<NetnsTopology>,
}

impl Vars {
    /// Placeholder values for a run in `dir`.
    pub fn new(dir: PathBuf, scenario: PathBuf, hastack_exe: PathBuf) -> Self {
        Vars {
            dir,
            scenario,
            hastack_exe,
            ports: BTreeMap::new(),
            netns: None,
        }
    }

    /// Declare the namespace topology (enables `{ip:HOST}` and `{net:N}`).
    pub fn set_netns(&mut self, topo: NetnsTopology) {
        self.netns = Some(topo);
    }

    /// The namespace topology, if declared.
    pub fn netns(&self) -> Option<&NetnsTopology> {
        self.netns.as_ref()
    }

    /// The address of a host of the topology (`{ip:HOST}`).
    pub fn ip(&self, host: &str) -> Result<std::net::Ipv4Addr, String> {
        let t = self.netns.as_ref().ok_or_else(|| {
            format!("{{ip:{host}}} needs a [chaos.netns] topology (namespace mode)")
        })?;
        t.ip(host)
            .ok_or_else(|| format!("{{ip:{host}}}: no host `{host}`; hosts: {}", t.names()))
    }

    /// The port picked for `name` (picked now if new): bound on 127.0.0.1:0 and released,
    /// never the same as another name's.
    pub fn port(&mut self, name: &str) -> Result<u16, String> {
        if let Some(p) = self.ports.get(name) {
            return Ok(*p);
        }
        let used: BTreeSet<u16> = self.ports.values().copied().collect();
        for _ in 0..50 {
            let l = TcpListener::bind(("127.0.0.1", 0))
                .map_err(|e| format!("cannot pick a free port for {{port:{name}}}: {e}"))?;
            let p = l.local_addr().map_err(|e| e.to_string())?.port();
            if !used.contains(&p) {
                self.ports.insert(name.to_string(), p);
                return Ok(p);
            }
        }
        Err(format!(
            "cannot pick a distinct free port for {{port:{name}}}"
        ))
    }

    /// Expand placeholders in `s`.
    pub fn expand(&mut self, s: &str) -> Result<String, String> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find(['{', '}']) {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(t) = tail.strip_prefix("{{") {
                out.push('{');
                rest = t;
            } else if let Some(t) = tail.strip_prefix("}}") {
                out.push('}');
                rest = t;
            } else if tail.starts_with('}') {
                return Err(format!(
                    "unmatched `}}` in {s:?} (write `}}}}` for a literal brace)"
                ));
            } else {
                let end = tail.find('}').ok_or_else(|| {
                    format!("unclosed `{{` in {s:?} (write `{{{{` for a literal brace)")
                })?;
                let name = &tail[1..end];
                match name.split_once(':') {
                    Some(("port", n)) if !n.is_empty() => out.push_str(&self.port(n)?.to_string()),
                    Some(("ip", h)) if !h.is_empty() => out.push_str(&self.ip(h)?.to_string()),
                    Some(("net", n)) => {
                        let t = self.netns.as_ref().ok_or_else(|| {
                            format!("{{net:{n}}} needs a [chaos.netns] topology (namespace mode)")
                        })?;
                        let last: u8 = n
                            .parse()
                            .ok()
                            .filter(|x| (1..=254).contains(x))
                            .ok_or_else(|| {
                                format!("{{net:{n}}}: N is the last octet of an address, 1..=254")
                            })?;
                        out.push_str(&t.addr(last).to_string());
                    }
                    None if name == "dir" => out.push_str(&self.dir.display().to_string()),
                    None if name == "scenario" => {
                        out.push_str(&self.scenario.display().to_string());
                    }
                    _ => {
                        return Err(format!(
                            "unknown placeholder {{{name}}} in {s:?}; known: {{port:NAME}}, {{dir}}, {{scenario}}, {{ip:HOST}}, {{net:N}}"
                        ));
                    }
                }
                rest = &tail[end + 1..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The ports picked so far, by name.
    pub fn ports(&self) -> &BTreeMap<String, u16> {
        &self.ports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::new("/run".into(), "/s.toml".into(), "/bin/hastack".into())
    }

    #[test]
    fn placeholders() {
        let mut v = vars();
        assert_eq!(v.expand("{dir}/x {{y}}").unwrap(), "/run/x {y}");
        let a = v.expand("{port:a}").unwrap();
        assert_eq!(v.expand("{port:a}").unwrap(), a);
        assert_ne!(v.expand("{port:b}").unwrap(), a);
        assert!(
            v.expand("{nope}")
                .unwrap_err()
                .contains("unknown placeholder")
        );
        assert!(v.expand("{dir").unwrap_err().contains("unclosed"));
        assert!(v.expand("}").unwrap_err().contains("unmatched"));
    }

    proptest::proptest! {
        /// Placeholder expansion on arbitrary text never panics.
        #[test]
        fn expand_never_panics(text in "[{}a-z:_]{0,40}") {
            let mut v = vars();
            let _ = v.expand(&text);
        }
    }
}
