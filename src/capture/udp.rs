//! SIP over UDP: one datagram is one message (trailing octets ignored, RFC 4475 dblreq).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::CaptureContext;
use super::inspect::Meta;
use crate::event::Transport;
use crate::metrics::Counters;

/// Turns on IP_PKTINFO / IPV6_RECVPKTINFO.
fn enable_pktinfo(socket: &UdpSocket, bound: SocketAddr) -> nix::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    if bound.is_ipv4() {
        setsockopt(socket, sockopt::Ipv4PacketInfo, &true)
    } else {
        setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)
    }
}

/// One `recvmsg`: the datagram, its source, and the local address it was sent to.
fn recv_with_destination(
    socket: &UdpSocket,
    buf: &mut [u8],
    cmsg: &mut [u8],
    bound: SocketAddr,
) -> std::io::Result<(usize, SocketAddr, SocketAddr)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(std::io::Error::from)?;
    let source = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::V4((*v4).into()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
        })
        .ok_or_else(|| std::io::Error::other("datagram without a source address"))?;
    let mut local = bound;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    local.set_ip(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        info.ipi_addr.s_addr,
                    ))));
                }
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    local.set_ip(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
        }
    }
    Ok((msg.bytes, source, local))
}

/// How many bytes our replies to one datagram may exceed it by: room for a 200 OK with SDP to a
/// short INVITE, not for doubling a Via-padded one.
const REPLY_SLACK_BYTES: usize = 2048;

/// The largest UDP payload over IPv6 (65,535 less the UDP header); IPv4's is smaller. The
/// buffer holds one byte more, so no datagram is ever cut short.
const MAX_DATAGRAM_BYTES: usize = 65_527;

/// Hang-ups (BYEs of answered calls) waiting to be sent from one socket; more calls are
/// answered but not hung up by us.
const MAX_PENDING_HANGUPS: usize = 1024;

pub async fn serve(socket: UdpSocket, cx: Arc<CaptureContext>, cancel: CancellationToken) {
    let Ok(bound) = socket.local_addr() else {
        return;
    };
    let socket = Arc::new(socket);
    // Aborted when intake stops: a pending BYE is not worth waiting for.
    let mut hangups = tokio::task::JoinSet::new();
    // On a wildcard address, ask the kernel which local address each datagram was sent to, so
    // that `destination_ip` is the real address, as on TCP.
    let wildcard = bound.ip().is_unspecified() && enable_pktinfo(&socket, bound).is_ok();
    let mut buf = vec![0u8; MAX_DATAGRAM_BYTES + 1];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    loop {
        let mut local = bound;
        let received = async {
            if wildcard {
                socket
                    .async_io(tokio::io::Interest::READABLE, || {
                        recv_with_destination(&socket, &mut buf, &mut cmsg, bound)
                    })
                    .await
                    .map(|(len, source, dst)| {
                        local = dst;
                        (len, source)
                    })
            } else {
                socket.recv_from(&mut buf).await
            }
        };
        let (len, source) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = received => match r {
                Ok(x) => x,
                // ICMP errors from earlier replies surface here on Linux; they concern no one.
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive error.");
                    continue;
                }
            },
        };
        while hangups.try_join_next().is_some() {}
        let Some(datagram) = buf.get(..len) else {
            continue;
        };
        let meta = Meta {
            transport: Transport::Udp,
            source,
            local,
        };
        let (replies, hangup) = cx.handle(datagram, &meta);
        if replies.is_empty() {
            continue;
        }
        // Never answer a datagram with much more than it carried: a spoofed source gains nothing.
        let reply_bytes: usize = replies.iter().map(Vec::len).sum();
        if reply_bytes > len + REPLY_SLACK_BYTES {
            Counters::inc(&cx.counters.replies_rate_limited);
            continue;
        }
        if !cx
            .reply_limit
            .allow(source.ip(), replies.len(), Instant::now())
        {
            Counters::inc(&cx.counters.replies_rate_limited);
            continue;
        }
        for reply in replies {
            match socket.send_to(&reply, source).await {
                Ok(_) => Counters::inc(&cx.counters.replies_sent),
                Err(e) => tracing::debug!(%source, error = %e, "UDP reply not sent."),
            }
        }
        if let Some(bye) = hangup {
            if hangups.len() < MAX_PENDING_HANGUPS {
                hangups.spawn(hang_up(socket.clone(), cx.clone(), source, bye));
            }
        }
    }
    hangups.shutdown().await;
}

/// Sends the BYE of an answered call after [`super::CALL_LENGTH`], to the source the INVITE
/// came from (never to the Contact it named), within the source's reply budget.
async fn hang_up(
    socket: Arc<UdpSocket>,
    cx: Arc<CaptureContext>,
    source: SocketAddr,
    bye: Vec<u8>,
) {
    tokio::time::sleep(super::CALL_LENGTH).await;
    if !cx.reply_limit.allow(source.ip(), 1, Instant::now()) {
        Counters::inc(&cx.counters.replies_rate_limited);
        return;
    }
    match socket.send_to(&bye, source).await {
        Ok(_) => Counters::inc(&cx.counters.replies_sent),
        Err(e) => tracing::debug!(%source, error = %e, "UDP BYE not sent."),
    }
}
