//! Member-level comparison of tar (plain or gzip'd), zip, ar and gzip
//! contents: which members were added or removed, whether their order
//! changed, and the first member that differs, in its metadata (mtime,
//! owner, mode, ...) or its content (compared recursively).
//!
//! Archives are read from memory with bounded totals; a side that cannot be
//! read whole is reported with a note instead of member details.

use std::io::{Cursor, Read};

use serde::{Deserialize, Serialize};

use crate::content::{self, ContentDiff};

/// Most decompressed bytes read from one archive.
pub const MAX_ARCHIVE_BYTES: u64 = 256 << 20;

/// Most members read from one archive.
pub const MAX_MEMBERS: usize = 100_000;

/// How two archives of one format differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveDiff {
    /// `tar`, `tar+gzip`, `gzip`, `zip` or `ar`.
    pub format: String,
    /// Archive-level fields that differ (the gzip header's mtime, name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<FieldChange>,
    /// Members only in the other run.
    pub added: Vec<String>,
    /// Members only in the baseline.
    pub removed: Vec<String>,
    /// The common members appear in a different order.
    pub order_changed: bool,
    /// How many common members differ.
    pub differing_members: usize,
    /// The first common member (in the baseline's order) that differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_differing: Option<MemberDiff>,
    /// Why members could not be compared (corrupt, too large).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// How one member differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberDiff {
    /// The member's name (`name (#2)` for a second member of that name).
    pub name: String,
    /// Header fields that differ.
    pub metadata: Vec<FieldChange>,
    /// How the content differs (recursing into nested archives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Box<ContentDiff>>,
}

/// One field with its two values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldChange {
    /// The field (`mtime`, `mode`, `uid`, ...).
    pub field: String,
    /// Its value in the baseline.
    pub baseline: String,
    /// Its value in the other run.
    pub run: String,
}

/// One archive member read into memory.
#[derive(Debug)]
struct Member {
    name: String,
    meta: Vec<(&'static str, String)>,
    data: Vec<u8>,
}

/// An archive read into memory.
#[derive(Debug, Default)]
struct Listing {
    header: Vec<(&'static str, String)>,
    members: Vec<Member>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Tar,
    Gzip,
    Zip,
    Ar,
}

fn format_of(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        Some(Format::Gzip)
    } else if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        Some(Format::Zip)
    } else if bytes.starts_with(b"!<arch>\n") {
        Some(Format::Ar)
    } else if bytes.len() >= 512 && &bytes[257..262] == b"ustar" {
        Some(Format::Tar)
    } else {
        None
    }
}

/// Compares `a` and `b` member by member when both are archives of the
/// same format; `None` otherwise.
pub(crate) fn compare(a: &[u8], b: &[u8], depth: u32) -> Option<ArchiveDiff> {
    let format = format_of(a)?;
    if format_of(b)? != format {
        return None;
    }
    let (name, la, lb) = match (read(format, a), read(format, b)) {
        (Ok((name, la)), Ok((_, lb))) => (name, la, lb),
        (Err(e), _) | (_, Err(e)) => {
            return Some(ArchiveDiff {
                format: format_name(format).to_owned(),
                header: vec![],
                added: vec![],
                removed: vec![],
                order_changed: false,
                differing_members: 0,
                first_differing: None,
                note: Some(e),
            });
        }
    };
    Some(diff_listings(name, &la, &lb, depth))
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Tar => "tar",
        Format::Gzip => "gzip",
        Format::Zip => "zip",
        Format::Ar => "ar",
    }
}

fn read(format: Format, bytes: &[u8]) -> Result<(&'static str, Listing), String> {
    match format {
        Format::Tar => read_tar(bytes).map(|l| ("tar", l)),
        Format::Zip => read_zip(bytes).map(|l| ("zip", l)),
        Format::Ar => read_ar(bytes).map(|l| ("ar", l)),
        Format::Gzip => {
            let mut gz = flate2::read::GzDecoder::new(bytes);
            let mut data = Vec::new();
            (&mut gz)
                .take(MAX_ARCHIVE_BYTES + 1)
                .read_to_end(&mut data)
                .map_err(|e| format!("cannot decompress: {e}"))?;
            if data.len() as u64 > MAX_ARCHIVE_BYTES {
                return Err(format!("more than {MAX_ARCHIVE_BYTES} bytes decompressed"));
            }
            let header = gz
                .header()
                .map(|h| {
                    vec![
                        ("gzip mtime", h.mtime().to_string()),
                        (
                            "gzip name",
                            String::from_utf8_lossy(h.filename().unwrap_or_default()).into_owned(),
                        ),
                    ]
                })
                .unwrap_or_default();
            if format_of(&data) == Some(Format::Tar) {
                let mut l = read_tar(&data)?;
                l.header = header;
                Ok(("tar+gzip", l))
            } else {
                let member = Member {
                    name: "(decompressed)".to_owned(),
                    meta: vec![],
                    data,
                };
                Ok((
                    "gzip",
                    Listing {
                        header,
                        members: vec![member],
                    },
                ))
            }
        }
    }
}

/// Reads a member's data within the archive-wide budget.
fn take(r: impl Read, budget: &mut u64, what: &str) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    r.take(*budget + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read member {what}: {e}"))?;
    if data.len() as u64 > *budget {
        return Err(format!("more than {MAX_ARCHIVE_BYTES} bytes of members"));
    }
    *budget -= data.len() as u64;
    Ok(data)
}

fn too_many(n: usize) -> Result<(), String> {
    if n >= MAX_MEMBERS {
        return Err(format!("more than {MAX_MEMBERS} members"));
    }
    Ok(())
}

fn read_tar(bytes: &[u8]) -> Result<Listing, String> {
    let mut archive = tar::Archive::new(Cursor::new(bytes));
    let mut listing = Listing::default();
    let mut budget = MAX_ARCHIVE_BYTES;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a readable tar: {e}"))?;
    for entry in entries {
        too_many(listing.members.len())?;
        let entry = entry.map_err(|e| format!("corrupt tar entry: {e}"))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let h = entry.header();
        let field = |v: std::io::Result<u64>| v.map(|n| n.to_string()).unwrap_or_default();
        let meta = vec![
            ("type", format!("{:?}", h.entry_type())),
            (
                "mode",
                h.mode().map(|m| format!("{m:o}")).unwrap_or_default(),
            ),
            ("uid", field(h.uid())),
            ("gid", field(h.gid())),
            ("uname", lossy(h.username_bytes())),
            ("gname", lossy(h.groupname_bytes())),
            ("mtime", field(h.mtime())),
            (
                "link",
                entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default(),
            ),
        ];
        let data = take(entry, &mut budget, &name)?;
        listing.members.push(Member { name, meta, data });
    }
    Ok(listing)
}

fn lossy(bytes: Option<&[u8]>) -> String {
    bytes
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

fn read_zip(bytes: &[u8]) -> Result<Listing, String> {
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("not a readable zip: {e}"))?;
    let mut listing = Listing::default();
    let mut budget = MAX_ARCHIVE_BYTES;
    for i in 0..archive.len() {
        too_many(i)?;
        let file = archive
            .by_index(i)
            .map_err(|e| format!("corrupt zip member {i}: {e}"))?;
        let name = String::from_utf8_lossy(file.name_raw()).into_owned();
        let meta = vec![
            (
                "mtime",
                file.last_modified()
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            ),
            (
                "mode",
                file.unix_mode()
                    .map(|m| format!("{m:o}"))
                    .unwrap_or_default(),
            ),
            ("compression", file.compression().to_string()),
            ("comment", file.comment().to_owned()),
        ];
        let data = take(file, &mut budget, &name)?;
        listing.members.push(Member { name, meta, data });
    }
    Ok(listing)
}

fn read_ar(bytes: &[u8]) -> Result<Listing, String> {
    let mut archive = ar::Archive::new(Cursor::new(bytes));
    let mut listing = Listing::default();
    let mut budget = MAX_ARCHIVE_BYTES;
    while let Some(entry) = archive.next_entry() {
        too_many(listing.members.len())?;
        let entry = entry.map_err(|e| format!("corrupt ar member: {e}"))?;
        let h = entry.header();
        let name = String::from_utf8_lossy(h.identifier()).into_owned();
        let meta = vec![
            ("mtime", h.mtime().to_string()),
            ("uid", h.uid().to_string()),
            ("gid", h.gid().to_string()),
            ("mode", format!("{:o}", h.mode())),
        ];
        let data = take(entry, &mut budget, &name)?;
        listing.members.push(Member { name, meta, data });
    }
    Ok(listing)
}

/// Names members uniquely: a repeated name gets ` (#k)`.
fn keyed(listing: &Listing) -> Vec<(String, &Member)> {
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    listing
        .members
        .iter()
        .map(|m| {
            let n = seen.entry(m.name.as_str()).or_default();
            *n += 1;
            let key = if *n == 1 {
                m.name.clone()
            } else {
                format!("{} (#{n})", m.name)
            };
            (key, m)
        })
        .collect()
}

fn changes(a: &[(&'static str, String)], b: &[(&'static str, String)]) -> Vec<FieldChange> {
    a.iter()
        .zip(b)
        .filter(|((_, x), (_, y))| x != y)
        .map(|((field, x), (_, y))| FieldChange {
            field: (*field).to_owned(),
            baseline: x.clone(),
            run: y.clone(),
        })
        .collect()
}

fn diff_listings(format: &str, a: &Listing, b: &Listing, depth: u32) -> ArchiveDiff {
    let (ka, kb) = (keyed(a), keyed(b));
    let in_b: std::collections::HashMap<&str, &Member> =
        kb.iter().map(|(k, m)| (k.as_str(), *m)).collect();
    let in_a: std::collections::HashSet<&str> = ka.iter().map(|(k, _)| k.as_str()).collect();
    let removed = ka
        .iter()
        .filter(|(k, _)| !in_b.contains_key(k.as_str()))
        .map(|(k, _)| k.clone())
        .collect();
    let added = kb
        .iter()
        .filter(|(k, _)| !in_a.contains(k.as_str()))
        .map(|(k, _)| k.clone())
        .collect();
    let common_a: Vec<&str> = ka
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| in_b.contains_key(k))
        .collect();
    let common_b: Vec<&str> = kb
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| in_a.contains(k))
        .collect();
    let mut first_differing = None;
    let mut differing_members = 0;
    for (key, ma) in &ka {
        let Some(mb) = in_b.get(key.as_str()) else {
            continue;
        };
        let metadata = changes(&ma.meta, &mb.meta);
        if metadata.is_empty() && ma.data == mb.data {
            continue;
        }
        differing_members += 1;
        if first_differing.is_none() {
            first_differing = Some(MemberDiff {
                name: key.clone(),
                metadata,
                content: content::compare_at_depth(key, &ma.data, &mb.data, depth).map(Box::new),
            });
        }
    }
    ArchiveDiff {
        format: format.to_owned(),
        header: changes(&a.header, &b.header),
        added,
        removed,
        order_changed: common_a != common_b,
        differing_members,
        first_differing,
        note: None,
    }
}

#[cfg(test)]
#[path = "archive_tests.rs"]
pub(crate) mod tests;
