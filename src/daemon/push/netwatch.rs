//! The machine's network changes, for [`super::wake`]: on Linux a `NETLINK_ROUTE` socket
//! subscribed to link, address and route changes (Wi-Fi joined, cable plugged, VPN up) makes
//! every waiting registry be probed at once instead of at its next probe tick. Elsewhere there
//! is no watcher: the probe timer alone ends the waits.

use std::sync::Weak;

use super::wake::Links;

/// Starts the watcher on a thread of its own (it blocks in `recv`); it ends once `links` is
/// gone. A socket that cannot be opened is logged and leaves the probe timer alone.
#[cfg(target_os = "linux")]
pub fn start(links: Weak<Links>) {
    let spawned = std::thread::Builder::new()
        .name("hoistd-netwatch".into())
        .spawn(move || {
            if let Err(e) = linux::watch(&links) {
                tracing::info!(error = %e, "no network change notifications: link probes run on their timer only");
            }
        });
    if let Err(e) = spawned {
        tracing::info!(error = %e, "no network watcher thread: link probes run on their timer only");
    }
}

#[cfg(not(target_os = "linux"))]
pub fn start(_links: Weak<Links>) {}

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::Weak;
    use std::time::Duration;

    use rustix::net::{
        AddressFamily, RecvFlags, SocketType, netlink::SocketAddrNetlink, socket, sockopt,
    };

    use super::Links;

    /// `RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR |
    /// RTMGRP_IPV6_ROUTE` (`linux/rtnetlink.h`, kernel ABI): interfaces going up or down, and
    /// addresses and routes coming or going.
    const ROUTE_GROUPS: u32 = 0x1 | 0x10 | 0x40 | 0x100 | 0x400;
    /// How often the blocked `recv` wakes to see whether the daemon still wants it.
    const RECV_TIMEOUT_MS: u64 = 1000;
    /// Netlink messages are read whole into this buffer; only their arrival matters.
    const MESSAGE_BYTES_MAX: usize = 16 * 1024;

    pub fn watch(links: &Weak<Links>) -> std::io::Result<()> {
        let fd = socket(AddressFamily::NETLINK, SocketType::RAW, None)?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, ROUTE_GROUPS))?;
        let timeout = Some(Duration::from_millis(RECV_TIMEOUT_MS));
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Recv, timeout)?;
        let mut buf = vec![0u8; MESSAGE_BYTES_MAX];
        loop {
            let got = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty());
            let Some(links) = links.upgrade() else {
                return Ok(());
            };
            match got {
                Ok(_) => links.network_changed(),
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                // Overrun: changes were lost, which is a change too.
                Err(rustix::io::Errno::NOBUFS) => links.network_changed(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}
