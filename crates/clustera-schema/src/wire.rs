//! The Confluent wire format: one magic byte `0`, the schema id as a 4-byte big-endian
//! integer, then the payload (an Avro binary datum, or JSON text for JSON Schema).
//!
//! Every Schema Registry client (Confluent's Java, Python, Go and .NET serializers, Karapace,
//! Redpanda, Apicurio in its Confluent-compatible mode) frames records this way, so it is what
//! makes a topic readable by all of them. Protobuf's extra message-index list is not handled.

use crate::SchemaError;

/// The first byte of every framed record.
pub const MAGIC_BYTE: u8 = 0;

/// Bytes before the payload: the magic byte and the schema id.
pub const HEADER_LEN: usize = 5;

/// A schema id as the registry assigns it.
pub type SchemaId = u32;

/// A record split into its schema id and payload, borrowing the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed<'a> {
    /// The registry's id of the schema the payload was written with.
    pub schema_id: SchemaId,
    /// The encoded value.
    pub payload: &'a [u8],
}

/// Splits a framed record. Fails, naming what is wrong, on fewer than five bytes or a first
/// byte other than `0` (a record written without a registry, or with another framing).
pub fn decode(bytes: &[u8]) -> Result<Framed<'_>, SchemaError> {
    let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(SchemaError::Frame(format!(
            "{} bytes, shorter than the 5-byte header (magic byte 0 and schema id)",
            bytes.len()
        )));
    };
    if header[0] != MAGIC_BYTE {
        return Err(SchemaError::Frame(format!(
            "first byte is {:#04x}, not the magic byte 0: not written by a Schema Registry serializer",
            header[0]
        )));
    }
    let schema_id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    Ok(Framed { schema_id, payload })
}

/// Frames `payload` written with schema `schema_id`.
pub fn encode(schema_id: SchemaId, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_bytes() {
        // Schema id 258 (0x102), payload "{}": what confluent-kafka's JSONSerializer writes.
        let bytes = [0, 0, 0, 1, 2, b'{', b'}'];
        let framed = decode(&bytes).unwrap();
        assert_eq!(framed.schema_id, 258);
        assert_eq!(framed.payload, b"{}");
        assert_eq!(encode(258, b"{}"), bytes);
    }

    #[test]
    fn empty_payload_is_framed() {
        let framed = decode(&[0, 0, 0, 0, 7]).unwrap();
        assert_eq!((framed.schema_id, framed.payload.len()), (7, 0));
    }

    #[test]
    fn short_and_unframed_input_is_refused_with_the_reason() {
        let err = decode(&[0, 0, 1]).unwrap_err().to_string();
        assert!(err.contains("3 bytes"), "{err}");
        let err = decode(br#"{"id":1}"#).unwrap_err().to_string();
        assert!(err.contains("0x7b") && err.contains("magic byte"), "{err}");
    }

    proptest! {
        #[test]
        fn round_trips(id in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let bytes = encode(id, &payload);
            let framed = decode(&bytes).unwrap();
            prop_assert_eq!(framed.schema_id, id);
            prop_assert_eq!(framed.payload, &payload[..]);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = decode(&bytes);
        }
    }
}
