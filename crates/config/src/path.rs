//! Key paths into a config document, and locating them in the source text.

use std::fmt;
use std::ops::Range;

use toml_edit::{Item, Value};

/// One step of a [`KeyPath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path to a key in a config document, such as `proxy.pools.app.members[1].addr`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyPath {
    segs: Vec<Seg>,
}

impl KeyPath {
    /// The document root.
    pub fn root() -> Self {
        KeyPath::default()
    }

    /// A path from dotted keys, e.g. `KeyPath::of(&["proxy", "admin"])`.
    pub fn of(keys: &[&str]) -> Self {
        KeyPath {
            segs: keys.iter().map(|k| Seg::Key((*k).to_string())).collect(),
        }
    }

    /// This path extended by a key.
    #[must_use]
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut p = self.clone();
        p.segs.push(Seg::Key(key.into()));
        p
    }

    /// This path extended by an array index.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.segs.push(Seg::Index(index));
        p
    }

    /// The steps.
    pub fn segments(&self) -> &[Seg] {
        &self.segs
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.segs.is_empty()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.segs.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Where `segs` points in the document: the key's span for table entries, the element's
/// span for array entries. Walks as far as the document goes and returns the deepest span
/// found, so a path to a missing key still points at its parent.
pub(crate) fn locate(root: &Item, segs: &[Seg]) -> Option<Range<usize>> {
    let mut best: Option<Range<usize>> = None;
    let mut node = Node::Item(root);
    for seg in segs {
        let (next, span) = match (node, seg) {
            (Node::Item(Item::Table(t)), Seg::Key(k)) => match t.get(k) {
                Some(item) => (
                    Node::Item(item),
                    t.key(k).and_then(|k| k.span()).or_else(|| item.span()),
                ),
                None => break,
            },
            (Node::Item(Item::ArrayOfTables(a)), Seg::Index(i)) => match a.get(*i) {
                Some(t) => (Node::Table(t), t.span()),
                None => break,
            },
            (Node::Table(t), Seg::Key(k)) => match t.get(k) {
                Some(item) => (
                    Node::Item(item),
                    t.key(k).and_then(|k| k.span()).or_else(|| item.span()),
                ),
                None => break,
            },
            (Node::Item(Item::Value(v)), seg) | (Node::Value(v), seg) => match (v, seg) {
                (Value::InlineTable(t), Seg::Key(k)) => match t.get(k) {
                    Some(v) => (
                        Node::Value(v),
                        t.key(k).and_then(|k| k.span()).or_else(|| v.span()),
                    ),
                    None => break,
                },
                (Value::Array(a), Seg::Index(i)) => match a.get(*i) {
                    Some(v) => (Node::Value(v), v.span()),
                    None => break,
                },
                _ => break,
            },
            _ => break,
        };
        if span.is_some() {
            best = span;
        }
        node = next;
    }
    best
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a toml_edit::Table),
    Value(&'a Value),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let p = KeyPath::of(&["proxy", "pools"])
            .key("app")
            .index(2)
            .key("addr");
        assert_eq!(p.to_string(), "proxy.pools.app[2].addr");
        assert_eq!(KeyPath::root().to_string(), "");
    }
}
