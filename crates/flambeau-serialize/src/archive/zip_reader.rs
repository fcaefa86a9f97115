//! A zip reader over a byte slice (the memory-mapped file): STORED entries only, as PyTorch
//! writes them, zip64 included. Every offset is bounds-checked.

use crate::{Error, Result};

/// One record of the archive.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Full name (`archive/data/0`).
    pub name: String,
    /// Where its bytes are in the file.
    pub start: usize,
    /// Length in bytes.
    pub len: usize,
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
            let mut csize = u32_at(data, at + 20)? as u64;
            let usize_ = u32_at(data, at + 24)? as u64;
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
                    let mut u = usize_;
                    next(&mut u);
                    next(&mut csize);
                    next(&mut local);
                }
                e += 4 + len;
            }
            if method != 0 {
                return Err(Error::Zip(format!(
                    "entry `{name}` is compressed (method {method}); PyTorch stores records uncompressed — was the file re-zipped? Re-save it with torch.save"
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
            entries.push(Entry { name, start, len });
            at += 46 + nlen + elen + clen;
        }
        Ok(Self { entries })
    }

    /// All entries, in directory order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry with exactly this name.
    pub fn find(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}
