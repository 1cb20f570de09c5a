//! Interface and address management over rtnetlink.
//!
//! Every address hastack adds carries a tag the kernel keeps for us: the address protocol
//! (`IFA_PROTO`, shown by `ip -d addr` as `proto 0x68`), so a restarted daemon can tell its
//! own leftovers from addresses an operator added. Optionally it also carries a lifetime
//! (`valid_lft`), refreshed while master, so that the kernel itself deletes the address if
//! every hastack process is gone (see `docs/vip.md`, "never two holders").

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures_util::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressProtocol, CacheInfo,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use rtnetlink::Handle;

use crate::Error;

/// `IFA_PROTO` value marking addresses added by hastack ('h').
pub const ADDR_PROTO: u8 = 0x68;

/// What we need to know about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Hardware address.
    pub mac: [u8; 6],
    /// Administratively up with carrier.
    pub up: bool,
}

/// An IPv4 address on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrInfo {
    /// The address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// `IFA_PROTO`, if set.
    pub proto: Option<u8>,
    /// Whether the kernel marks it secondary.
    pub secondary: bool,
}

/// A netlink route connection.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: Handle,
}

fn nl_err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let what = what.into();
    move |e| {
        let io = match &e {
            rtnetlink::Error::NetlinkError(m) => Some(m.to_io()),
            _ => None,
        };
        match io {
            Some(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                Error::Privilege(format!(
                    "{what}: permission denied: hastack vip needs CAP_NET_ADMIN to add and remove addresses (run as root, or grant it: AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW)"
                ))
            }
            Some(io) => Error::Netlink(format!("{what}: {io}")),
            None => Error::Netlink(format!("{what}: {e}")),
        }
    }
}

impl Netlink {
    /// Open a connection; its IO task runs on the current tokio runtime.
    pub fn connect() -> Result<Netlink, Error> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::Netlink(format!("cannot open a netlink socket: {e}")))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Look up interface `name`.
    pub async fn link(&self, name: &str) -> Result<Link, Error> {
        let mut s = self.handle.link().get().match_name(name).execute();
        let msg = s
            .try_next()
            .await
            .map_err(|e| match &e {
                rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::ENODEV => {
                    Error::Config(format!("interface {name:?} does not exist"))
                }
                _ => nl_err(format!("look up interface {name}"))(e),
            })?
            .ok_or_else(|| Error::Config(format!("interface {name:?} does not exist")))?;
        let mut mac = [0u8; 6];
        for a in &msg.attributes {
            if let LinkAttribute::Address(m) = a
                && m.len() == 6
            {
                mac.copy_from_slice(m);
            }
        }
        let f = msg.header.flags;
        Ok(Link {
            index: msg.header.index,
            mac,
            up: f.contains(LinkFlags::Up) && f.contains(LinkFlags::LowerUp),
        })
    }

    /// IPv4 addresses on interface `index`.
    pub async fn addrs(&self, index: u32) -> Result<Vec<AddrInfo>, Error> {
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl_err("list addresses"))? {
            if m.header.family != AddressFamily::Inet {
                continue;
            }
            let mut addr = None;
            let mut proto = None;
            for a in &m.attributes {
                match a {
                    AddressAttribute::Local(IpAddr::V4(v)) => addr = Some(*v),
                    AddressAttribute::Address(IpAddr::V4(v)) if addr.is_none() => {
                        addr = Some(*v);
                    }
                    AddressAttribute::Protocol(p) => proto = Some(u8::from(*p)),
                    _ => {}
                }
            }
            if let Some(addr) = addr {
                out.push(AddrInfo {
                    addr,
                    prefix: m.header.prefix_len,
                    proto,
                    secondary: m.header.flags.contains(AddressHeaderFlags::Secondary),
                });
            }
        }
        Ok(out)
    }

    /// The interface's primary IPv4 address that hastack did not add: the VRRP source.
    pub async fn primary_v4(&self, index: u32) -> Result<Option<Ipv4Addr>, Error> {
        let a = self.addrs(index).await?;
        Ok(a.iter()
            .find(|a| !a.secondary && a.proto != Some(ADDR_PROTO))
            .or_else(|| a.iter().find(|a| a.proto != Some(ADDR_PROTO)))
            .map(|a| a.addr))
    }

    /// Add (or refresh) `addr/prefix` on `index`, tagged as ours, with an optional lifetime.
    pub async fn add(
        &self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
        lease: Option<Duration>,
    ) -> Result<(), Error> {
        let mut req = self
            .handle
            .address()
            .add(index, IpAddr::V4(addr), prefix)
            .replace();
        let secs = lease.map_or(u32::MAX, |l| u32::try_from(l.as_secs()).unwrap_or(u32::MAX));
        let m = req.message_mut();
        let mut ci = CacheInfo::default();
        ci.ifa_preferred = secs;
        ci.ifa_valid = secs;
        m.attributes.push(AddressAttribute::CacheInfo(ci));
        m.attributes
            .push(AddressAttribute::Protocol(AddressProtocol::from(
                ADDR_PROTO,
            )));
        req.execute()
            .await
            .map_err(nl_err(format!("add {addr}/{prefix}")))
    }

    /// Remove `addr/prefix` from `index`; `Ok(false)` when it was not there.
    pub async fn remove(&self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<bool, Error> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
        m.attributes
            .push(AddressAttribute::Address(IpAddr::V4(addr)));
        match self.handle.address().del(m).execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -libc::EADDRNOTAVAIL || e.raw_code() == -libc::ENODEV =>
            {
                Ok(false)
            }
            Err(e) => Err(nl_err(format!("remove {addr}/{prefix}"))(e)),
        }
    }
}
