//! DHCPv4 messages (RFC 2131 layout, RFC 2132 options): encode what the client sends, decode
//! what servers answer. Hand-written, about 200 lines: the client needs a dozen options, and
//! a general DHCP crate (with its DNS-name machinery) would cost more of the 2.5 MB binary
//! budget than this whole module.
//!
//! Decoding never panics on hostile input: every length is checked, an option running past
//! the end is an error naming its code.

use std::net::Ipv4Addr;

pub const BOOTREQUEST: u8 = 1;
pub const BOOTREPLY: u8 = 2;
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Fixed header (236) + magic cookie (4).
pub const HEADER_LEN: usize = 240;
/// BOOTP's minimum message size; some relays and servers drop shorter ones.
pub const MIN_LEN: usize = 300;
/// The BROADCAST flag: answer to the broadcast address (we have no address yet).
pub const FLAG_BROADCAST: u16 = 0x8000;

pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const MTU: u8 = 26;
    pub const BROADCAST: u8 = 28;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMS: u8 = 55;
    pub const MAX_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const CLIENT_ID: u8 = 61;
    pub const END: u8 = 255;
}

/// Option 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    pub fn from_u8(v: u8) -> Option<Self> {
        use MessageType::*;
        Some(match v {
            1 => Discover,
            2 => Offer,
            3 => Request,
            4 => Decline,
            5 => Ack,
            6 => Nak,
            7 => Release,
            8 => Inform,
            _ => return None,
        })
    }
}

/// A DHCP message, Ethernet hardware addresses only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub op: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    /// Options in order, without PAD and END; a code may repeat (RFC 3396 concatenation is
    /// done by [`Message::option`]).
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Message {
    /// A client request of `kind` with the standard options (type, client id, max size,
    /// parameter request list).
    pub fn request(kind: MessageType, xid: u32, mac: [u8; 6]) -> Message {
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&mac);
        Message {
            op: BOOTREQUEST,
            xid,
            secs: 0,
            flags: FLAG_BROADCAST,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac,
            options: vec![
                (opt::MESSAGE_TYPE, vec![kind as u8]),
                (opt::CLIENT_ID, client_id),
                (opt::MAX_SIZE, 1500u16.to_be_bytes().to_vec()),
                (
                    opt::PARAMS,
                    vec![
                        opt::SUBNET_MASK,
                        opt::ROUTER,
                        opt::DNS,
                        opt::HOSTNAME,
                        opt::DOMAIN_NAME,
                        opt::MTU,
                        opt::BROADCAST,
                        opt::LEASE_TIME,
                        opt::RENEWAL_TIME,
                    ],
                ),
            ],
        }
    }

    /// Option `code`'s data, the pieces of a repeated option concatenated (RFC 3396).
    pub fn option(&self, code: u8) -> Option<Vec<u8>> {
        let mut found: Option<Vec<u8>> = None;
        for (c, v) in &self.options {
            if *c == code {
                found.get_or_insert_with(Vec::new).extend_from_slice(v);
            }
        }
        found
    }

    pub fn message_type(&self) -> Option<MessageType> {
        self.option(opt::MESSAGE_TYPE)
            .filter(|v| v.len() == 1)
            .and_then(|v| MessageType::from_u8(v[0]))
    }

    /// An option holding one IPv4 address.
    pub fn addr(&self, code: u8) -> Option<Ipv4Addr> {
        self.addrs(code).into_iter().next()
    }

    /// An option holding a list of IPv4 addresses (a trailing partial address is ignored).
    pub fn addrs(&self, code: u8) -> Vec<Ipv4Addr> {
        self.option(code)
            .map(|v| {
                v.chunks_exact(4)
                    .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn u32(&self, code: u8) -> Option<u32> {
        self.option(code)
            .filter(|v| v.len() == 4)
            .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    }

    pub fn u16(&self, code: u8) -> Option<u16> {
        self.option(code)
            .filter(|v| v.len() == 2)
            .map(|v| u16::from_be_bytes([v[0], v[1]]))
    }

    /// A text option (hostname, domain), trailing NULs removed; `None` unless printable ASCII.
    pub fn text(&self, code: u8) -> Option<String> {
        let v = self.option(code)?;
        let s = String::from_utf8(v).ok()?;
        let s = s.trim_end_matches('\0').to_string();
        (!s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() || c == ' ')).then_some(s)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(MIN_LEN);
        b.extend_from_slice(&[self.op, 1, 6, 0]);
        b.extend_from_slice(&self.xid.to_be_bytes());
        b.extend_from_slice(&self.secs.to_be_bytes());
        b.extend_from_slice(&self.flags.to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            b.extend_from_slice(&a.octets());
        }
        b.extend_from_slice(&self.chaddr);
        b.resize(236, 0); // chaddr padding, sname, file
        b.extend_from_slice(&MAGIC);
        for (code, data) in &self.options {
            // Longer data is split into several instances of the option (RFC 3396).
            for chunk in data.chunks(255) {
                b.push(*code);
                b.push(chunk.len() as u8);
                b.extend_from_slice(chunk);
            }
            if data.is_empty() {
                b.extend_from_slice(&[*code, 0]);
            }
        }
        b.push(opt::END);
        if b.len() < MIN_LEN {
            b.resize(MIN_LEN, 0);
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Message, String> {
        if b.len() < HEADER_LEN {
            return Err(format!("{} bytes, shorter than a DHCP header", b.len()));
        }
        if b[1] != 1 || b[2] != 6 {
            return Err(format!(
                "hardware type {} length {}: not Ethernet",
                b[1], b[2]
            ));
        }
        if b[236..240] != MAGIC {
            return Err("no DHCP magic cookie (a BOOTP message)".into());
        }
        let ip = |at: usize| Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]);
        let mut chaddr = [0u8; 6];
        chaddr.copy_from_slice(&b[28..34]);
        let mut options = Vec::new();
        let mut i = HEADER_LEN;
        while i < b.len() {
            let code = b[i];
            match code {
                opt::PAD => i += 1,
                opt::END => break,
                _ => {
                    let Some(&len) = b.get(i + 1) else {
                        return Err(format!("option {code}: no length byte"));
                    };
                    let end = i + 2 + len as usize;
                    let Some(data) = b.get(i + 2..end) else {
                        return Err(format!(
                            "option {code}: length {len} runs past the end of the message"
                        ));
                    };
                    options.push((code, data.to_vec()));
                    i = end;
                }
            }
        }
        Ok(Message {
            op: b[0],
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            secs: u16::from_be_bytes([b[8], b[9]]),
            flags: u16::from_be_bytes([b[10], b[11]]),
            ciaddr: ip(12),
            yiaddr: ip(16),
            siaddr: ip(20),
            giaddr: ip(24),
            chaddr,
            options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x42];

    #[test]
    fn discover_layout() {
        let m = Message::request(MessageType::Discover, 0x1234_5678, MAC);
        let b = m.encode();
        assert_eq!(b.len(), MIN_LEN);
        assert_eq!(&b[0..4], &[1, 1, 6, 0]);
        assert_eq!(&b[4..8], &[0x12, 0x34, 0x56, 0x78]);
        assert_eq!(&b[10..12], &[0x80, 0]);
        assert_eq!(&b[28..34], &MAC);
        assert_eq!(&b[236..240], &MAGIC);
        assert_eq!(&b[240..243], &[53, 1, 1]);
        let back = Message::decode(&b).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.message_type(), Some(MessageType::Discover));
    }

    #[test]
    fn option_accessors() {
        let mut m = Message::request(MessageType::Ack, 1, MAC);
        m.op = BOOTREPLY;
        m.options = vec![
            (opt::MESSAGE_TYPE, vec![5]),
            (opt::SUBNET_MASK, vec![255, 255, 255, 0]),
            (opt::ROUTER, vec![192, 168, 100, 1, 192, 168, 100, 254]),
            (opt::DNS, vec![1, 1, 1, 1, 9, 9, 9]), // trailing partial address ignored
            (opt::HOSTNAME, b"vm-1\0".to_vec()),
            (opt::DOMAIN_NAME, b"bad\x01name".to_vec()),
            (opt::MTU, vec![0x05, 0x78]),
            (opt::LEASE_TIME, 3600u32.to_be_bytes().to_vec()),
            (opt::DOMAIN_NAME + 100, vec![1]),
            (opt::DOMAIN_NAME + 100, vec![2]),
        ];
        let m = Message::decode(&m.encode()).unwrap();
        assert_eq!(m.message_type(), Some(MessageType::Ack));
        assert_eq!(
            m.addr(opt::SUBNET_MASK),
            Some(Ipv4Addr::new(255, 255, 255, 0))
        );
        assert_eq!(m.addrs(opt::ROUTER).len(), 2);
        assert_eq!(m.addrs(opt::DNS), vec![Ipv4Addr::new(1, 1, 1, 1)]);
        assert_eq!(m.text(opt::HOSTNAME).as_deref(), Some("vm-1"));
        assert_eq!(m.text(opt::DOMAIN_NAME), None);
        assert_eq!(m.u16(opt::MTU), Some(1400));
        assert_eq!(m.u32(opt::LEASE_TIME), Some(3600));
        assert_eq!(m.option(opt::DOMAIN_NAME + 100), Some(vec![1, 2]));
        assert_eq!(m.option(opt::SERVER_ID), None);
    }

    #[test]
    fn malformed_messages_are_errors() {
        let good = Message::request(MessageType::Discover, 7, MAC).encode();
        assert!(Message::decode(&good[..200])
            .unwrap_err()
            .contains("shorter"));
        let mut b = good.clone();
        b[236] = 0;
        assert!(Message::decode(&b).unwrap_err().contains("magic"));
        let mut b = good.clone();
        b[1] = 6;
        assert!(Message::decode(&b).unwrap_err().contains("not Ethernet"));
        let mut b = good[..HEADER_LEN].to_vec();
        b.extend_from_slice(&[51, 4, 0, 0]);
        assert!(Message::decode(&b).unwrap_err().contains("option 51"));
        let mut b = good[..HEADER_LEN].to_vec();
        b.push(12);
        assert!(Message::decode(&b).unwrap_err().contains("no length"));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn encode_decode_round_trips(
            xid in any::<u32>(),
            mac in any::<[u8; 6]>(),
            opts in proptest::collection::vec((1u8..=254, proptest::collection::vec(any::<u8>(), 1..40)), 0..8),
        ) {
            let mut m = Message::request(MessageType::Request, xid, mac);
            m.options = opts;
            let back = Message::decode(&m.encode()).unwrap();
            prop_assert_eq!(back, m);
        }
    }
}
