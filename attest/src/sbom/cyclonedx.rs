//! CycloneDX 1.6 JSON. Files carry `SHA-256` and `BLAKE3` hashes (both in
//! the 1.6 `hash-alg` enumeration); the base image is a `container`
//! component with its Debian packages nested as `library` components.

use serde_json::{Value, json};

use super::{DpkgDb, SbomError, record_id, uuid_v5_url};
use crate::record::{ExecutionRecord, FileRecord};

/// The CycloneDX 1.6 document for `record`; `image_packages` comes from
/// [`super::dpkg::read_rootfs`] on the image's rootfs.
pub fn cyclonedx(
    record: &ExecutionRecord,
    image_packages: Option<&DpkgDb>,
) -> Result<Value, SbomError> {
    record.validate()?;
    let id = record_id(record);
    let mut components = Vec::new();
    let mut inputs = Vec::new();
    if let Some(files) = &record.inputs {
        for f in sorted(files) {
            let r = format!("input:{}", f.path);
            components.push(file_component(&r, f, "input"));
            inputs.push(Value::String(r));
        }
    }
    components.push(json!({
        "type": "data",
        "bom-ref": "input-root",
        "name": "input-root",
        "description": "REAPI input root Directory",
        "hashes": [{"alg": "SHA-256", "content": record.input_root.hash}],
        "properties": [prop("hermetic:role", "input-root"), prop("hermetic:sizeBytes", &record.input_root.size_bytes.to_string())],
    }));
    inputs.push("input-root".into());
    for f in sorted(&record.outputs) {
        components.push(file_component(&format!("output:{}", f.path), f, "output"));
    }
    let mut image = json!({
        "type": "container",
        "bom-ref": "image",
        "name": record.image.name,
        "version": format!("sha256:{}", record.image.digest.hash),
        "hashes": [{"alg": "SHA-256", "content": record.image.digest.hash}],
        "properties": [
            prop("hermetic:role", "base-image"),
            prop("hermetic:sourceManifestDigest", &record.image.source_manifest_digest),
            prop("hermetic:trustRecordSha256", &record.image.trust_record_sha256),
        ],
    });
    if let Some(db) = image_packages {
        let debs: Vec<Value> = db
            .packages
            .iter()
            .map(|p| {
                let mut c = json!({
                    "type": "library",
                    "bom-ref": format!("deb:{}:{}", p.name, p.architecture),
                    "name": p.name,
                    "version": p.version,
                    "purl": p.purl(&db.distro),
                });
                if let Some(m) = &p.maintainer {
                    c["publisher"] = m.clone().into();
                }
                if let Some(h) = &p.homepage {
                    c["externalReferences"] = json!([{"type": "website", "url": h}]);
                }
                c
            })
            .collect();
        if !debs.is_empty() {
            image["components"] = debs.into();
        }
    }
    components.push(image);
    inputs.push("image".into());

    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid_v5_url(&format!("https://hermetic.dev/sbom/{id}"))),
        "version": 1,
        "metadata": {
            "timestamp": record.finished_on.to_seconds_string(),
            "tools": {"components": [{"type": "application", "name": "hermeticd", "version": record.hermeticd_version}]},
            "component": {
                "type": "application",
                "bom-ref": "action",
                "name": "hermetic-action",
                "version": id,
                "properties": [
                    prop("hermetic:invocationId", &record.invocation_id),
                    prop("hermetic:builderId", &record.builder_id),
                    prop("hermetic:profile", &record.profile_name),
                ],
            },
        },
        "components": components,
        "dependencies": [{"ref": "action", "dependsOn": inputs}],
    }))
}

fn sorted(files: &[FileRecord]) -> Vec<&FileRecord> {
    let mut v: Vec<&FileRecord> = files.iter().collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

fn prop(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

fn file_component(bom_ref: &str, f: &FileRecord, role: &str) -> Value {
    json!({
        "type": "file",
        "bom-ref": bom_ref,
        "name": f.path,
        "hashes": [
            {"alg": "SHA-256", "content": f.sha256},
            {"alg": "BLAKE3", "content": f.blake3},
        ],
        "properties": [prop("hermetic:role", role), prop("hermetic:sizeBytes", &f.size.to_string())],
    })
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
        let d = cyclonedx(&sample(), Some(&db)).unwrap();
        assert_eq!(d["specVersion"], "1.6");
        let comps = d["components"].as_array().unwrap();
        let out = comps
            .iter()
            .find(|c| c["bom-ref"] == "output:out/hello")
            .unwrap();
        assert_eq!(out["hashes"][1]["alg"], "BLAKE3");
        let image = comps.iter().find(|c| c["bom-ref"] == "image").unwrap();
        assert_eq!(image["components"].as_array().unwrap().len(), 2);
        assert_eq!(d, cyclonedx(&sample(), Some(&db)).unwrap());
    }
}
