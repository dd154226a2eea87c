//! The DHCP server of the gateway: one guest, one address. It offers the configured address
//! with the gateway as router and DNS server, the mask and the MTU, and acknowledges a request
//! for that address (renewals included, so a changed MTU reaches the guest on its next renew);
//! a request for any other address is refused with a NAK, so that a guest that remembers an
//! old lease asks again.

use std::net::Ipv4Addr;

use smoltcp::wire::{DhcpMessageType, DhcpOption, DhcpPacket, DhcpRepr};

use super::Config;

/// The lease, renewed by the guest at half of it.
pub const LEASE_SECS: u32 = 3600;
/// DHCP option 26, the interface MTU.
const OPTION_MTU: u8 = 26;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

/// What the server answers to one message from the guest.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// A reply: the UDP payload, and the client's MAC it goes to.
    Reply { payload: Vec<u8>, client: [u8; 6] },
    /// Nothing to say (a release, a decline, a message for another server).
    Silent,
}

/// Why a message was not understood.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

fn mask(prefix_len: u8) -> Ipv4Addr {
    let bits = u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0);
    Ipv4Addr::from(bits)
}

/// Answers the DHCP message in `payload` (a UDP payload sent to port 67).
pub fn answer(config: &Config, payload: &[u8]) -> Result<Answer, Malformed> {
    let packet = DhcpPacket::new_checked(payload).map_err(|_| Malformed)?;
    let request = DhcpRepr::parse(&packet).map_err(|_| Malformed)?;
    if request.server_identifier.is_some_and(|server| server != config.gateway) {
        return Ok(Answer::Silent);
    }
    let wanted = request.requested_ip.or(Some(request.client_ip).filter(|ip| !ip.is_unspecified()));
    let message_type = match request.message_type {
        DhcpMessageType::Discover => DhcpMessageType::Offer,
        DhcpMessageType::Request if wanted.is_none_or(|ip| ip == config.guest) => {
            DhcpMessageType::Ack
        }
        DhcpMessageType::Request => DhcpMessageType::Nak,
        _ => return Ok(Answer::Silent),
    };
    let nak = message_type == DhcpMessageType::Nak;
    let mtu = config.mtu.to_be_bytes();
    let options = [DhcpOption { kind: OPTION_MTU, data: &mtu }];
    let mut dns = heapless::Vec::new();
    let _ = dns.push(config.gateway);
    let reply = DhcpRepr {
        message_type,
        transaction_id: request.transaction_id,
        secs: 0,
        client_hardware_address: request.client_hardware_address,
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip: if nak { Ipv4Addr::UNSPECIFIED } else { config.guest },
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: (!nak).then_some(config.gateway),
        subnet_mask: (!nak).then(|| mask(config.prefix_len)),
        relay_agent_ip: request.relay_agent_ip,
        broadcast: request.broadcast,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(config.gateway),
        parameter_request_list: None,
        dns_servers: (!nak).then_some(dns),
        max_size: None,
        lease_duration: (!nak).then_some(LEASE_SECS),
        renew_duration: (!nak).then_some(LEASE_SECS / 2),
        rebind_duration: (!nak).then_some(LEASE_SECS * 7 / 8),
        additional_options: if nak { &[] } else { &options },
    };
    let mut bytes = vec![0u8; reply.buffer_len()];
    let mut packet = DhcpPacket::new_unchecked(&mut bytes[..]);
    reply.emit(&mut packet).map_err(|_| Malformed)?;
    Ok(Answer::Reply { payload: bytes, client: request.client_hardware_address.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_from_prefix_lengths() {
        assert_eq!(mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(mask(16), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(mask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(mask(32), Ipv4Addr::BROADCAST);
    }

    /// A DISCOVER (or a REQUEST for `requested`) from the guest's MAC.
    fn from_guest(message_type: DhcpMessageType, requested: Option<Ipv4Addr>) -> Vec<u8> {
        let request = DhcpRepr {
            message_type,
            transaction_id: 0x3903_f326,
            secs: 0,
            client_hardware_address: smoltcp::wire::EthernetAddress([2, 0, 0, 0, 0, 1]),
            client_ip: Ipv4Addr::UNSPECIFIED,
            your_ip: Ipv4Addr::UNSPECIFIED,
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip: requested,
            client_identifier: None,
            server_identifier: None,
            parameter_request_list: Some(&[1, 3, 6, 26]),
            dns_servers: None,
            max_size: None,
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let mut bytes = vec![0; request.buffer_len()];
        request.emit(&mut DhcpPacket::new_unchecked(&mut bytes[..])).expect("emits");
        bytes
    }

    fn reply(answer: Answer) -> Vec<u8> {
        match answer {
            Answer::Reply { payload, client } => {
                assert_eq!(client, [2, 0, 0, 0, 0, 1], "to the client's MAC");
                payload
            }
            Answer::Silent => panic!("no reply"),
        }
    }

    #[test]
    fn the_offer_carries_the_network_and_its_mtu() {
        let config = Config { mtu: 1400, ..Config::default() };
        let offer =
            reply(answer(&config, &from_guest(DhcpMessageType::Discover, None)).expect("ok"));
        let packet = DhcpPacket::new_checked(&offer[..]).expect("a DHCP packet");
        let repr = DhcpRepr::parse(&packet).expect("parses");
        assert_eq!(repr.message_type, DhcpMessageType::Offer);
        assert_eq!(repr.your_ip, config.guest);
        assert_eq!(repr.router, Some(config.gateway));
        assert_eq!(repr.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(repr.lease_duration, Some(LEASE_SECS));
        let mtu = packet.options().find(|o| o.kind == OPTION_MTU).map(|o| o.data.to_vec());
        assert_eq!(mtu, Some(1400u16.to_be_bytes().to_vec()));
    }

    #[test]
    fn a_request_for_another_address_is_refused() {
        let config = Config::default();
        let other = Some(Ipv4Addr::new(10, 0, 2, 99));
        let nak = reply(answer(&config, &from_guest(DhcpMessageType::Request, other)).expect("ok"));
        let packet = DhcpPacket::new_checked(&nak[..]).expect("a DHCP packet");
        let repr = DhcpRepr::parse(&packet).expect("parses");
        assert_eq!(repr.message_type, DhcpMessageType::Nak);
        let ours = Some(config.guest);
        let ack = reply(answer(&config, &from_guest(DhcpMessageType::Request, ours)).expect("ok"));
        let packet = DhcpPacket::new_checked(&ack[..]).expect("a DHCP packet");
        assert_eq!(DhcpRepr::parse(&packet).expect("parses").message_type, DhcpMessageType::Ack);
    }

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(answer(&Config::default(), b"not dhcp"), Err(Malformed));
    }
}
