//! hastack's config language: one TOML file, one section per component (`[proxy]`, `[vip]`,
//! ...), and errors that name `file:line:column` and say in plain English what is wrong.
//!
//! The flow every component follows:
//!
//! 1. [`Source::load`] reads and parses the file once (syntax errors are located here).
//! 2. [`Source::section`] deserializes that component's section into its serde types
//!    (type errors, unknown keys and missing keys are located by the TOML deserializer).
//! 3. The component validates the typed section into its plain runtime structs, reporting
//!    every semantic problem (unknown pool, weight 0, ...) through a [`Diagnostics`] collector
//!    whose [`Diagnostics::error`] takes a [`KeyPath`] and finds the key's position itself.
//!
//! The crate also provides the value types that every section shares: [`Dur`] (`"250ms"`,
//! `"2s"`) and [`ByteSize`] (`"64KiB"`).
//!
//! It knows nothing about any component's keys: the components own their schemas.

mod diag;
mod path;
mod values;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use path::{KeyPath, Seg};
pub use values::{ByteSize, Dur};

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

/// A parsed config file: its text, its path for messages, and the span-preserving tree used
/// to locate keys.
pub struct Source {
    name: Arc<str>,
    path: Option<PathBuf>,
    text: String,
    doc: toml_edit::Document<String>,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("len", &self.text.len())
            .finish()
    }
}

impl Source {
    /// Read and parse `path`. A missing file or a TOML syntax error comes back as diagnostics.
    pub fn load(path: &Path) -> Result<Source, Diagnostics> {
        let name: Arc<str> = path.display().to_string().into();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics::single(Diagnostic {
                severity: Severity::Error,
                file: name.clone(),
                line: None,
                column: None,
                path: None,
                message: format!("cannot read the config file: {e}"),
            })
        })?;
        let mut src = Source::parse(name, text)?;
        src.path = Some(path.to_path_buf());
        Ok(src)
    }

    /// Parse `text`, reporting positions against the label `name`.
    pub fn parse(name: impl Into<Arc<str>>, text: String) -> Result<Source, Diagnostics> {
        let name = name.into();
        match toml_edit::Document::parse(text.clone()) {
            Ok(doc) => Ok(Source {
                name,
                path: None,
                text,
                doc,
            }),
            Err(e) => {
                let (line, column) = e
                    .span()
                    .map(|s| line_col(&text, s.start))
                    .map_or((None, None), |(l, c)| (Some(l), Some(c)));
                Err(Diagnostics::single(Diagnostic {
                    severity: Severity::Error,
                    file: name,
                    line,
                    column,
                    path: None,
                    message: format!("TOML syntax error: {}", e.message().trim_end()),
                }))
            }
        }
    }

    /// The label used in messages (the file's path as given).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's path, when loaded from disk.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The raw text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Names of the top-level sections present, with their positions, in file order.
    pub fn sections(&self) -> Vec<(String, Option<Range<usize>>)> {
        let table = self.doc.as_table();
        let mut out: Vec<(String, Option<Range<usize>>)> = table
            .iter()
            .map(|(k, item)| {
                let span = table.key(k).and_then(|k| k.span()).or_else(|| item.span());
                (k.to_string(), span)
            })
            .collect();
        out.sort_by_key(|(_, s)| s.as_ref().map_or(usize::MAX, |s| s.start));
        out
    }

    /// Whether the top-level section `key` is present.
    pub fn has_section(&self, key: &str) -> bool {
        self.doc.as_table().contains_key(key)
    }

    /// Deserialize the top-level section `key` into `T`; `Ok(None)` when it is absent.
    ///
    /// Errors (wrong type, unknown key when `T` denies them, missing key) are located at the
    /// offending key or value.
    pub fn section<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Diagnostics> {
        let de = toml::de::Deserializer::parse(&self.text).map_err(|e| self.toml_error(&e))?;
        let seed = SectionSeed::<T> {
            key,
            _t: std::marker::PhantomData,
        };
        seed.deserialize(de).map_err(|e| self.toml_error(&e))
    }

    /// Deserialize the whole file into `T` (for files that are one thing, like a chaos
    /// scenario).
    pub fn whole<T: DeserializeOwned>(&self) -> Result<T, Diagnostics> {
        toml::from_str(&self.text).map_err(|e| self.toml_error(&e))
    }

    /// The byte range of the key (or, failing that, the value) at `path`.
    pub fn span_of(&self, path: &KeyPath) -> Option<Range<usize>> {
        path::locate(self.doc.as_item(), path.segments())
    }

    /// A new, empty diagnostics collector bound to this source.
    pub fn diagnostics(&self) -> Diagnostics {
        Diagnostics::new()
    }

    /// A diagnostic located at `path`.
    pub fn diagnostic(
        &self,
        severity: Severity,
        path: &KeyPath,
        message: impl Into<String>,
    ) -> Diagnostic {
        let span = self.span_of(path);
        let (line, column) = span
            .map(|s| line_col(&self.text, s.start))
            .map_or((None, None), |(l, c)| (Some(l), Some(c)));
        Diagnostic {
            severity,
            file: self.name.clone(),
            line,
            column,
            path: (!path.is_root()).then(|| path.to_string()),
            message: message.into(),
        }
    }

    fn toml_error(&self, e: &toml::de::Error) -> Diagnostics {
        let (line, column) = e
            .span()
            .map(|s| line_col(&self.text, s.start))
            .map_or((None, None), |(l, c)| (Some(l), Some(c)));
        Diagnostics::single(Diagnostic {
            severity: Severity::Error,
            file: self.name.clone(),
            line,
            column,
            path: None,
            message: e.message().trim_end().to_string(),
        })
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before
        .get(line_start..)
        .map_or(1, |s| s.chars().count() + 1);
    (line, column)
}

/// Deserializes one top-level key of a document and skips the others, so that the
/// deserializer's own errors (with their spans) come through for that section.
struct SectionSeed<'k, T> {
    key: &'k str,
    _t: std::marker::PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for SectionSeed<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for SectionSeed<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a table with a [{}] section", self.key)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(k) = map.next_key::<String>()? {
            if k == self.key {
                found = Some(map.next_value::<T>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Proxy {
        listen: String,
        #[serde(default)]
        timeout: Option<Dur>,
        #[serde(default)]
        pools: std::collections::BTreeMap<String, Pool>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Pool {
        members: Vec<String>,
    }

    const TEXT: &str = r#"
[vip]
whatever = 1

[proxy]
listen = "127.0.0.1:80"
timeout = "250ms"

[proxy.pools.app]
members = ["a", "b"]
"#;

    #[test]
    fn reads_one_section_and_ignores_others() {
        let src = Source::parse("t.toml", TEXT.to_string()).unwrap();
        let p: Proxy = src.section("proxy").unwrap().unwrap();
        assert_eq!(p.timeout, Some(Dur(std::time::Duration::from_millis(250))));
        assert_eq!(p.pools["app"].members, vec!["a", "b"]);
        assert!(src.section::<Proxy>("nothing").unwrap().is_none());
        let names: Vec<String> = src.sections().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, vec!["vip", "proxy"]);
    }

    #[test]
    fn unknown_key_is_located() {
        let text = "[proxy]\nlisten = \"x\"\nlistne = \"y\"\n";
        let src = Source::parse("t.toml", text.to_string()).unwrap();
        let err = src.section::<Proxy>("proxy").unwrap_err();
        let d = &err.items()[0];
        assert_eq!((d.line, d.column), (Some(3), Some(1)), "{err}");
        assert!(d.message.contains("unknown field `listne`"), "{err}");
        assert!(err.to_string().starts_with("t.toml:3:1: error:"), "{err}");
    }

    #[test]
    fn bad_duration_is_located_and_explained() {
        let text = "[proxy]\nlisten = \"x\"\ntimeout = \"5 parsecs\"\n";
        let src = Source::parse("t.toml", text.to_string()).unwrap();
        let err = src.section::<Proxy>("proxy").unwrap_err();
        let d = &err.items()[0];
        assert_eq!(d.line, Some(3), "{err}");
        assert!(d.message.contains("like \"250ms\""), "{err}");
    }

    #[test]
    fn syntax_error_is_located() {
        let err = Source::parse("t.toml", "[proxy\nlisten = 1\n".to_string()).unwrap_err();
        let d = &err.items()[0];
        assert_eq!(d.line, Some(1), "{err}");
        assert!(d.message.starts_with("TOML syntax error"), "{err}");
    }

    #[test]
    fn semantic_errors_are_located_by_path() {
        let src = Source::parse("t.toml", TEXT.to_string()).unwrap();
        let path = KeyPath::root()
            .key("proxy")
            .key("pools")
            .key("app")
            .key("members")
            .index(1);
        let d = src.diagnostic(Severity::Error, &path, "no such member");
        assert_eq!((d.line, d.column), (Some(10), Some(17)));
        assert_eq!(d.path.as_deref(), Some("proxy.pools.app.members[1]"));
        let d = src.diagnostic(
            Severity::Error,
            &KeyPath::root().key("proxy").key("timeout"),
            "x",
        );
        assert_eq!((d.line, d.column), (Some(7), Some(1)));
        // A path that does not exist still yields a message, just without a position
        // beyond its nearest existing parent.
        let d = src.diagnostic(
            Severity::Error,
            &KeyPath::root().key("proxy").key("admin"),
            "missing",
        );
        assert_eq!(d.line, Some(5));
    }

    #[test]
    fn missing_file_is_a_diagnostic() {
        let err = Source::load(Path::new("/nonexistent/hastack.toml")).unwrap_err();
        assert!(err.to_string().contains("cannot read the config file"));
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("", 5), (1, 1));
    }
}
