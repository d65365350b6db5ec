//! Where two byte strings differ: the first differing offset with hex
//! context, a unified diff when both are text, and the member-level
//! comparison when both are archives.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::archive::{self, ArchiveDiff};

/// Bytes of context shown before (and from) the first differing offset.
pub const HEX_CONTEXT: usize = 16;

/// Most lines of a unified diff kept in a report.
pub const MAX_DIFF_LINES: usize = 200;

/// Largest text (each side) a unified diff is computed for.
pub const MAX_TEXT_BYTES: usize = 4 << 20;

/// How deep archives inside archives are opened.
pub const MAX_ARCHIVE_DEPTH: u32 = 3;

/// How two contents differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentDiff {
    /// Where the bytes first differ.
    pub first_difference: FirstDifference,
    /// A unified diff, when both sides are text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextDiff>,
    /// Member-level differences, when both sides are archives of one format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveDiff>,
}

/// The first differing byte and its surroundings on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstDifference {
    /// Offset of the first differing byte (the shorter side's length when
    /// one side is a prefix of the other).
    pub offset: u64,
    /// Size of the baseline side.
    pub baseline_size: u64,
    /// Size of the other side.
    pub run_size: u64,
    /// Up to [`HEX_CONTEXT`] bytes before and from `offset`, baseline side.
    pub baseline: HexContext,
    /// The same window on the other side.
    pub run: HexContext,
}

/// A window of bytes as hex and as printable ASCII.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HexContext {
    /// Offset of the window's first byte.
    pub start: u64,
    /// The bytes before `offset`, hex, space-separated.
    pub before: String,
    /// The bytes from `offset` on, hex, space-separated.
    pub after: String,
    /// The whole window with non-printable bytes as `.`.
    pub ascii: String,
}

/// A unified diff of two texts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextDiff {
    /// The diff (`---`/`+++` headers, hunks), cut at [`MAX_DIFF_LINES`].
    pub unified: String,
    /// Whether lines were cut.
    pub truncated: bool,
}

/// Compares two contents named `name` (for diff headers); `None` when they
/// are equal.
pub fn compare(name: &str, a: &[u8], b: &[u8]) -> Option<ContentDiff> {
    compare_at_depth(name, a, b, 0)
}

pub(crate) fn compare_at_depth(name: &str, a: &[u8], b: &[u8], depth: u32) -> Option<ContentDiff> {
    if a == b {
        return None;
    }
    let text = if is_text(a) && is_text(b) {
        unified_diff(name, a, b)
    } else {
        None
    };
    let archive = if depth < MAX_ARCHIVE_DEPTH && text.is_none() {
        archive::compare(a, b, depth + 1)
    } else {
        None
    };
    Some(ContentDiff {
        first_difference: first_difference(a, b),
        text,
        archive,
    })
}

/// Text: valid UTF-8 without NUL bytes, and small enough to diff.
pub fn is_text(bytes: &[u8]) -> bool {
    bytes.len() <= MAX_TEXT_BYTES && !bytes.contains(&0) && std::str::from_utf8(bytes).is_ok()
}

/// The first differing offset of `a` and `b` with context on both sides.
pub fn first_difference(a: &[u8], b: &[u8]) -> FirstDifference {
    let offset = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    FirstDifference {
        offset: offset as u64,
        baseline_size: a.len() as u64,
        run_size: b.len() as u64,
        baseline: context(a, offset),
        run: context(b, offset),
    }
}

fn context(bytes: &[u8], offset: usize) -> HexContext {
    let start = offset.saturating_sub(HEX_CONTEXT);
    let end = offset.saturating_add(HEX_CONTEXT).min(bytes.len());
    let mid = offset.min(bytes.len());
    let hex = |s: &[u8]| {
        s.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let window = &bytes[start.min(bytes.len())..end];
    HexContext {
        start: start as u64,
        before: hex(&bytes[start.min(mid)..mid]),
        after: hex(&bytes[mid..end.max(mid)]),
        ascii: window
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect(),
    }
}

/// A unified diff (3 lines of context) of two texts, cut at
/// [`MAX_DIFF_LINES`]; `None` when either is not UTF-8.
pub fn unified_diff(name: &str, a: &[u8], b: &[u8]) -> Option<TextDiff> {
    let (a, b) = (std::str::from_utf8(a).ok()?, std::str::from_utf8(b).ok()?);
    let diff = similar::TextDiff::configure()
        .timeout(Duration::from_secs(2))
        .diff_lines(a, b);
    let full = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("baseline/{name}"), &format!("run/{name}"))
        .to_string();
    let mut lines = full.lines();
    let kept: Vec<&str> = lines.by_ref().take(MAX_DIFF_LINES).collect();
    let truncated = lines.next().is_some();
    let mut unified = kept.join("\n");
    unified.push('\n');
    Some(TextDiff { unified, truncated })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_with_context() {
        let a: Vec<u8> = (0u8..64).collect();
        let mut b = a.clone();
        b[40] = 0xff;
        let d = first_difference(&a, &b);
        assert_eq!(d.offset, 40);
        assert_eq!(d.baseline.start, 24);
        assert_eq!(d.baseline.before.split(' ').count(), 16);
        assert!(
            d.baseline.after.starts_with("28 29"),
            "{}",
            d.baseline.after
        );
        assert!(d.run.after.starts_with("ff 29"), "{}", d.run.after);
        assert_eq!(d.run.after.split(' ').count(), 16);
    }

    #[test]
    fn prefix_and_empty_sides() {
        let d = first_difference(b"abc", b"abcdef");
        assert_eq!((d.offset, d.baseline_size, d.run_size), (3, 3, 6));
        assert_eq!(d.baseline.after, "");
        assert_eq!(d.run.after, "64 65 66");
        let d = first_difference(b"", b"x");
        assert_eq!((d.offset, d.baseline.before.as_str()), (0, ""));
    }

    #[test]
    fn text_gets_a_unified_diff_binary_does_not() {
        let c = compare("f.txt", b"one\ntwo\nthree\n", b"one\n2\nthree\n").unwrap();
        let t = c.text.unwrap();
        assert!(t.unified.contains("--- baseline/f.txt"), "{}", t.unified);
        assert!(t.unified.contains("-two\n+2\n"), "{}", t.unified);
        assert_eq!(c.first_difference.offset, 4);
        let c = compare("f.bin", b"a\0b", b"a\0c").unwrap();
        assert!(c.text.is_none() && c.archive.is_none());
        assert!(compare("same", b"x", b"x").is_none());
    }

    #[test]
    fn long_diffs_are_cut() {
        let a: String = (0..1000).map(|i| format!("{i}\n")).collect();
        let b: String = (0..1000).map(|i| format!("{}\n", i * 2)).collect();
        let t = unified_diff("n", a.as_bytes(), b.as_bytes()).unwrap();
        assert!(t.truncated);
        assert_eq!(t.unified.lines().count(), MAX_DIFF_LINES);
    }
}
