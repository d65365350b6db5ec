//! DSSE envelopes (Dead Simple Signing Envelope, v1.0): the payload is
//! signed as `PAE(payloadType, payload)`, never as the JSON around it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

/// A DSSE envelope as JSON: `payload` is standard base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    /// Base64 of the payload bytes.
    pub payload: String,
    /// How to interpret the payload.
    pub payload_type: String,
    /// One or more signatures over `PAE(payloadType, payload)`.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature in an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    /// The securesystemslib keyid of the signing key.
    pub keyid: String,
    /// Base64 of the Ed25519 signature.
    pub sig: String,
}

/// Why an envelope does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DsseError {
    /// The payload is not valid base64.
    #[error("envelope payload is not base64")]
    PayloadEncoding,
    /// The envelope has no signature by the given key id.
    #[error("envelope has no signature by key {0}")]
    NoSignatureByKey(String),
    /// The signature is malformed or does not match.
    #[error("signature by key {0} does not verify")]
    BadSignature(String),
}

/// Pre-Authentication Encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII
/// decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

impl Envelope {
    /// Signs `payload` with `key`, recording `keyid`.
    pub fn sign(payload_type: &str, payload: &[u8], keyid: &str, key: &SigningKey) -> Self {
        let sig = key.sign(&pae(payload_type, payload));
        Self {
            payload: B64.encode(payload),
            payload_type: payload_type.to_string(),
            signatures: vec![EnvelopeSignature {
                keyid: keyid.to_string(),
                sig: B64.encode(sig.to_bytes()),
            }],
        }
    }

    /// The decoded payload bytes.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, DsseError> {
        B64.decode(&self.payload)
            .map_err(|_| DsseError::PayloadEncoding)
    }

    /// Verifies the signature made by `keyid` with `key`.
    pub fn verify(&self, keyid: &str, key: &VerifyingKey) -> Result<(), DsseError> {
        let payload = self.payload_bytes()?;
        let s = self
            .signatures
            .iter()
            .find(|s| s.keyid == keyid)
            .ok_or_else(|| DsseError::NoSignatureByKey(keyid.into()))?;
        let bad = || DsseError::BadSignature(keyid.into());
        let raw = B64.decode(&s.sig).map_err(|_| bad())?;
        let sig = Signature::from_slice(&raw).map_err(|_| bad())?;
        key.verify(&pae(&self.payload_type, &payload), &sig)
            .map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_known_answer() {
        // The example from the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn sign_verify_and_tamper() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let env = Envelope::sign("t", b"{\"a\":1}", "k1", &key);
        env.verify("k1", &key.verifying_key()).unwrap();
        assert_eq!(
            env.verify("k1", &other.verifying_key()),
            Err(DsseError::BadSignature("k1".into()))
        );
        assert_eq!(
            env.verify("k2", &key.verifying_key()),
            Err(DsseError::NoSignatureByKey("k2".into()))
        );
        let mut edited = env.clone();
        edited.payload = B64.encode(b"{\"a\":2}");
        assert!(edited.verify("k1", &key.verifying_key()).is_err());
        let mut retyped = env;
        retyped.payload_type = "u".into();
        assert!(retyped.verify("k1", &key.verifying_key()).is_err());
    }
}
