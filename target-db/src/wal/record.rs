//! One record on disk: `[len: u32 LE][crc32c of payload: u32 LE][payload]`.

pub const HEADER: usize = 8;
/// Larger lengths are not records but garbage (a torn or corrupt header).
pub const MAX_PAYLOAD: u32 = 64 << 20;

pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What is at an offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Record {
        payload: &'a [u8],
        next: usize,
    },
    /// The segment ends cleanly here.
    End,
    /// Not a valid record: a torn append or corruption (the caller decides which).
    Bad {
        reason: &'static str,
    },
}

pub fn decode(data: &[u8], offset: usize, verify_checksum: bool) -> Decoded<'_> {
    let rest = &data[offset..];
    if rest.is_empty() {
        return Decoded::End;
    }
    if rest.len() < HEADER {
        return Decoded::Bad {
            reason: "a record header cut short",
        };
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_PAYLOAD {
        return Decoded::Bad {
            reason: "an impossible record length",
        };
    }
    let end = HEADER + len as usize;
    if rest.len() < end {
        return Decoded::Bad {
            reason: "a record cut short",
        };
    }
    let payload = &rest[HEADER..end];
    if verify_checksum && crc32c::crc32c(payload) != crc {
        return Decoded::Bad {
            reason: "a checksum mismatch",
        };
    }
    Decoded::Record {
        payload,
        next: offset + end,
    }
}
