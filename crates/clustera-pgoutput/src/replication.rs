//! The streaming replication sub-protocol: what a walsender and its client exchange inside
//! `CopyData` messages once `START_REPLICATION` has switched the session to CopyBoth mode
//! (PostgreSQL's "Streaming Replication Protocol" documentation). Pure: bytes in, messages
//! out, bytes to send; the connection, authentication and framing of the outer protocol are
//! the caller's.
//!
//! The server sends:
//! - `w` XLogData: a chunk of the stream (here one pgoutput message, see [`crate::parse`]);
//! - `k` primary keepalive: the server's position, and whether it wants an answer now.
//!
//! The client sends `r` standby status updates: the positions it has written, flushed and
//! applied. For a logical slot the flushed position becomes the slot's
//! `confirmed_flush_lsn`: the server may drop WAL before it, and starts the next session
//! there.

use crate::{PgOutputError, Reader};

/// Microseconds between 1970-01-01 and 2000-01-01, PostgreSQL's epoch for the timestamps
/// of this protocol.
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// One message from the walsender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage<'a> {
    /// A chunk of the replication stream.
    XLogData {
        /// WAL position of the start of the data.
        wal_start: u64,
        /// The server's current end of WAL.
        wal_end: u64,
        /// When the server sent it, microseconds since 2000-01-01.
        send_time: i64,
        /// The payload: one pgoutput message.
        data: &'a [u8],
    },
    /// The server's keepalive.
    Keepalive {
        /// The position up to which the server has sent everything: with nothing
        /// outstanding, a client may confirm it.
        wal_end: u64,
        /// When the server sent it, microseconds since 2000-01-01.
        send_time: i64,
        /// The server asks for a status update now (else it disconnects at
        /// `wal_sender_timeout`).
        reply_requested: bool,
    },
}

/// Decodes the payload of one `CopyData` message from a walsender.
pub fn parse_copy_data(bytes: &[u8]) -> Result<ReplicationMessage<'_>, PgOutputError> {
    let mut r = Reader { bytes };
    match r.u8("replication message tag")? {
        b'w' => Ok(ReplicationMessage::XLogData {
            wal_start: r.u64("XLogData start")?,
            wal_end: r.u64("XLogData end")?,
            send_time: r.u64("XLogData send time")? as i64,
            data: r.bytes,
        }),
        b'k' => Ok(ReplicationMessage::Keepalive {
            wal_end: r.u64("keepalive end")?,
            send_time: r.u64("keepalive send time")? as i64,
            reply_requested: r.u8("keepalive reply flag")? != 0,
        }),
        other => Err(PgOutputError::UnknownReplicationMessage(other)),
    }
}

/// The payload of a standby status update (`r`), to send in a `CopyData` message.
/// `now_us` is the client's clock in microseconds since 1970-01-01 (converted here).
pub fn standby_status_update(
    written: u64,
    flushed: u64,
    applied: u64,
    now_us: i64,
    reply_requested: bool,
) -> [u8; 34] {
    let mut out = [0u8; 34];
    out[0] = b'r';
    out[1..9].copy_from_slice(&written.to_be_bytes());
    out[9..17].copy_from_slice(&flushed.to_be_bytes());
    out[17..25].copy_from_slice(&applied.to_be_bytes());
    out[25..33].copy_from_slice(&(now_us - PG_EPOCH_OFFSET_US).to_be_bytes());
    out[33] = u8::from(reply_requested);
    out
}

/// `name` as a quoted SQL identifier (`"a""b"`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as a quoted SQL string literal (`'it''s'`). The replication grammar's option
/// values are string literals with standard quoting.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The `START_REPLICATION` command for a logical slot decoded by pgoutput, from `start`
/// (0 lets the server start at the slot's confirmed position), with protocol version
/// `proto_version` and the publications given. `publication_names` is one string of
/// comma-separated identifiers, each quoted so that any name survives.
pub fn start_replication_command(
    slot: &str,
    start: u64,
    proto_version: u32,
    publications: &[&str],
) -> String {
    let names = publications
        .iter()
        .map(|p| quote_ident(p))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "START_REPLICATION SLOT {} LOGICAL {} (proto_version {}, publication_names {})",
        quote_ident(slot),
        crate::format_lsn(start),
        quote_literal(&proto_version.to_string()),
        quote_literal(&names),
    )
}

/// `CREATE_REPLICATION_SLOT` for a pgoutput slot that exports its snapshot: the answer's
/// `snapshot_name` can be imported (`SET TRANSACTION SNAPSHOT`) by another session while this
/// one stays idle, to read exactly the rows committed before the slot's first change.
pub fn create_slot_command(slot: &str) -> String {
    format!(
        "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
        quote_ident(slot)
    )
}

/// Parses an LSN as PostgreSQL writes it (`16/B374D848`).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    let high = u32::from_str_radix(high, 16).ok()?;
    let low = u32::from_str_radix(low, 16).ok()?;
    Some((u64::from(high) << 32) | u64::from(low))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xlogdata_and_keepalive_decode() {
        let mut w = vec![b'w'];
        w.extend(0x10u64.to_be_bytes());
        w.extend(0x20u64.to_be_bytes());
        w.extend(7i64.to_be_bytes());
        w.extend(b"Bpayload");
        assert_eq!(
            parse_copy_data(&w).unwrap(),
            ReplicationMessage::XLogData {
                wal_start: 0x10,
                wal_end: 0x20,
                send_time: 7,
                data: b"Bpayload"
            }
        );
        let mut k = vec![b'k'];
        k.extend(0x1_0000_0030u64.to_be_bytes());
        k.extend(9i64.to_be_bytes());
        k.push(1);
        assert_eq!(
            parse_copy_data(&k).unwrap(),
            ReplicationMessage::Keepalive {
                wal_end: 0x1_0000_0030,
                send_time: 9,
                reply_requested: true
            }
        );
        // Truncated anywhere: an error, never a panic.
        for cut in 0..k.len() {
            assert!(parse_copy_data(&k[..cut]).is_err(), "cut at {cut}");
        }
        for cut in 0..25 {
            assert!(parse_copy_data(&w[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            parse_copy_data(b"x"),
            Err(PgOutputError::UnknownReplicationMessage(b'x'))
        );
    }

    #[test]
    fn status_update_layout() {
        let u = standby_status_update(1, 2, 3, PG_EPOCH_OFFSET_US + 5, true);
        assert_eq!(u[0], b'r');
        assert_eq!(u[1..9], 1u64.to_be_bytes());
        assert_eq!(u[9..17], 2u64.to_be_bytes());
        assert_eq!(u[17..25], 3u64.to_be_bytes());
        assert_eq!(u[25..33], 5i64.to_be_bytes());
        assert_eq!(u[33], 1);
    }

    #[test]
    fn start_command_quotes_every_name() {
        assert_eq!(
            start_replication_command("my\"slot", 0x1_0000_00FF, 1, &["pub", "it's"]),
            "START_REPLICATION SLOT \"my\"\"slot\" LOGICAL 1/FF \
             (proto_version '1', publication_names '\"pub\",\"it''s\"')"
        );
    }

    #[test]
    fn lsns_round_trip() {
        for lsn in [0, 1, 0x16_B374_D848, u64::MAX] {
            assert_eq!(parse_lsn(&crate::format_lsn(lsn)), Some(lsn));
        }
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        for bad in ["", "16", "16/", "/1", "G/1", "1/1/1"] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
    }
}
