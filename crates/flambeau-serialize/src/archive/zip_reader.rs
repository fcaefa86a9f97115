//! A zip reader over a byte slice (the memory-mapped file), zip64 included. Every offset is
//! bounds-checked. PyTorch writes records STORED (they stay memory-mapped); records someone
//! re-zipped with DEFLATE, and the code/ records of TorchScript archives, are inflated on
//! demand into a buffer of exactly the declared size, and their CRC is checked.

use std::borrow::Cow;

use crate::{Error, Result};

/// Zip compression methods this reader handles.
const STORED: u16 = 0;
const DEFLATED: u16 = 8;

/// DEFLATE cannot expand data by more than about 1032:1; a declared size beyond that is a lie
/// we refuse before allocating for it.
const MAX_DEFLATE_RATIO: usize = 1032;

/// One record of the archive.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Full name (`archive/data/0`).
    pub name: String,
    /// Where its (possibly compressed) bytes are in the file.
    pub start: usize,
    /// Length in bytes in the file.
    pub len: usize,
    /// Compression method: 0 stored, 8 deflated.
    pub method: u16,
    /// Length once inflated (equal to `len` for stored entries).
    pub size: usize,
    /// CRC-32 of the uncompressed bytes, from the central directory.
    pub crc32: u32,
}

impl Entry {
    /// True when the bytes sit uncompressed in the file (and can be used in place).
    pub fn is_stored(&self) -> bool {
        self.method == STORED
    }
}

/// The table of contents of a zip archive.
#[derive(Debug, Clone)]
pub struct ZipArchive {
    entries: Vec<Entry>,
}

fn u16_at(d: &[u8], at: usize) -> Result<u16> {
    d.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| Error::Truncated(format!("zip structure at byte {at}")))
}

fn u32_at(d: &[u8], at: usize) -> Result<u32> {
    d.get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
        .ok_or_else(|| Error::Truncated(format!("zip structure at byte {at}")))
}

fn u64_at(d: &[u8], at: usize) -> Result<u64> {
    d.get(at..at + 8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
        .ok_or_else(|| Error::Truncated(format!("zip structure at byte {at}")))
}

fn to_usize(v: u64, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::Zip(format!("{what} {v} does not fit in memory")))
}

const EOCD: u32 = 0x0605_4b50;
const ZIP64_EOCD: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;

impl ZipArchive {
    /// Reads the central directory of `data`.
    pub fn new(data: &[u8]) -> Result<Self> {
        if data.len() < 22 {
            return Err(Error::Truncated("too short for a zip archive".into()));
        }
        let lowest = data.len().saturating_sub(22 + 65_535);
        let eocd = (lowest..=data.len() - 22)
            .rev()
            .find(|&i| u32_at(data, i).is_ok_and(|s| s == EOCD))
            .ok_or_else(|| {
                Error::Truncated(
                    "no end-of-central-directory record (the file was cut short)".into(),
                )
            })?;
        let mut count = u16_at(data, eocd + 10)? as u64;
        let mut cd_size = u32_at(data, eocd + 12)? as u64;
        let mut cd_offset = u32_at(data, eocd + 16)? as u64;
        if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
            let loc = eocd
                .checked_sub(20)
                .ok_or_else(|| Error::Zip("zip64 locator missing".into()))?;
            if u32_at(data, loc)? != ZIP64_LOCATOR {
                return Err(Error::Zip("zip64 locator missing".into()));
            }
            let z = to_usize(u64_at(data, loc + 8)?, "zip64 record offset")?;
            if u32_at(data, z)? != ZIP64_EOCD {
                return Err(Error::Zip("bad zip64 end record".into()));
            }
            count = u64_at(data, z + 32)?;
            cd_size = u64_at(data, z + 40)?;
            cd_offset = u64_at(data, z + 48)?;
        }
        let cd_start = to_usize(cd_offset, "central directory offset")?;
        let cd_end = cd_start
            .checked_add(to_usize(cd_size, "central directory size")?)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| Error::Truncated("central directory past the end of the file".into()))?;
        // Each record is at least 46 bytes: a bound on the count that the file itself justifies.
        if count > ((cd_end - cd_start) / 46) as u64 {
            return Err(Error::Zip(format!(
                "{count} entries cannot fit in a central directory of {cd_size} bytes"
            )));
        }
        let mut entries = Vec::with_capacity(count as usize);
        let mut at = cd_start;
        for _ in 0..count {
            if u32_at(data, at)? != CENTRAL {
                return Err(Error::Zip(format!(
                    "bad central directory record at byte {at}"
                )));
            }
            let method = u16_at(data, at + 10)?;
            let crc32 = u32_at(data, at + 16)?;
            let mut csize = u32_at(data, at + 20)? as u64;
            let mut usize_ = u32_at(data, at + 24)? as u64;
            let nlen = u16_at(data, at + 28)? as usize;
            let elen = u16_at(data, at + 30)? as usize;
            let clen = u16_at(data, at + 32)? as usize;
            let mut local = u32_at(data, at + 42)? as u64;
            let name_bytes = data
                .get(at + 46..at + 46 + nlen)
                .ok_or_else(|| Error::Truncated("zip entry name".into()))?;
            let name = String::from_utf8_lossy(name_bytes).into_owned();
            let extra = data
                .get(at + 46 + nlen..at + 46 + nlen + elen)
                .ok_or_else(|| Error::Truncated("zip extra field".into()))?;
            // zip64: the 0xFFFFFFFF fields come from the 0x0001 extra, in order.
            let mut e = 0;
            while e + 4 <= extra.len() {
                let id = u16::from_le_bytes([extra[e], extra[e + 1]]);
                let len = u16::from_le_bytes([extra[e + 2], extra[e + 3]]) as usize;
                if id == 0x0001 {
                    let mut f = e + 4;
                    let mut next = |v: &mut u64| {
                        if *v == 0xFFFF_FFFF && f + 8 <= extra.len() {
                            *v = u64::from_le_bytes(extra[f..f + 8].try_into().expect("8"));
                            f += 8;
                        }
                    };
                    next(&mut usize_);
                    next(&mut csize);
                    next(&mut local);
                }
                e += 4 + len;
            }
            if method != STORED && method != DEFLATED {
                return Err(Error::Zip(format!(
                    "entry `{name}` uses compression method {method}; torch.load reads stored and deflated records only. Re-zip it with `zip -0` or re-save it with torch.save"
                )));
            }
            let local = to_usize(local, "local header offset")?;
            if u32_at(data, local)? != LOCAL {
                return Err(Error::Zip(format!("bad local header for `{name}`")));
            }
            let start = local
                + 30
                + u16_at(data, local + 26)? as usize
                + u16_at(data, local + 28)? as usize;
            let len = to_usize(csize, "entry size")?;
            if start.checked_add(len).is_none_or(|end| end > data.len()) {
                return Err(Error::Truncated(format!(
                    "entry `{name}` ends past the end of the file"
                )));
            }
            let size = to_usize(usize_, "uncompressed size")?;
            if method == STORED && size != len {
                return Err(Error::Zip(format!(
                    "stored entry `{name}` declares {size} bytes uncompressed but {len} in the file"
                )));
            }
            if method == DEFLATED && size > len.saturating_mul(MAX_DEFLATE_RATIO).max(1024) {
                return Err(Error::Zip(format!(
                    "deflated entry `{name}` claims {size} bytes from {len} compressed: more than DEFLATE can expand (corrupt file)"
                )));
            }
            entries.push(Entry {
                name,
                start,
                len,
                method,
                size,
                crc32,
            });
            at += 46 + nlen + elen + clen;
        }
        Ok(Self { entries })
    }

    /// All entries, in directory order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The bytes of `entry`: borrowed from `data` when stored, inflated (into a buffer of the
    /// declared size, CRC checked) when deflated.
    pub fn read<'d>(&self, data: &'d [u8], entry: &Entry) -> Result<Cow<'d, [u8]>> {
        let raw = data
            .get(entry.start..entry.start + entry.len)
            .ok_or_else(|| Error::Truncated(format!("entry `{}`", entry.name)))?;
        if entry.is_stored() {
            return Ok(Cow::Borrowed(raw));
        }
        let mut out = vec![0u8; entry.size];
        let n = miniz_oxide::inflate::decompress_slice_iter_to_slice(
            &mut out,
            std::iter::once(raw),
            false,
            true,
        )
        .map_err(|status| {
            Error::Zip(format!(
                "deflated entry `{}` does not inflate to its declared {} bytes ({status:?}): corrupt or truncated file",
                entry.name, entry.size
            ))
        })?;
        if n != entry.size {
            return Err(Error::Zip(format!(
                "deflated entry `{}` inflates to {n} bytes but declares {}: corrupt file",
                entry.name, entry.size
            )));
        }
        let crc = crc32fast::hash(&out);
        if crc != entry.crc32 {
            return Err(Error::Zip(format!(
                "entry `{}` fails its CRC check (file says {:08x}, data gives {crc:08x}): corrupt file",
                entry.name, entry.crc32
            )));
        }
        Ok(Cow::Owned(out))
    }

    /// The entry with exactly this name.
    pub fn find(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}
