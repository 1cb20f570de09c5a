//! Sockets: the raw IP socket for VRRP (protocol 112) and the `AF_PACKET` socket for ARP.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::Error;
use crate::packet::{IPPROTO_VRRP, VRRP_GROUP};
use crate::sys;

fn raw_err(what: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| {
        if e.kind() == io::ErrorKind::PermissionDenied {
            Error::Privilege(format!(
                "{what}: permission denied: hastack vip needs CAP_NET_RAW for its raw VRRP and ARP sockets (run as root, or grant it: AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW)"
            ))
        } else {
            Error::Io(format!("{what}: {e}"))
        }
    }
}

/// Register an owned socket with the runtime's reactor.
#[allow(
    deprecated,
    reason = "AsyncFd::new is deprecated in favour of the unsafe AsyncFd::register; a socket2::Socket owns its fd, so the I/O-safety concern does not apply"
)]
fn register(s: Socket) -> io::Result<AsyncFd<Socket>> {
    AsyncFd::new(s)
}

/// A raw socket sending and receiving VRRP on one interface.
///
/// It is not bound to an address (a raw socket bound to an address only receives packets
/// *to* that address, which would hide multicast adverts); `SO_BINDTODEVICE` restricts it
/// to the interface and `IP_MULTICAST_IF` pins the source of multicast adverts to the
/// interface's primary address.
#[derive(Debug)]
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
}

impl VrrpSocket {
    /// Open on `ifname` (index `ifindex`), advertising from `primary`.
    pub fn open(ifname: &str, ifindex: u32, primary: Ipv4Addr) -> Result<VrrpSocket, Error> {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )
        .map_err(raw_err("open a raw VRRP socket"))?;
        let ctx = |what: &'static str| {
            move |e: io::Error| Error::Io(format!("VRRP socket on {ifname}: {what}: {e}"))
        };
        s.bind_device(Some(ifname.as_bytes()))
            .map_err(ctx("SO_BINDTODEVICE"))?;
        s.set_multicast_if_v4(&primary)
            .map_err(ctx("IP_MULTICAST_IF"))?;
        s.set_multicast_ttl_v4(255)
            .map_err(ctx("IP_MULTICAST_TTL"))?;
        s.set_ttl_v4(255).map_err(ctx("IP_TTL"))?;
        s.set_multicast_loop_v4(false)
            .map_err(ctx("IP_MULTICAST_LOOP"))?;
        s.set_multicast_all_v4(false)
            .map_err(ctx("IP_MULTICAST_ALL"))?;
        s.join_multicast_v4_n(&VRRP_GROUP, &InterfaceIndexOrAddress::Index(ifindex))
            .map_err(ctx("join 224.0.0.18"))?;
        // Adverts are small and frequent; a larger buffer rides out scheduling hiccups.
        let _ = s.set_recv_buffer_size(256 * 1024);
        s.set_nonblocking(true).map_err(ctx("O_NONBLOCK"))?;
        let fd = register(s).map_err(ctx("register with the runtime"))?;
        Ok(VrrpSocket { fd })
    }

    /// Receive one IP packet (header included).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| {
                let mut s: &Socket = inner.get_ref();
                s.read(buf)
            }) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Send a VRRP message (the kernel adds the IP header) to `dst`.
    pub fn send(&self, payload: &[u8], dst: Ipv4Addr) -> io::Result<usize> {
        self.fd
            .get_ref()
            .send_to(payload, &SockAddr::from(SocketAddrV4::new(dst, 0)))
    }
}

/// ARP operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOp {
    /// Request (1).
    Request,
    /// Reply (2).
    Reply,
}

/// The fields of an Ethernet/IPv4 ARP packet we care about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// Operation.
    pub op: ArpOp,
    /// Sender hardware address.
    pub sender_mac: [u8; 6],
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

/// Build an Ethernet frame carrying an ARP request. Gratuitous ARP: `sender_ip ==
/// target_ip == VIP`. RFC 5227 probe: `sender_ip == 0.0.0.0`, `target_ip == VIP`.
pub fn arp_request(mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&sys::ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&sender_ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip.octets());
    f
}

/// Parse an Ethernet frame as an Ethernet/IPv4 ARP packet.
pub fn parse_arp(frame: &[u8]) -> Option<Arp> {
    if frame.len() < 42 || frame[12..14] != sys::ETH_P_ARP.to_be_bytes() {
        return None;
    }
    let a = &frame[14..];
    if a[0..6] != [0, 1, 8, 0, 6, 4] {
        return None;
    }
    let op = match u16::from_be_bytes([a[6], a[7]]) {
        1 => ArpOp::Request,
        2 => ArpOp::Reply,
        _ => return None,
    };
    let mut sender_mac = [0u8; 6];
    sender_mac.copy_from_slice(&a[8..14]);
    Some(Arp {
        op,
        sender_mac,
        sender_ip: Ipv4Addr::new(a[14], a[15], a[16], a[17]),
        target_ip: Ipv4Addr::new(a[24], a[25], a[26], a[27]),
    })
}

/// An `AF_PACKET` socket for ARP on one interface.
#[derive(Debug)]
pub struct ArpSocket {
    fd: AsyncFd<Socket>,
    ifindex: u32,
}

impl ArpSocket {
    /// Open on interface `ifindex`.
    pub fn open(ifindex: u32) -> Result<ArpSocket, Error> {
        let s = sys::arp_socket(ifindex).map_err(raw_err("open an ARP (AF_PACKET) socket"))?;
        let fd = register(s).map_err(|e| Error::Io(format!("ARP socket: {e}")))?;
        Ok(ArpSocket { fd, ifindex })
    }

    /// Send one frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        sys::send_frame(self.fd.get_ref(), self.ifindex, frame)
    }

    /// Receive one frame.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| {
                let mut s: &Socket = inner.get_ref();
                s.read(buf)
            }) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_roundtrip() {
        let mac = [2, 0, 0, 0, 0, 1];
        let f = arp_request(mac, Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(10, 0, 0, 50));
        assert_eq!(f.len(), 42);
        let a = parse_arp(&f).unwrap();
        assert_eq!(a.op, ArpOp::Request);
        assert_eq!(a.sender_mac, mac);
        assert_eq!(a.sender_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!(a.target_ip, Ipv4Addr::new(10, 0, 0, 50));
        assert!(parse_arp(&f[..30]).is_none());
    }
}
