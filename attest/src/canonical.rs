//! Canonical JSON: the one byte form of every document this crate signs,
//! logs or digests.
//!
//! Object keys are sorted by their UTF-8 bytes, there is no insignificant
//! whitespace, strings use JSON's standard escapes (as `serde_json` writes
//! them), and numbers are written as `serde_json` writes them. Keys are sorted
//! here explicitly rather than relying on `serde_json::Map` ordering, which
//! changes when any crate in the build enables `preserve_order`.
//!
//! For documents made only of ASCII strings, integers, arrays and objects
//! (key records, DSSE envelopes) this equals OLPC canonical JSON as
//! securesystemslib's `encode_canonical` produces it, which is what the
//! securesystemslib keyid is computed over.

use serde::Serialize;
use serde_json::Value;

/// Serializes `value` canonically.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let v = serde_json::to_value(value)?;
    let mut out = Vec::with_capacity(256);
    write_value(&v, &mut out)?;
    Ok(out)
}

/// Serializes `value` canonically as a `String`.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let bytes = to_vec(value)?;
    // Only valid UTF-8 is ever written: serde_json strings plus ASCII syntax.
    Ok(String::from_utf8(bytes).expect("canonical JSON is UTF-8"))
}

fn write_value(v: &Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {
            serde_json::to_writer(&mut *out, v)?;
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k)?;
                out.push(b':');
                write_value(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorted_compact_nested() {
        let v = json!({"b": [3, {"z": 1, "a": null}], "a": "x\"y", "B": true});
        assert_eq!(
            to_string(&v).unwrap(),
            r#"{"B":true,"a":"x\"y","b":[3,{"a":null,"z":1}]}"#
        );
    }

    #[test]
    fn key_record_matches_securesystemslib_form() {
        let v = json!({"scheme": "ed25519", "keyval": {"public": "ab"}, "keytype": "ed25519"});
        assert_eq!(
            to_string(&v).unwrap(),
            r#"{"keytype":"ed25519","keyval":{"public":"ab"},"scheme":"ed25519"}"#
        );
    }
}
