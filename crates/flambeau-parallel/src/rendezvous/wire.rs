//! PyTorch's TCPStore wire format (torch/csrc/distributed/c10d/TCPStore.cpp,
//! TCPStoreBackend.hpp, TCPStoreLibUvBackend.cpp), as the client of PyTorch 2.15 sends it.
//!
//! Every request is a `u8` query type followed by its arguments; integers are little-endian
//! (the host order of every platform PyTorch runs on), strings and byte values are a `u64`
//! length then the bytes, key lists are a `u64` count then the keys. Replies have no header.

use std::io::{self, Read};

/// The query types (`c10d::detail::QueryType`, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Query {
    /// `u32` magic; no reply. The first message of every connection.
    Validate = 0,
    /// key, value; no reply.
    Set = 1,
    /// key, expected, desired; reply: the value now stored (bytes).
    CompareSet = 2,
    /// key; reply: the value (bytes).
    Get = 3,
    /// key, `i64`; reply: the new `i64`.
    Add = 4,
    /// keys; reply: `u8` READY (0) or NOT_READY (1).
    Check = 5,
    /// keys; reply, once all exist: `u8` STOP_WAITING (0).
    Wait = 6,
    /// reply: `i64`.
    GetNumKeys = 7,
    /// key; reply: `i64` number deleted.
    DeleteKey = 8,
    /// key, value; no reply.
    Append = 9,
    /// keys; reply: one value (bytes) per key.
    MultiGet = 10,
    /// count, then (key, value) pairs; no reply.
    MultiSet = 11,
    /// no arguments; reply: `u8` WAIT_CANCELED (1) (after a STOP_WAITING if the wait ended).
    CancelWait = 12,
    /// `u32` nonce; reply: the nonce.
    Ping = 13,
}

impl Query {
    pub(crate) fn from_u8(b: u8) -> Option<Self> {
        use Query::*;
        Some(match b {
            0 => Validate,
            1 => Set,
            2 => CompareSet,
            3 => Get,
            4 => Add,
            5 => Check,
            6 => Wait,
            7 => GetNumKeys,
            8 => DeleteKey,
            9 => Append,
            10 => MultiGet,
            11 => MultiSet,
            12 => CancelWait,
            13 => Ping,
            _ => return None,
        })
    }
}

/// `c10d::detail::validationMagicNumber`, sent with VALIDATE.
pub(crate) const VALIDATION_MAGIC: u32 = 0x3C85_F7CE;

/// `CheckResponseType::READY` / `NOT_READY`.
pub(crate) const CHECK_READY: u8 = 0;
pub(crate) const CHECK_NOT_READY: u8 = 1;
/// `WaitResponseType::STOP_WAITING` / `WAIT_CANCELED`.
pub(crate) const STOP_WAITING: u8 = 0;
pub(crate) const WAIT_CANCELED: u8 = 1;

/// The longest value (or key) accepted from a peer: a larger length prefix is an error, never
/// an allocation.
pub const MAX_VALUE_BYTES: u64 = 64 << 20;
/// The most keys accepted in one request (PyTorch's `MAX_KEY_COUNT`).
pub const MAX_KEY_COUNT: u64 = 128 * 1024;

/// Appends a request's parts to one buffer, sent with one write.
#[derive(Default)]
pub(crate) struct Request(pub(crate) Vec<u8>);

impl Request {
    pub(crate) fn new(q: Query) -> Self {
        Self(vec![q as u8])
    }
    pub(crate) fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn bytes(self, b: &[u8]) -> Self {
        let mut s = self.u64(b.len() as u64);
        s.0.extend_from_slice(b);
        s
    }
}

/// Why a message could not be read: the connection failed, or the peer broke the format.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    Protocol(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                f.write_str("the connection was closed")
            }
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Protocol(m) => f.write_str(m),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

pub(crate) fn read_u8(r: &mut impl Read) -> Result<u8, ReadError> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

pub(crate) fn read_u32(r: &mut impl Read) -> Result<u32, ReadError> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

pub(crate) fn read_u64(r: &mut impl Read) -> Result<u64, ReadError> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

pub(crate) fn read_i64(r: &mut impl Read) -> Result<i64, ReadError> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(i64::from_le_bytes(b))
}

/// A `u64`-length-prefixed byte string, refused (before any allocation) when longer than
/// [`MAX_VALUE_BYTES`].
pub(crate) fn read_bytes(r: &mut impl Read) -> Result<Vec<u8>, ReadError> {
    let len = read_u64(r)?;
    if len > MAX_VALUE_BYTES {
        return Err(ReadError::Protocol(format!(
            "length prefix {len} exceeds the limit of {MAX_VALUE_BYTES} bytes"
        )));
    }
    let mut v = Vec::new();
    // `take` + `read_to_end` grows the buffer as bytes arrive, so a lying prefix costs
    // nothing beyond what the peer actually sends.
    let got = r.take(len).read_to_end(&mut v)?;
    if got as u64 != len {
        return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(v)
}

/// A key: a length-prefixed UTF-8 string.
pub(crate) fn read_key(r: &mut impl Read) -> Result<String, ReadError> {
    let b = read_bytes(r)?;
    String::from_utf8(b).map_err(|_| ReadError::Protocol("a key is not valid UTF-8".into()))
}

/// A key list: a `u64` count (at most [`MAX_KEY_COUNT`]) then the keys.
pub(crate) fn read_keys(r: &mut impl Read) -> Result<Vec<String>, ReadError> {
    let n = read_u64(r)?;
    if n > MAX_KEY_COUNT {
        return Err(ReadError::Protocol(format!(
            "{n} keys in one request exceeds the limit of {MAX_KEY_COUNT}"
        )));
    }
    (0..n).map(|_| read_key(r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let r = Request::new(Query::Set).bytes(b"/k").bytes(b"vv");
        assert_eq!(
            r.0,
            [
                &[1u8][..],
                &2u64.to_le_bytes(),
                b"/k",
                &2u64.to_le_bytes(),
                b"vv"
            ]
            .concat()
        );
        let v = Request::new(Query::Validate).u32(VALIDATION_MAGIC);
        assert_eq!(v.0, [0x00, 0xce, 0xf7, 0x85, 0x3c]);
    }

    #[test]
    fn bounded_reads() {
        let huge = u64::MAX.to_le_bytes();
        assert!(matches!(
            read_bytes(&mut &huge[..]),
            Err(ReadError::Protocol(_))
        ));
        let many = (MAX_KEY_COUNT + 1).to_le_bytes();
        assert!(matches!(
            read_keys(&mut &many[..]),
            Err(ReadError::Protocol(_))
        ));
        // A prefix promising more than arrives is an EOF, not a hang or a huge allocation.
        let short = [&1000u64.to_le_bytes()[..], b"abc"].concat();
        assert!(matches!(read_bytes(&mut &short[..]), Err(ReadError::Io(_))));
        let bad_utf8 = [&2u64.to_le_bytes()[..], &[0xff, 0xfe]].concat();
        assert!(matches!(
            read_key(&mut &bad_utf8[..]),
            Err(ReadError::Protocol(_))
        ));
        for b in 0..=13u8 {
            assert_eq!(Query::from_u8(b).map(|q| q as u8), Some(b));
        }
        assert_eq!(Query::from_u8(14), None);
    }
}
