//! SPDX 2.3 JSON. Every file carries SHA1 (which SPDX requires) and SHA256.
//! BLAKE3 is left out: SPDX 2.3 lists it as an algorithm, but its validators
//! (spdx-tools) demand at least 256 hex digits for it, which BLAKE3-256 is
//! not; the CycloneDX document carries it instead.
//!
//! Elements: the document DESCRIBES the action package, which CONTAINS the
//! output files and is GENERATED_FROM the input root package (which
//! CONTAINS the input files, when they are listed); the base image package
//! is a BUILD_TOOL_OF the action and CONTAINS its Debian packages.

use serde_json::{Value, json};
use sha1::Sha1;
use sha2::Digest as _;

use super::{DpkgDb, SbomError, record_id};
use crate::record::{ExecutionRecord, FileRecord, hex};

/// The SPDX 2.3 document for `record`.
pub fn spdx(record: &ExecutionRecord, image_packages: Option<&DpkgDb>) -> Result<Value, SbomError> {
    record.validate()?;
    let id = record_id(record);
    let mut files = Vec::new();
    let mut packages = Vec::new();
    let mut rels = vec![rel("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Action")];

    let outputs = sorted(&record.outputs);
    for (i, f) in outputs.iter().enumerate() {
        let sid = format!("SPDXRef-File-out-{i}");
        files.push(file(&sid, f)?);
        rels.push(rel("SPDXRef-Action", "CONTAINS", &sid));
    }
    let mut action = json!({
        "SPDXID": "SPDXRef-Action",
        "name": "hermetic-action",
        "versionInfo": id,
        "downloadLocation": "NOASSERTION",
        "supplier": "Organization: hermetic",
        "primaryPackagePurpose": "FILE",
        "comment": format!("invocation {} on builder {}", record.invocation_id, record.builder_id),
        "filesAnalyzed": !outputs.is_empty(),
    });
    if !outputs.is_empty() {
        action["packageVerificationCode"] =
            json!({"packageVerificationCodeValue": verification_code(&outputs)?});
    }
    packages.push(action);

    let inputs = record.inputs.as_deref().map(sorted).unwrap_or_default();
    let mut root = json!({
        "SPDXID": "SPDXRef-InputRoot",
        "name": "input-root",
        "versionInfo": format!("sha256:{}", record.input_root.hash),
        "downloadLocation": "NOASSERTION",
        "primaryPackagePurpose": "SOURCE",
        "checksums": [checksum("SHA256", &record.input_root.hash)],
        "filesAnalyzed": !inputs.is_empty(),
    });
    for (i, f) in inputs.iter().enumerate() {
        let sid = format!("SPDXRef-File-in-{i}");
        files.push(file(&sid, f)?);
        rels.push(rel("SPDXRef-InputRoot", "CONTAINS", &sid));
    }
    if !inputs.is_empty() {
        root["packageVerificationCode"] =
            json!({"packageVerificationCodeValue": verification_code(&inputs)?});
    }
    packages.push(root);
    rels.push(rel("SPDXRef-Action", "GENERATED_FROM", "SPDXRef-InputRoot"));

    packages.push(json!({
        "SPDXID": "SPDXRef-Image",
        "name": record.image.name,
        "versionInfo": format!("sha256:{}", record.image.digest.hash),
        "downloadLocation": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [checksum("SHA256", &record.image.digest.hash)],
        "filesAnalyzed": false,
        "comment": format!(
            "source manifest {}; trust record sha256:{}",
            record.image.source_manifest_digest, record.image.trust_record_sha256
        ),
    }));
    rels.push(rel("SPDXRef-Image", "BUILD_TOOL_OF", "SPDXRef-Action"));
    if let Some(db) = image_packages {
        for (i, p) in db.packages.iter().enumerate() {
            let sid = format!("SPDXRef-Deb-{i}-{}", sanitize(&p.name));
            let mut pkg = json!({
                "SPDXID": sid,
                "name": p.name,
                "versionInfo": p.version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "primaryPackagePurpose": "LIBRARY",
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": p.purl(&db.distro),
                }],
            });
            if let Some(m) = &p.maintainer {
                pkg["supplier"] = supplier(m).into();
            }
            if let Some(h) = &p.homepage {
                pkg["homepage"] = h.clone().into();
            }
            if let Some(s) = &p.source {
                pkg["sourceInfo"] = format!("built from the Debian source package {s}").into();
            }
            packages.push(pkg);
            rels.push(rel("SPDXRef-Image", "CONTAINS", &sid));
        }
    }

    Ok(json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("hermetic-action-{}", &id[..16]),
        "documentNamespace": format!("https://hermetic.dev/spdx/{id}"),
        "creationInfo": {
            "created": record.finished_on.to_seconds_string(),
            "creators": [format!("Tool: hermeticd-{}", record.hermeticd_version)],
        },
        "packages": packages,
        "files": files,
        "relationships": rels,
    }))
}

fn sorted(files: &[FileRecord]) -> Vec<&FileRecord> {
    let mut v: Vec<&FileRecord> = files.iter().collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

fn rel(a: &str, kind: &str, b: &str) -> Value {
    json!({"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b})
}

fn checksum(alg: &str, value: &str) -> Value {
    json!({"algorithm": alg, "checksumValue": value})
}

fn sha1_of(f: &FileRecord) -> Result<&str, SbomError> {
    f.sha1
        .as_deref()
        .ok_or_else(|| SbomError::MissingSha1(f.path.clone()))
}

fn file(sid: &str, f: &FileRecord) -> Result<Value, SbomError> {
    Ok(json!({
        "SPDXID": sid,
        "fileName": format!("./{}", f.path),
        "checksums": [checksum("SHA1", sha1_of(f)?), checksum("SHA256", &f.sha256)],
        "licenseConcluded": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    }))
}

/// SPDX 2.3 §7.9: SHA1 of the sorted, concatenated SHA1s of the files.
fn verification_code(files: &[&FileRecord]) -> Result<String, SbomError> {
    let mut sums = files
        .iter()
        .map(|f| sha1_of(f))
        .collect::<Result<Vec<_>, _>>()?;
    sums.sort_unstable();
    Ok(hex(&Sha1::digest(sums.concat().as_bytes())))
}

/// `Name <mail>` → `Person: Name (mail)`.
fn supplier(maintainer: &str) -> String {
    match maintainer.split_once('<') {
        Some((name, rest)) => {
            format!(
                "Person: {} ({})",
                name.trim(),
                rest.trim_end_matches('>').trim()
            )
        }
        None => format!("Person: {}", maintainer.trim()),
    }
}

/// SPDX ids allow letters, digits, `.` and `-`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample;
    use crate::sbom::dpkg::{parse_status, tests::STATUS};

    #[test]
    fn document_shape() {
        let db = DpkgDb {
            distro: "debian".into(),
            packages: parse_status(STATUS),
        };
        let d = spdx(&sample(), Some(&db)).unwrap();
        assert_eq!(d["spdxVersion"], "SPDX-2.3");
        assert_eq!(d["files"][0]["fileName"], "./out/hello");
        assert_eq!(d["files"][0]["checksums"][0]["algorithm"], "SHA1");
        assert_eq!(d["packages"][3]["SPDXID"], "SPDXRef-Deb-0-g---12");
        assert_eq!(
            d["packages"][4]["supplier"],
            "Person: GNU Libc Maintainers (debian-glibc@lists.debian.org)"
        );
        assert_eq!(d, spdx(&sample(), Some(&db)).unwrap());
    }

    #[test]
    fn missing_sha1_is_an_error() {
        let mut r = sample();
        r.outputs[0].sha1 = None;
        assert_eq!(
            spdx(&r, None),
            Err(SbomError::MissingSha1("out/hello".into()))
        );
    }

    #[test]
    fn verification_code_known_answer() {
        // One file "abc": SHA1(hex(SHA1("abc"))).
        let f = FileRecord::of("a", b"abc", false);
        let want = hex(&Sha1::digest(b"a9993e364706816aba3e25717850c26c9cd0d89d"));
        assert_eq!(verification_code(&[&f]).unwrap(), want);
    }
}
