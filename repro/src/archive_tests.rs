//! Archives built in memory, differing in one known way each.

use std::io::Write;

use super::*;

/// A tar of `(name, content, mtime)` members.
pub(crate) fn tar_of(members: &[(&str, &[u8], u64)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mtime) in members {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(*mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8], mtime: u32) -> Vec<u8> {
    let mut e = flate2::GzBuilder::new()
        .mtime(mtime)
        .write(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zip_of(members: &[(&str, &[u8], u16)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data, minute) in members {
        let t = zip::DateTime::from_date_and_time(2020, 1, 1, 0, *minute as u8, 0).unwrap();
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(t);
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn ar_of(members: &[(&str, &[u8], u64)]) -> Vec<u8> {
    let mut b = ar::Builder::new(Vec::new());
    for (name, data, mtime) in members {
        let mut h = ar::Header::new(name.as_bytes().to_vec(), data.len() as u64);
        h.set_mtime(*mtime);
        h.set_mode(0o644);
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn tar_member_content_and_names() {
    let a = tar_of(&[
        ("a.txt", b"same\n", 0),
        ("b.txt", b"one\n", 0),
        ("gone", b"", 0),
    ]);
    let b = tar_of(&[
        ("a.txt", b"same\n", 0),
        ("b.txt", b"two\n", 0),
        ("new", b"", 0),
    ]);
    let d = compare(&a, &b, 1).unwrap();
    assert_eq!(d.format, "tar");
    assert_eq!(
        (d.added.clone(), d.removed.clone()),
        (vec!["new".into()], vec!["gone".into()])
    );
    assert!(!d.order_changed);
    assert_eq!(d.differing_members, 1);
    let m = d.first_differing.unwrap();
    assert_eq!(m.name, "b.txt");
    assert!(m.metadata.is_empty());
    let c = m.content.unwrap();
    assert_eq!(c.first_difference.offset, 0);
    assert!(c.text.unwrap().unified.contains("-one\n+two\n"));
}

#[test]
fn tar_mtime_only_and_order() {
    let a = tar_of(&[("x", b"1", 100), ("y", b"2", 100)]);
    let b = tar_of(&[("y", b"2", 100), ("x", b"1", 200)]);
    let d = compare(&a, &b, 1).unwrap();
    assert!(d.order_changed);
    let m = d.first_differing.unwrap();
    assert_eq!(m.name, "x");
    assert_eq!(
        m.metadata,
        vec![FieldChange {
            field: "mtime".into(),
            baseline: "100".into(),
            run: "200".into()
        }]
    );
    assert!(m.content.is_none());
}

#[test]
fn gzipped_tar_reports_header_and_members() {
    let a = gzip(&tar_of(&[("m", b"left", 0)]), 1);
    let b = gzip(&tar_of(&[("m", b"right", 0)]), 2);
    let d = compare(&a, &b, 1).unwrap();
    assert_eq!(d.format, "tar+gzip");
    assert_eq!(d.header[0].field, "gzip mtime");
    assert_eq!(d.first_differing.unwrap().name, "m");
    // A plain gzip: one decompressed member.
    let d = compare(&gzip(b"x\n", 0), &gzip(b"y\n", 0), 1).unwrap();
    assert_eq!(d.format, "gzip");
    assert_eq!(d.first_differing.unwrap().name, "(decompressed)");
}

#[test]
fn zip_members_and_timestamps() {
    let a = zip_of(&[("p/a", b"aaa", 0), ("p/b", b"bbb", 0)]);
    let b = zip_of(&[("p/a", b"aaa", 5), ("p/b", b"bbb", 0), ("p/c", b"c", 0)]);
    let d = compare(&a, &b, 1).unwrap();
    assert_eq!(d.format, "zip");
    assert_eq!(d.added, vec!["p/c".to_owned()]);
    let m = d.first_differing.unwrap();
    assert_eq!(m.name, "p/a");
    assert_eq!(m.metadata[0].field, "mtime");
}

#[test]
fn ar_members() {
    let a = ar_of(&[("x.o", b"\x7fELF-1", 0), ("y.o", b"y", 0)]);
    let b = ar_of(&[("x.o", b"\x7fELF-2", 0), ("y.o", b"y", 7)]);
    let d = compare(&a, &b, 1).unwrap();
    assert_eq!((d.format.as_str(), d.differing_members), ("ar", 2));
    let m = d.first_differing.unwrap();
    assert_eq!(m.name, "x.o");
    assert_eq!(m.content.unwrap().first_difference.offset, 5);
}

#[test]
fn nested_archives_are_opened() {
    let inner_a = tar_of(&[("deep.txt", b"a\n", 0)]);
    let inner_b = tar_of(&[("deep.txt", b"b\n", 0)]);
    let a = zip_of(&[("inner.tar", &inner_a, 0)]);
    let b = zip_of(&[("inner.tar", &inner_b, 0)]);
    let d = compare(&a, &b, 1).unwrap();
    let inner = d.first_differing.unwrap().content.unwrap().archive.unwrap();
    assert_eq!(inner.format, "tar");
    assert_eq!(inner.first_differing.unwrap().name, "deep.txt");
}

#[test]
fn duplicates_and_mismatched_formats() {
    let a = tar_of(&[("d", b"1", 0), ("d", b"2", 0)]);
    let b = tar_of(&[("d", b"1", 0), ("d", b"3", 0)]);
    assert_eq!(
        compare(&a, &b, 1).unwrap().first_differing.unwrap().name,
        "d (#2)"
    );
    assert!(compare(&a, &zip_of(&[("d", b"1", 0)]), 1).is_none());
    assert!(compare(b"plain", b"text", 1).is_none());
}

#[test]
fn corrupt_archives_get_a_note() {
    let mut bad = zip_of(&[("a", b"x", 0)]);
    let n = bad.len();
    bad.truncate(n - 10);
    let d = compare(&zip_of(&[("a", b"y", 0)]), &bad, 1).unwrap();
    assert!(d.note.is_some(), "{d:?}");
}
