//! The few system calls no safe crate wraps: link-layer (`AF_PACKET`) addressing for ARP,
//! real-time scheduling, and reading our capabilities.
//!
//! This is the crate's only `unsafe` code. Each block is a plain FFI call on values we
//! own, with the invariant stated beside it.
#![allow(
    unsafe_code,
    reason = "sockaddr_ll and sched_setscheduler have no safe wrapper"
)]

use std::io;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Ethertype of ARP.
pub const ETH_P_ARP: u16 = 0x0806;

/// A `sockaddr_ll` for `ifindex` and `proto`, with an optional destination MAC.
fn link_addr(ifindex: u32, proto: u16, mac: Option<[u8; 6]>) -> io::Result<SockAddr> {
    // SAFETY: `try_init` hands us zeroed storage large enough for any sockaddr; we write a
    // `sockaddr_ll` (smaller than `sockaddr_storage`) and report its exact length.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let ll = storage.cast::<libc::sockaddr_ll>();
            (*ll).sll_family = u16::try_from(libc::AF_PACKET).unwrap_or(17);
            (*ll).sll_protocol = proto.to_be();
            (*ll).sll_ifindex = i32::try_from(ifindex).unwrap_or(0);
            if let Some(m) = mac {
                (*ll).sll_halen = 6;
                let mut a = [0u8; 8];
                a[..6].copy_from_slice(&m);
                (*ll).sll_addr = a;
            }
            *len = u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(20);
            Ok(())
        })
    }?;
    Ok(addr)
}

/// A raw `AF_PACKET` socket for ARP frames on `ifindex` (non-blocking).
pub fn arp_socket(ifindex: u32) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(ETH_P_ARP.to_be()))),
    )?;
    s.bind(&link_addr(ifindex, ETH_P_ARP, None)?)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Send a whole Ethernet frame on `ifindex` (the frame carries its own header).
pub fn send_frame(s: &Socket, ifindex: u32, frame: &[u8]) -> io::Result<usize> {
    let dst = frame
        .get(..6)
        .and_then(|d| <[u8; 6]>::try_from(d).ok())
        .unwrap_or([0xff; 6]);
    s.send_to(frame, &link_addr(ifindex, ETH_P_ARP, Some(dst))?)
}

/// Switch the calling thread (and threads it creates afterwards) to `SCHED_RR` at
/// `priority`, with `SCHED_RESET_ON_FORK` so that child processes (notify hooks, tracker
/// commands) start with normal scheduling.
pub fn set_realtime(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 = the calling thread; `param` lives across the call.
    let r = unsafe {
        libc::sched_setscheduler(
            0,
            libc::SCHED_RR | libc::SCHED_RESET_ON_FORK,
            &raw const param,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Our effective capabilities from `/proc/self/status` (bit set), if readable.
pub fn effective_caps() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// CAP_NET_ADMIN.
pub const CAP_NET_ADMIN: u32 = 12;
/// CAP_NET_RAW.
pub const CAP_NET_RAW: u32 = 13;

/// The capabilities among `CAP_NET_ADMIN` and `CAP_NET_RAW` that we lack (names).
pub fn missing_caps() -> Vec<&'static str> {
    let Some(caps) = effective_caps() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if caps & (1 << CAP_NET_ADMIN) == 0 {
        out.push("CAP_NET_ADMIN");
    }
    if caps & (1 << CAP_NET_RAW) == 0 {
        out.push("CAP_NET_RAW");
    }
    out
}

/// Lock current and future memory so that a page, once touched, is never swapped out and
/// cannot delay an advert (best effort).
///
/// `MCL_ONFAULT` (Linux 4.4): lock pages as they are first touched instead of populating
/// every mapping up front. Without it, `MCL_FUTURE` makes each new mapping fully resident
/// at `mmap` time, and an allocator that reserves large regions (mimalloc's arenas, the
/// binary's global allocator) stalls the daemon for seconds while gigabytes are faulted in.
/// A kernel without `MCL_ONFAULT` (EINVAL) gets `MCL_CURRENT` alone.
pub fn lock_memory() -> io::Result<()> {
    use nix::errno::Errno;
    use nix::sys::mman::{MlockAllFlags, mlockall};
    match mlockall(
        MlockAllFlags::MCL_CURRENT
            | MlockAllFlags::MCL_FUTURE
            | MlockAllFlags::from_bits_retain(libc::MCL_ONFAULT),
    ) {
        Err(Errno::EINVAL) => mlockall(MlockAllFlags::MCL_CURRENT).map_err(io::Error::from),
        r => r.map_err(io::Error::from),
    }
}
