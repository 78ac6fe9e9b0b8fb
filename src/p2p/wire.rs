//! The gossip wire format: what a gossipsub message on [`TOPIC`](super::TOPIC) looks like
//! beyond the signed event it carries (`validate`).
//!
//! A message is anonymous: no `from`, sequence number, signature or key of gossipsub's own.
//! The event inside is signed by its author, and that signature is what names the author
//! (`validate`); gossipsub's own signature would only repeat it, about 120 bytes on every copy
//! of every message. Without a publisher there is no sequence number either, so a message's id
//! is its content: the first [`MESSAGE_ID_BYTES`] of the SHA-256 of the signed event. The same
//! event published twice (or by two nodes) is then one message, de-duplicated by gossipsub, and
//! IHAVE, IWANT and IDONTWANT carry 16-byte ids instead of a peer id and a counter in text.
//!
//! A message's data is the signed event compressed ([`Deflate`]): raw DEFLATE (RFC 1951)
//! with a preset dictionary of what events have in common ([`DICTIONARY`]: the envelope and the
//! event's field names, common values and SIP headers), which takes a typical event from
//! about 950 bytes to about 320. The id is of the event as signed, not of its compressed form.
//! Inflating stops at [`MAX_WIRE_EVENT_BYTES`](super::validate::MAX_WIRE_EVENT_BYTES): data
//! that does not inflate to a whole stream within that is refused by gossipsub (scored as an
//! invalid message) before anything reads it. The dictionary is part of the format: changing
//! it changes the topic's version.
//!
//! A peer that speaks another wire format (a message with gossipsub's signature or sequence
//! number, or data that is not this compression) is refused by gossipsub itself and scored
//! down; the topic's version says which format a node speaks.
//!
//! No I/O, no state: the pieces are public so that test peers speak exactly this format.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use libp2p::gossipsub::{self, DataTransform, MessageId, RawMessage, TopicHash, ValidationMode};
use sha2::{Digest as _, Sha256};

use super::validate::MAX_WIRE_EVENT_BYTES;

/// The bytes of a message id: 128 bits of SHA-256. Ids only need to tell messages apart;
/// finding a second message with a given honest message's id is a second-preimage search, out
/// of reach at this length.
pub const MESSAGE_ID_BYTES: usize = 16;

/// A message's id: the start of the SHA-256 of its data (the signed event).
pub fn message_id(message: &gossipsub::Message) -> MessageId {
    let digest = Sha256::digest(&message.data);
    MessageId::new(digest.get(..MESSAGE_ID_BYTES).unwrap_or(&digest))
}

/// Gossipsub's settings that make up the wire format; the node adds its own tuning (mesh,
/// gossip, limits) on top.
pub fn config_builder() -> gossipsub::ConfigBuilder {
    let mut b = gossipsub::ConfigBuilder::default();
    b.validation_mode(ValidationMode::Anonymous)
        .message_id_fn(message_id)
        // A peer may forward our own message back to us (without a publisher it cannot tell
        // that it is ours): that is a duplicate, not a fault to score it down for.
        .allow_self_origin(true);
    b
}

/// The preset dictionary of the compression: text shared events have in common, the most
/// common last (nearer matches cost fewer bits). Strings as they stand in the JSON envelope,
/// so `\r\n` is the escaped form.
pub const DICTIONARY: &[u8] = concat!(
    r#"a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"#,
    r#"a=fmtp:101 0-16\r\na=sendrecv\r\nv=0\r\no=- 0 0 IN IP4 \r\ns=-\r\nc=IN IP4 \r\nt=0 0\r\n"#,
    r#"m=audio  RTP/AVP 0 8 18 101\r\nContent-Type: application/sdp\r\n"#,
    r#"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY, REFER\r\n"#,
    r#"Supported: replaces, timer\r\nAuthorization: Digest username=\"\", realm=\"\", "#,
    r#"nonce=\"\", uri=\"sip:\", response=\"\", algorithm=MD5\r\nExpires: 3600\r\n"#,
    r#"REGISTER sip: SIP/2.0\r\nINVITE sip: SIP/2.0\r\nCSeq: 1 REGISTER\r\nCSeq: 1 INVITE\r\n"#,
    r#"Contact: <sip:>\r\n\"sipvicious\"<sip:100@1.1.1.1>Accept: application/sdp\r\n"#,
    r#"Content-Length: 0\r\n"#,
    r#""sip_method":"REGISTER","sip_method":"INVITE","sip_user_agent":"sipvicious","#,
    r#""sip_user_agent":"pplsip","transport_type":"TCP","transport_type":"TLS","#,
    r#""collected_method":"responsive","#,
    r#"{"key":"","signature":"","event":{"app_name":"sentrypeer","app_version":"","#,
    r#""event_timestamp":"20","event_uuid":"","created_by_node_id":"","#,
    r#""collected_method":"passive","transport_type":"UDP","source_ip":"","#,
    r#""destination_ip":"0.0.0.0:5060","called_number":"","sip_method":"OPTIONS","#,
    r#""sip_user_agent":"friendly-scanner","sip_message":"OPTIONS sip:100@0.0.0.0 SIP/2.0\r\n"#,
    r#"Via: SIP/2.0/UDP :5060;branch=z9hG4bK-;rport\r\nMax-Forwards: 70\r\n"#,
    r#"To: <sip:@0.0.0.0>\r\nFrom: <sip:@0.0.0.0>;tag=\r\nUser-Agent: friendly-scanner\r\n"#,
    r#"Call-ID: \r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"}}"#,
)
.as_bytes();

/// DEFLATE's window, 4 KiB: it holds the dictionary and a typical event (2 KiB at most), and
/// costs each side less memory than the usual 32 KiB. Longer events still compress, against
/// less of the dictionary. Data that reaches further back is refused.
const WINDOW_BITS: u8 = 12;

/// Why a message's data could not be inflated.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    #[error("the data inflates to more than {MAX_WIRE_EVENT_BYTES} bytes")]
    TooLarge,
    #[error("the data is not a whole compressed stream")]
    Truncated,
    #[error("the data is not compressed as the wire format says: {0}")]
    Corrupt(#[from] flate2::DecompressError),
}

/// The compressed form of `data` (an event as signed).
pub fn deflate(data: &[u8]) -> Result<Vec<u8>, flate2::CompressError> {
    let mut c = Compress::new_with_window_bits(Compression::best(), false, WINDOW_BITS);
    c.set_dictionary(DICTIONARY)?;
    // DEFLATE grows incompressible data by 5 bytes per stored block of up to 64 KiB, and a
    // little at the end: this is enough in one go, and more is given if not.
    let mut out = Vec::with_capacity(data.len() + 64);
    loop {
        let input = data.get(offset(c.total_in())..).unwrap_or_default();
        if c.compress_vec(input, &mut out, FlushCompress::Finish)? == Status::StreamEnd {
            return Ok(out);
        }
        out.reserve(64);
    }
}

/// What [`deflate`] made of an event: the event's bytes, at most [`MAX_WIRE_EVENT_BYTES`].
pub fn inflate(data: &[u8]) -> Result<Vec<u8>, InflateError> {
    let mut d = Decompress::new_with_window_bits(false, WINDOW_BITS);
    d.set_dictionary(DICTIONARY)?;
    // Events are about three times their compressed size; grow up to the bound as needed.
    let mut out = Vec::with_capacity((data.len() * 4).clamp(1024, MAX_WIRE_EVENT_BYTES));
    loop {
        let input = data.get(offset(d.total_in())..).unwrap_or_default();
        let status = d.decompress_vec(input, &mut out, FlushDecompress::Finish)?;
        if status == Status::StreamEnd {
            // Nothing may follow the stream, and the bound holds whatever the allocator gave.
            if offset(d.total_in()) != data.len() {
                return Err(InflateError::Truncated);
            }
            if out.len() > MAX_WIRE_EVENT_BYTES {
                return Err(InflateError::TooLarge);
            }
            return Ok(out);
        }
        // Short of the end with room left in `out`: the input ran out mid-stream.
        if out.len() < out.capacity() {
            return Err(InflateError::Truncated);
        }
        if out.len() >= MAX_WIRE_EVENT_BYTES {
            return Err(InflateError::TooLarge);
        }
        out.reserve_exact(out.len().min(MAX_WIRE_EVENT_BYTES - out.len()));
    }
}

/// A stream position as an index (a position past `usize` is past any slice).
fn offset(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Gossipsub's transform for the wire format: data deflated on the way out, inflated (within
/// its bound) on the way in.
#[derive(Debug, Default, Clone, Copy)]
pub struct Deflate;

impl DataTransform for Deflate {
    fn inbound_transform(&self, raw: RawMessage) -> Result<gossipsub::Message, std::io::Error> {
        let data = inflate(&raw.data).map_err(std::io::Error::other)?;
        Ok(gossipsub::Message {
            source: raw.source,
            data,
            sequence_number: raw.sequence_number,
            topic: raw.topic,
        })
    }

    fn outbound_transform(
        &self,
        _topic: &TopicHash,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, std::io::Error> {
        deflate(&data).map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &[u8]) -> gossipsub::Message {
        gossipsub::Message {
            source: None,
            data: data.to_vec(),
            sequence_number: None,
            topic: gossipsub::IdentTopic::new(super::super::TOPIC).hash(),
        }
    }

    #[test]
    fn a_message_id_is_the_start_of_the_sha256_of_its_data() {
        // SHA-256("abc"), FIPS 180-2.
        assert_eq!(
            message_id(&message(b"abc")).0,
            [
                0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
                0x22, 0x23
            ]
        );
        assert_ne!(message_id(&message(b"abd")), message_id(&message(b"abc")));
    }

    /// A real event as a node shares it: hidden, encoded and signed.
    fn signed_event() -> Vec<u8> {
        let signer =
            super::super::validate::Signer::new(&libp2p::identity::Keypair::generate_ed25519())
                .unwrap();
        let mut e = crate::event::tests::sample();
        e.uuid = uuid::Uuid::new_v4();
        let bytes = super::super::validate::encode(&e, signer.node_id(), &Default::default());
        signer.seal(&bytes)
    }

    #[test]
    fn an_event_compresses_to_about_a_third_and_inflates_to_the_same_bytes() {
        let event = signed_event();
        let small = deflate(&event).unwrap();
        assert!(
            small.len() * 2 < event.len(),
            "{} -> {} bytes",
            event.len(),
            small.len()
        );
        assert_eq!(inflate(&small).unwrap(), event);
        // Anything at all round-trips, incompressible or empty.
        let noise: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for data in [&noise[..], b"", DICTIONARY] {
            assert_eq!(inflate(&deflate(data).unwrap()).unwrap(), data);
        }
    }

    #[test]
    fn data_that_is_not_one_whole_stream_is_refused() {
        let small = deflate(&signed_event()).unwrap();
        assert!(matches!(inflate(b""), Err(InflateError::Truncated)));
        for cut in [1, small.len() / 2, small.len() - 1] {
            assert!(
                matches!(inflate(&small[..cut]), Err(InflateError::Truncated)),
                "cut at {cut}"
            );
        }
        let mut trailing = small.clone();
        trailing.push(0);
        assert!(matches!(inflate(&trailing), Err(InflateError::Truncated)));
        // The plain JSON of an event (a peer that does not compress) is not a stream.
        assert!(inflate(&signed_event()).is_err());
        // Nor is junk, whatever its bytes.
        for seed in 0..200u32 {
            let junk: Vec<u8> = (0..64u32)
                .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8)
                .collect();
            if let Ok(out) = inflate(&junk) {
                assert!(out.len() <= MAX_WIRE_EVENT_BYTES);
            }
        }
    }

    #[test]
    fn inflating_stops_at_the_largest_event() {
        let at_limit = vec![b'a'; MAX_WIRE_EVENT_BYTES];
        assert_eq!(
            inflate(&deflate(&at_limit).unwrap()).unwrap().len(),
            MAX_WIRE_EVENT_BYTES
        );
        let over = vec![b'a'; MAX_WIRE_EVENT_BYTES + 1];
        assert!(matches!(
            inflate(&deflate(&over).unwrap()),
            Err(InflateError::TooLarge)
        ));
        // A bomb: 64 MiB of zeros is about 64 KiB compressed, and costs no more than the bound.
        let bomb = deflate(&vec![0u8; 64 << 20]).unwrap();
        assert!(bomb.len() < 128 * 1024, "{}", bomb.len());
        assert!(matches!(inflate(&bomb), Err(InflateError::TooLarge)));
    }

    #[test]
    fn the_transform_inflates_what_it_deflated_and_refuses_the_rest() {
        let topic = gossipsub::IdentTopic::new(super::super::TOPIC).hash();
        let event = signed_event();
        let sent = Deflate.outbound_transform(&topic, event.clone()).unwrap();
        let raw = |data: Vec<u8>| RawMessage {
            source: None,
            data,
            sequence_number: None,
            topic: topic.clone(),
            signature: None,
            key: None,
            validated: false,
        };
        let got = Deflate.inbound_transform(raw(sent)).unwrap();
        assert_eq!(got.data, event);
        assert_eq!(message_id(&got), message_id(&message(&event)));
        assert!(Deflate.inbound_transform(raw(event)).is_err());
    }

    #[test]
    fn the_wire_settings_build_with_an_anonymous_behaviour() {
        let config = config_builder().build().unwrap();
        assert!(matches!(
            config.validation_mode(),
            ValidationMode::Anonymous
        ));
        assert!(config.allow_self_origin());
        gossipsub::Behaviour::<Deflate>::new_with_transform(
            gossipsub::MessageAuthenticity::Anonymous,
            config,
            Deflate,
        )
        .unwrap();
    }
}
