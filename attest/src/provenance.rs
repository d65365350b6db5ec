//! The in-toto Statement v1 with an SLSA Provenance v1 predicate for one
//! execution. The field-by-field layout is documented in
//! `docs/provenance.md`; `BUILD_TYPE` names that layout.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::record::{ExecutionRecord, FileRecord, ReapiDigest, RecordError};

/// `_type` of every statement.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of the provenance predicate.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// Our build type: a REAPI action executed by hermeticd (docs/provenance.md).
pub const BUILD_TYPE: &str = "https://hermetic.dev/buildtypes/reapi-action/v1";
/// The DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// Our custom in-toto digest key: lowercase hex BLAKE3-256.
pub const BLAKE3_DIGEST_KEY: &str = "blake3";

/// Builds the statement for `record` (validated first).
pub fn statement(record: &ExecutionRecord) -> Result<Value, RecordError> {
    record.validate()?;
    if record.outputs.is_empty() {
        // in-toto requires at least one subject.
        return Err(RecordError::Empty("outputs"));
    }
    let mut outputs: Vec<&FileRecord> = record.outputs.iter().collect();
    outputs.sort_by(|a, b| a.path.cmp(&b.path));
    let subject: Vec<Value> = outputs
        .iter()
        .map(|f| json!({"name": f.path, "digest": file_digest(f)}))
        .collect();

    let external = json!({
        "argv": record.argv,
        "env": record.env,
        "workingDirectory": record.cwd,
        "outputPaths": record.declared_outputs,
        "inputRootDigest": reapi(&record.input_root),
        "imageDigest": reapi(&record.image.digest),
        "profile": record.profile_name,
        "timeout": duration_json(record.timeout),
    });
    let internal = json!({
        "profileDigest": record.profile_digest,
        "restrictions": record.restrictions,
        "hermeticdVersion": record.hermeticd_version,
        "kernel": record.kernel,
    });

    let mut deps = vec![
        json!({
            "name": "base-image",
            "uri": format!("hermetic-image:{}", record.image.name),
            "digest": {"sha256": record.image.digest.hash},
            "annotations": {
                "sizeBytes": record.image.digest.size_bytes,
                "sourceManifestDigest": record.image.source_manifest_digest,
                "trustRecordSha256": record.image.trust_record_sha256,
            },
        }),
        json!({
            "name": "input-root",
            "digest": input_root_digest(record),
            "annotations": {"sizeBytes": record.input_root.size_bytes},
        }),
    ];
    if let Some(inputs) = &record.inputs {
        let mut inputs: Vec<&FileRecord> = inputs.iter().collect();
        inputs.sort_by(|a, b| a.path.cmp(&b.path));
        deps.extend(
            inputs.iter().map(
                |f| json!({"name": format!("input-root/{}", f.path), "digest": file_digest(f)}),
            ),
        );
    }

    let byproducts = [
        ("stdout", &record.stdout),
        ("stderr", &record.stderr),
        ("execution-log", &record.execution_log),
    ]
    .map(|(name, d)| {
        json!({
            "name": name,
            "digest": {"sha256": d.hash},
            "annotations": {"sizeBytes": d.size_bytes},
        })
    });

    let predicate = json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": external,
            "internalParameters": internal,
            "resolvedDependencies": deps,
        },
        "runDetails": {
            "builder": {
                "id": record.builder_id,
                "version": {"hermeticd": record.hermeticd_version},
            },
            "metadata": {
                "invocationId": record.invocation_id,
                "startedOn": record.started_on.to_string(),
                "finishedOn": record.finished_on.to_string(),
            },
            "byproducts": byproducts,
        },
    });
    Ok(json!({
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }))
}

fn file_digest(f: &FileRecord) -> Value {
    let mut m = Map::new();
    m.insert("sha256".into(), f.sha256.clone().into());
    m.insert(BLAKE3_DIGEST_KEY.into(), f.blake3.clone().into());
    Value::Object(m)
}

/// The input root's digest set: SHA-256, and BLAKE3 when recorded (of the
/// same `Directory` blob).
fn input_root_digest(record: &ExecutionRecord) -> Value {
    let mut m = Map::new();
    m.insert("sha256".into(), record.input_root.hash.clone().into());
    if let Some(b3) = &record.input_root_blake3 {
        m.insert(BLAKE3_DIGEST_KEY.into(), b3.clone().into());
    }
    Value::Object(m)
}

fn reapi(d: &ReapiDigest) -> Value {
    json!({"hash": d.hash, "sizeBytes": d.size_bytes})
}

/// A duration as protobuf's JSON form: `600s`, `1.5s`.
fn duration_json(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        format!("{}s", d.as_secs())
    } else {
        let frac = format!("{nanos:09}");
        format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical;
    use crate::record::tests::sample;

    #[test]
    fn statement_shape() {
        let s = statement(&sample()).unwrap();
        assert_eq!(s["_type"], STATEMENT_TYPE);
        assert_eq!(s["predicateType"], PREDICATE_TYPE);
        assert_eq!(s["subject"][0]["name"], "out/hello");
        assert_eq!(
            s["subject"][0]["digest"]["blake3"].as_str().unwrap().len(),
            64
        );
        let p = &s["predicate"];
        assert_eq!(p["buildDefinition"]["buildType"], BUILD_TYPE);
        assert_eq!(
            p["buildDefinition"]["externalParameters"]["timeout"],
            "600s"
        );
        let root = &p["buildDefinition"]["resolvedDependencies"][1];
        assert_eq!(root["name"], "input-root");
        assert_eq!(root["digest"]["sha256"], sample().input_root.hash);
        assert_eq!(
            root["digest"]["blake3"],
            blake3::hash(b"input root").to_hex().as_str()
        );
        assert_eq!(
            p["buildDefinition"]["resolvedDependencies"][2]["name"],
            "input-root/hello.c"
        );
        assert_eq!(
            p["runDetails"]["metadata"]["startedOn"],
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(p["runDetails"]["byproducts"][2]["name"], "execution-log");
    }

    #[test]
    fn deterministic() {
        let mut r = sample();
        let a = canonical::to_vec(&statement(&r).unwrap()).unwrap();
        r.outputs.push(FileRecord::of("out/a", b"a", false));
        r.outputs.reverse();
        let b = canonical::to_vec(&statement(&r).unwrap()).unwrap();
        r.outputs.reverse();
        let c = canonical::to_vec(&statement(&r).unwrap()).unwrap();
        assert_ne!(a, b);
        assert_eq!(b, c);
    }

    #[test]
    fn durations() {
        assert_eq!(duration_json(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration_json(Duration::from_secs(0)), "0s");
    }

    #[test]
    fn invalid_record_is_refused() {
        let mut r = sample();
        r.builder_id.clear();
        assert_eq!(statement(&r), Err(RecordError::Empty("builder_id")));
    }
}
