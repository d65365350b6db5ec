//! A small, strict tar reader.
//!
//! The `tar` crate's `Entries` reads GNU long names and PAX headers into
//! memory without a bound, accepts an archive cut at a header boundary as
//! complete and has no way to cap what it buffers. This reader parses the
//! same formats (ustar, GNU, PAX; header fields through `tar::Header`) with
//! the properties an importer of untrusted archives needs:
//!
//! - metadata entries (`L`, `K`, `x`, `g`) are capped at [`MAX_META_BYTES`];
//! - an archive must end with a zero block: running out of input at a
//!   header boundary is reported as truncation, as is a short entry;
//! - header checksums are verified; a PAX `size` overrides the header size;
//! - GNU sparse files, multi-volume and unknown entry types are refused by
//!   the caller, which sees the raw [`tar::EntryType`].

use std::io::{self, Read, Seek, SeekFrom};

use tar::{EntryType, Header, PaxExtensions};

/// The largest GNU long name or PAX header accepted (1 MiB).
pub(crate) const MAX_META_BYTES: u64 = 1 << 20;
const BLOCK: u64 = 512;

/// Something a [`TarReader`] can read from and skip forward in.
pub(crate) trait TarInput: Read {
    /// Skips `n` bytes; returns how many were actually skipped (fewer at EOF).
    fn skip_bytes(&mut self, n: u64) -> io::Result<u64>;
}

/// A forward-only stream (decompressor, pipe): skipping reads and discards.
#[derive(Debug)]
pub(crate) struct Stream<R>(pub(crate) R);

impl<R: Read> Read for Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> TarInput for Stream<R> {
    fn skip_bytes(&mut self, n: u64) -> io::Result<u64> {
        io::copy(&mut (&mut self.0).take(n), &mut io::sink())
    }
}

/// A seekable file of known length: skipping seeks.
#[derive(Debug)]
pub(crate) struct SeekFile {
    pub(crate) file: std::fs::File,
    pub(crate) len: u64,
    pub(crate) pos: u64,
}

impl Read for SeekFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl TarInput for SeekFile {
    fn skip_bytes(&mut self, n: u64) -> io::Result<u64> {
        let n = n.min(self.len.saturating_sub(self.pos));
        self.pos = self.file.seek(SeekFrom::Current(n as i64))?;
        Ok(n)
    }
}

/// One member's header, with long names and PAX overrides applied.
#[derive(Debug, Clone)]
pub(crate) struct TarEntry {
    /// The member name as archived (bytes; may be anything).
    pub(crate) path: Vec<u8>,
    /// Link target for symlinks and hardlinks.
    pub(crate) link: Option<Vec<u8>>,
    /// The raw entry type.
    pub(crate) kind: EntryType,
    /// Permission bits from the header (`& 0o7777`).
    pub(crate) mode: u32,
    /// Owner from the header or PAX.
    pub(crate) uid: u64,
    /// Group from the header or PAX.
    pub(crate) gid: u64,
    /// Data length that follows the header.
    pub(crate) size: u64,
    /// Offset of the data from the start of the archive.
    pub(crate) data_offset: u64,
    /// Extended attributes the PAX header carried (never applied).
    pub(crate) xattrs: u32,
}

/// Why reading the archive failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TarError {
    #[error("truncated archive: {0}")]
    Truncated(String),
    #[error("corrupt archive at offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    #[error("{what} of {size} bytes at offset {offset} exceeds {limit} bytes")]
    TooBig {
        what: &'static str,
        size: u64,
        offset: u64,
        limit: u64,
    },
    #[error("read error: {0}")]
    Io(#[from] io::Error),
}

/// Reads members one at a time; the data of the current member is read
/// through [`TarReader::data`] (anything left is skipped by the next call).
#[derive(Debug)]
pub(crate) struct TarReader<R> {
    inner: R,
    pos: u64,
    remaining: u64,
    padding: u64,
    done: bool,
}

impl<R: TarInput> TarReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        TarReader {
            inner,
            pos: 0,
            remaining: 0,
            padding: 0,
            done: false,
        }
    }

    /// Gives the input back (after the end-of-archive block).
    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    /// The next member, or `None` after the end-of-archive zero block.
    pub(crate) fn next_entry(&mut self) -> Result<Option<TarEntry>, TarError> {
        if self.done {
            return Ok(None);
        }
        self.skip_rest()?;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Vec<u8>> = None;
        loop {
            let header_offset = self.pos;
            let mut block = [0u8; BLOCK as usize];
            let got = read_full(&mut self.inner, &mut block)?;
            self.pos += got as u64;
            if got == 0 {
                return Err(TarError::Truncated(format!(
                    "input ends at offset {header_offset} without an end-of-archive block"
                )));
            }
            if got < block.len() {
                return Err(TarError::Truncated(format!(
                    "header at offset {header_offset} is cut short"
                )));
            }
            if block.iter().all(|b| *b == 0) {
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(corrupt(header_offset, "extension header without a member"));
                }
                self.done = true;
                return Ok(None);
            }
            let header = Header::from_byte_slice(&block);
            check_sum(&block, header, header_offset)?;
            let kind = header.entry_type();
            let mut size = header
                .entry_size()
                .map_err(|e| corrupt(header_offset, &format!("bad size field: {e}")))?;
            let pax_ext = pax.as_deref().map(PaxExtensions::new);
            let pax_val = |key: &str| -> Option<Vec<u8>> {
                pax.as_deref().and_then(|p| {
                    PaxExtensions::new(p)
                        .filter_map(Result::ok)
                        .filter(|e| e.key_bytes() == key.as_bytes())
                        .last()
                        .map(|e| e.value_bytes().to_vec())
                })
            };
            let is_meta = matches!(
                kind,
                EntryType::GNULongName
                    | EntryType::GNULongLink
                    | EntryType::XHeader
                    | EntryType::XGlobalHeader
            );
            if !is_meta && let Some(v) = pax_val("size") {
                size = parse_decimal(&v).ok_or_else(|| corrupt(header_offset, "bad PAX size"))?;
            }
            let data_offset = self.pos;
            self.remaining = size;
            self.padding = (BLOCK - size % BLOCK) % BLOCK;
            if is_meta {
                if size > MAX_META_BYTES {
                    return Err(TarError::TooBig {
                        what: "extension header",
                        size,
                        offset: header_offset,
                        limit: MAX_META_BYTES,
                    });
                }
                let mut buf = Vec::with_capacity(size as usize);
                self.data().read_to_end(&mut buf)?;
                self.skip_rest()?;
                match kind {
                    EntryType::GNULongName => long_name = Some(trim_nul(buf)),
                    EntryType::GNULongLink => long_link = Some(trim_nul(buf)),
                    EntryType::XHeader => {
                        for ext in PaxExtensions::new(&buf) {
                            ext.map_err(|e| {
                                corrupt(header_offset, &format!("bad PAX record: {e}"))
                            })?;
                        }
                        pax = Some(buf);
                    }
                    // Global PAX headers (comments, defaults) change nothing
                    // this importer keeps: ignored.
                    _ => {}
                }
                continue;
            }
            let xattrs = pax_ext.map_or(0, |exts| {
                exts.filter_map(Result::ok)
                    .filter(|e| {
                        e.key_bytes().starts_with(b"SCHILY.xattr.")
                            || e.key_bytes().starts_with(b"LIBARCHIVE.xattr.")
                    })
                    .count() as u32
            });
            let path = pax_val("path")
                .or(long_name.take())
                .unwrap_or_else(|| header.path_bytes().into_owned());
            let link = pax_val("linkpath")
                .or(long_link.take())
                .or_else(|| header.link_name_bytes().map(|c| c.into_owned()));
            let num = |key: &str, field: io::Result<u64>| -> Result<u64, TarError> {
                match pax_val(key) {
                    Some(v) => parse_decimal(&v)
                        .ok_or_else(|| corrupt(header_offset, &format!("bad PAX {key}"))),
                    // Owners are never applied (see normalize.rs): an
                    // unreadable header field counts as 0.
                    None => Ok(field.unwrap_or(0)),
                }
            };
            let uid = num("uid", header.uid())?;
            let gid = num("gid", header.gid())?;
            let mode = header
                .mode()
                .map_err(|e| corrupt(header_offset, &format!("bad mode: {e}")))?
                & 0o7777;
            return Ok(Some(TarEntry {
                path,
                link,
                kind,
                mode,
                uid,
                gid,
                size,
                data_offset,
                xattrs,
            }));
        }
    }

    /// The current member's data; reading past what the input holds is an
    /// `UnexpectedEof` error, never a silent short read.
    pub(crate) fn data(&mut self) -> Data<'_, R> {
        Data { tar: self }
    }

    /// Skips the current member's unread data and padding.
    fn skip_rest(&mut self) -> Result<(), TarError> {
        let want = self.remaining + self.padding;
        if want == 0 {
            return Ok(());
        }
        let got = self.inner.skip_bytes(want)?;
        self.pos += got;
        self.remaining = 0;
        self.padding = 0;
        if got < want {
            return Err(TarError::Truncated(format!(
                "member data ends early at offset {}",
                self.pos
            )));
        }
        Ok(())
    }
}

/// Reader over the current member's data.
#[derive(Debug)]
pub(crate) struct Data<'a, R> {
    tar: &'a mut TarReader<R>,
}

impl<R: TarInput> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tar.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let cap = buf
            .len()
            .min(usize::try_from(self.tar.remaining).unwrap_or(usize::MAX));
        let n = self.tar.inner.read(&mut buf[..cap])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("member data ends early at offset {}", self.tar.pos),
            ));
        }
        self.tar.remaining -= n as u64;
        self.tar.pos += n as u64;
        Ok(n)
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn check_sum(block: &[u8], header: &Header, offset: u64) -> Result<(), TarError> {
    let unsigned: u64 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|b| u64::from(*b))
        .sum::<u64>()
        + 8 * 32;
    let stored = header
        .cksum()
        .map_err(|e| corrupt(offset, &format!("bad checksum field: {e}")))?;
    if u64::from(stored) != unsigned {
        return Err(corrupt(offset, "header checksum mismatch"));
    }
    Ok(())
}

fn corrupt(offset: u64, reason: &str) -> TarError {
    TarError::Corrupt {
        offset,
        reason: reason.to_owned(),
    }
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn reads_members_and_long_names() {
        let long = "d/".repeat(80) + "file";
        let bytes = archive(&[("a", b"hello"), (&long, b"x")]);
        let mut t = TarReader::new(Stream(&bytes[..]));
        let e = t.next_entry().unwrap().unwrap();
        assert_eq!(e.path, b"a");
        let mut s = String::new();
        t.data().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        let e = t.next_entry().unwrap().unwrap();
        assert_eq!(e.path, long.as_bytes());
        assert!(t.next_entry().unwrap().is_none());
    }

    #[test]
    fn cut_at_header_boundary_is_truncated() {
        let bytes = archive(&[("a", b"hello"), ("b", b"")]);
        // Keep the first member (header + one data block) only.
        let mut t = TarReader::new(Stream(&bytes[..1024]));
        t.next_entry().unwrap().unwrap();
        assert!(matches!(t.next_entry(), Err(TarError::Truncated(_))));
    }

    #[test]
    fn short_data_is_an_error() {
        let bytes = archive(&[("a", &[7u8; 2000])]);
        let mut t = TarReader::new(Stream(&bytes[..1000]));
        t.next_entry().unwrap().unwrap();
        let mut v = Vec::new();
        assert!(t.data().read_to_end(&mut v).is_err());
    }

    #[test]
    fn checksum_is_verified() {
        let mut bytes = archive(&[("a", b"hello")]);
        bytes[0] = b'b';
        let mut t = TarReader::new(Stream(&bytes[..]));
        assert!(matches!(t.next_entry(), Err(TarError::Corrupt { .. })));
    }
}
