//! The tun@openssh.com packet framing (OpenSSH's PROTOCOL, section 2.3): in point-to-point
//! mode each message is a 4-byte address family and an IP packet; in ethernet mode, the
//! frame alone. The family numbers on the wire are OpenBSD's (INET 2, INET6 24), whatever
//! the peer's own system uses, because OpenSSH began there and its ports translate.

/// AF_INET on the wire.
const WIRE_INET: u32 = 2;
/// OpenBSD's AF_INET6, which every OpenSSH puts on the wire.
const WIRE_INET6: u32 = 24;
/// AF_INET6 as peers without that translation might send it: Linux (10), FreeBSD (28),
/// macOS (30). Accepted when reading, never sent.
const OTHER_INET6: [u32; 3] = [10, 28, 30];

/// A packet read from the local tun device, as a point-to-point message; `None` for
/// anything that is not IPv4 or IPv6 (nothing else can cross a point-to-point tunnel).
pub fn to_wire(packet: &[u8]) -> Option<Vec<u8>> {
    let af = match packet.first()? >> 4 {
        4 => WIRE_INET,
        6 => WIRE_INET6,
        _ => return None,
    };
    let mut out = Vec::with_capacity(4 + packet.len());
    out.extend_from_slice(&af.to_be_bytes());
    out.extend_from_slice(packet);
    Some(out)
}

/// The IP packet inside a point-to-point message; `None` for an unknown family or a
/// message too short to hold one (dropped, as a router drops a malformed packet).
pub fn from_wire(message: &[u8]) -> Option<&[u8]> {
    let (head, packet) = message.split_at_checked(4)?;
    let af = u32::from_be_bytes(head.try_into().ok()?);
    let version = packet.first()? >> 4;
    let ok = match af {
        WIRE_INET => version == 4,
        a if a == WIRE_INET6 || OTHER_INET6.contains(&a) => version == 6,
        _ => false,
    };
    ok.then_some(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip_with_openssh_family_numbers() {
        let v4 = [0x45u8, 0, 0, 20, 1, 2, 3];
        let v6 = [0x60u8, 0, 0, 0, 9];
        let w4 = to_wire(&v4).expect("ipv4");
        let w6 = to_wire(&v6).expect("ipv6");
        assert_eq!(&w4[..4], &[0, 0, 0, 2]);
        assert_eq!(&w6[..4], &[0, 0, 0, 24]);
        assert_eq!(from_wire(&w4), Some(&v4[..]));
        assert_eq!(from_wire(&w6), Some(&v6[..]));
        // Linux's own AF_INET6 from a peer that does not translate.
        let mut linux6 = vec![0, 0, 0, 10];
        linux6.extend_from_slice(&v6);
        assert_eq!(from_wire(&linux6), Some(&v6[..]));
    }

    #[test]
    fn malformed_messages_are_dropped_not_written() {
        assert_eq!(to_wire(&[]), None);
        assert_eq!(to_wire(&[0x10, 0]), None, "not IP");
        assert_eq!(from_wire(&[]), None);
        assert_eq!(from_wire(&[0, 0, 0, 2]), None, "no packet");
        assert_eq!(from_wire(&[0, 0, 0, 7, 0x45]), None, "unknown family");
        assert_eq!(
            from_wire(&[0, 0, 0, 2, 0x60]),
            None,
            "family and version disagree"
        );
    }
}
