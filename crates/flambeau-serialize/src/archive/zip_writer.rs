//! Writes zip archives the way PyTorch does: every record STORED and starting at a multiple of
//! 64 bytes (padding in an `FB` extra field), zip64 records when anything passes 4 GiB.

use std::io::Write;

use crate::Result;

const ALIGN: u64 = 64;

struct Written {
    name: String,
    crc: u32,
    size: u64,
    offset: u64,
}

/// Streams records into `out`.
pub struct ZipWriter<W: Write> {
    out: W,
    pos: u64,
    records: Vec<Written>,
}

fn zip64_extra(values: &[u64]) -> Vec<u8> {
    let mut e = vec![0x01, 0x00];
    e.extend_from_slice(&((values.len() * 8) as u16).to_le_bytes());
    for v in values {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e
}

impl<W: Write> ZipWriter<W> {
    /// A writer at the start of `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            pos: 0,
            records: Vec::new(),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| crate::Error::io("<archive>", e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Appends a record whose data starts 64-byte aligned.
    pub fn add(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let size = data.len() as u64;
        let big = size >= 0xFFFF_FFFF;
        let mut extra = if big {
            zip64_extra(&[size, size])
        } else {
            Vec::new()
        };
        let unpadded = self.pos + 30 + name.len() as u64 + extra.len() as u64 + 4;
        let pad = (ALIGN - unpadded % ALIGN) % ALIGN;
        extra.extend_from_slice(b"FB");
        extra.extend_from_slice(&(pad as u16).to_le_bytes());
        extra.extend(std::iter::repeat_n(b'Z', pad as usize));
        let crc = crc32fast::hash(data);
        let clamp = |v: u64| if big { 0xFFFF_FFFF } else { v as u32 };
        let mut h = Vec::with_capacity(30 + name.len() + extra.len());
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&(if big { 45u16 } else { 20 }).to_le_bytes());
        h.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // flags, method (stored), time, date
        h.extend_from_slice(&crc.to_le_bytes());
        h.extend_from_slice(&clamp(size).to_le_bytes());
        h.extend_from_slice(&clamp(size).to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        h.extend_from_slice(&extra);
        let offset = self.pos;
        self.put(&h)?;
        debug_assert_eq!(self.pos % ALIGN, 0);
        self.put(data)?;
        self.records.push(Written {
            name: name.to_string(),
            crc,
            size,
            offset,
        });
        Ok(())
    }

    /// Writes the central directory and the end records; returns the inner writer.
    pub fn finish(mut self) -> Result<W> {
        let cd_start = self.pos;
        let records = std::mem::take(&mut self.records);
        for r in &records {
            let big = r.size >= 0xFFFF_FFFF || r.offset >= 0xFFFF_FFFF;
            let extra = if big {
                zip64_extra(&[r.size, r.size, r.offset])
            } else {
                Vec::new()
            };
            let clamp = |v: u64| if big { 0xFFFF_FFFF } else { v as u32 };
            let mut c = Vec::with_capacity(46 + r.name.len() + extra.len());
            c.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            let version: u16 = if big { 45 } else { 20 };
            c.extend_from_slice(&version.to_le_bytes());
            c.extend_from_slice(&version.to_le_bytes());
            c.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
            c.extend_from_slice(&r.crc.to_le_bytes());
            c.extend_from_slice(&clamp(r.size).to_le_bytes());
            c.extend_from_slice(&clamp(r.size).to_le_bytes());
            c.extend_from_slice(&(r.name.len() as u16).to_le_bytes());
            c.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            c.extend_from_slice(&[0u8; 8]); // comment length, disk, internal and external attributes (part)
            c.extend_from_slice(&[0u8; 2]);
            c.extend_from_slice(&clamp(r.offset).to_le_bytes());
            c.extend_from_slice(r.name.as_bytes());
            c.extend_from_slice(&extra);
            self.put(&c)?;
        }
        let cd_size = self.pos - cd_start;
        let n = records.len() as u64;
        let zip64 = n >= 0xFFFF || cd_start >= 0xFFFF_FFFF || cd_size >= 0xFFFF_FFFF;
        if zip64 {
            let z = self.pos;
            let mut e = Vec::with_capacity(56 + 20);
            e.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
            e.extend_from_slice(&44u64.to_le_bytes());
            e.extend_from_slice(&45u16.to_le_bytes());
            e.extend_from_slice(&45u16.to_le_bytes());
            e.extend_from_slice(&[0u8; 8]);
            e.extend_from_slice(&n.to_le_bytes());
            e.extend_from_slice(&n.to_le_bytes());
            e.extend_from_slice(&cd_size.to_le_bytes());
            e.extend_from_slice(&cd_start.to_le_bytes());
            e.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
            e.extend_from_slice(&0u32.to_le_bytes());
            e.extend_from_slice(&z.to_le_bytes());
            e.extend_from_slice(&1u32.to_le_bytes());
            self.put(&e)?;
        }
        let c16 = |v: u64| if zip64 { 0xFFFF } else { v as u16 };
        let c32 = |v: u64| if zip64 { 0xFFFF_FFFF } else { v as u32 };
        let mut end = Vec::with_capacity(22);
        end.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        end.extend_from_slice(&[0, 0, 0, 0]);
        end.extend_from_slice(&c16(n).to_le_bytes());
        end.extend_from_slice(&c16(n).to_le_bytes());
        end.extend_from_slice(&c32(cd_size).to_le_bytes());
        end.extend_from_slice(&c32(cd_start).to_le_bytes());
        end.extend_from_slice(&[0, 0]);
        self.put(&end)?;
        Ok(self.out)
    }
}
