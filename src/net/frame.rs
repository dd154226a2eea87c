//! The frames the NAT writes itself (DHCP, DNS and UDP replies): ethernet, IPv4 and UDP
//! headers around a payload, with checksums, through smoltcp's wire representations.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet,
    Ipv4Repr, UdpPacket, UdpRepr,
};

const ETHERNET_HEADER: usize = 14;
const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;

/// Room for a UDP payload in one unfragmented packet of `mtu`.
pub fn udp_room(mtu: u16) -> usize {
    usize::from(mtu).saturating_sub(IPV4_HEADER + UDP_HEADER)
}

/// An ethernet frame carrying `payload` from `src` to `dst` over UDP.
pub fn udp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let udp = UdpRepr { src_port: src.port(), dst_port: dst.port() };
    let ip = Ipv4Repr {
        src_addr: *src.ip(),
        dst_addr: *dst.ip(),
        next_header: IpProtocol::Udp,
        payload_len: UDP_HEADER + payload.len(),
        hop_limit: 64,
    };
    let ethernet = EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut bytes = vec![0u8; ETHERNET_HEADER + IPV4_HEADER + UDP_HEADER + payload.len()];
    let checksums = ChecksumCapabilities::default();
    let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
    ethernet.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet, &checksums);
    let mut datagram = UdpPacket::new_unchecked(packet.payload_mut());
    udp.emit(
        &mut datagram,
        &ip.src_addr.into(),
        &ip.dst_addr.into(),
        payload.len(),
        |buffer| buffer.copy_from_slice(payload),
        &checksums,
    );
    bytes
}

/// The limited broadcast address, where DHCP replies go before the client has an address.
pub const BROADCAST: Ipv4Addr = Ipv4Addr::BROADCAST;
