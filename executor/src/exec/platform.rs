//! Platform properties: which base image and sandbox profile an action
//! gets, an optional lower memory limit, and the checks of `OSFamily` and
//! `ISA`.
//!
//! Every property is either honoured or refused: an unknown name is
//! INVALID_ARGUMENT, never silently ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2::Platform;
use hermetic_sandbox::profile::Profile;

use crate::error::{Error, Result};

/// The property selecting the base image.
pub const CONTAINER_IMAGE: &str = "container-image";
/// The property selecting the sandbox profile.
pub const HERMETIC_PROFILE: &str = "hermetic-profile";
/// A memory limit in bytes (decimal), applied as the profile's
/// `limits.memory_bytes` when lower than the profile's own; the effective
/// profile (and so its digest) records it.
pub const HERMETIC_MEMORY: &str = "hermetic-memory";
/// The operating system family (only Linux).
pub const OS_FAMILY: &str = "OSFamily";
/// The instruction set.
pub const ISA: &str = "ISA";

/// Images and profiles an action may choose from.
#[derive(Debug, Clone, Default)]
pub struct Choices {
    /// Image name → root filesystem.
    pub images: BTreeMap<String, PathBuf>,
    /// The image used when none is named.
    pub default_image: Option<String>,
    /// Profile name → validated profile.
    pub profiles: BTreeMap<String, Arc<Profile>>,
    /// The profile used when none is named.
    pub default_profile: String,
}

/// What an action runs on.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The image's name.
    pub image: String,
    /// Its root filesystem.
    pub rootfs: PathBuf,
    /// Whether the daemon's default was used because the client named none.
    pub image_defaulted: bool,
    /// The profile.
    pub profile: Arc<Profile>,
    /// The profile's digest.
    pub profile_digest: String,
    /// A reproducibility check, when the platform asks for one.
    pub repro: Option<crate::exec::repro::Request>,
}

/// ISA names accepted for this machine.
fn isa_names() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["x86-64", "x86_64", "amd64"],
        "aarch64" => vec!["aarch64", "arm64"],
        other => vec![other],
    }
}

impl Choices {
    /// Resolves a platform against the choices.
    pub fn select(&self, platform: Option<&Platform>) -> Result<Selection> {
        let mut image = None;
        let mut profile = None;
        let mut memory = None;
        let mut repro = crate::exec::repro::Properties::default();
        let mut seen = std::collections::HashSet::new();
        for p in platform
            .map(|p| p.properties.as_slice())
            .unwrap_or_default()
        {
            if !seen.insert(p.name.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "platform property {:?} is given twice",
                    p.name
                )));
            }
            match p.name.as_str() {
                CONTAINER_IMAGE => image = Some(p.value.clone()),
                HERMETIC_PROFILE => profile = Some(p.value.clone()),
                HERMETIC_MEMORY => match p.value.parse::<u64>() {
                    Ok(bytes) if bytes > 0 => memory = Some(bytes),
                    _ => {
                        return Err(Error::InvalidArgument(format!(
                            "{HERMETIC_MEMORY} {:?} is not a positive number of bytes",
                            p.value
                        )));
                    }
                },
                OS_FAMILY => {
                    if !p.value.eq_ignore_ascii_case("linux") {
                        return Err(Error::FailedPrecondition(format!(
                            "OSFamily {:?} is not available: this executor runs Linux",
                            p.value
                        )));
                    }
                }
                ISA => {
                    if !isa_names().iter().any(|n| p.value.eq_ignore_ascii_case(n)) {
                        return Err(Error::FailedPrecondition(format!(
                            "ISA {:?} is not available: this executor runs {}",
                            p.value,
                            isa_names().join(" / ")
                        )));
                    }
                }
                name if repro.accepts(name) => repro.set(name, &p.value)?,
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "unsupported platform property {other:?}; supported: {CONTAINER_IMAGE}, \
                         {HERMETIC_PROFILE}, {HERMETIC_MEMORY}, {OS_FAMILY}, {ISA}, {}",
                        crate::exec::repro::PROPERTIES.join(", ")
                    )));
                }
            }
        }
        let accepted = || {
            let names: Vec<&str> = self.images.keys().map(String::as_str).collect();
            if names.is_empty() {
                "none are configured".to_owned()
            } else {
                format!("accepted: {}", names.join(", "))
            }
        };
        let image_defaulted = image.is_none();
        let image = match image.or_else(|| self.default_image.clone()) {
            Some(i) => i,
            None => {
                return Err(Error::FailedPrecondition(format!(
                    "the action names no {CONTAINER_IMAGE} and no default image is configured; {}",
                    accepted()
                )));
            }
        };
        let rootfs = self.images.get(&image).cloned().ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "{CONTAINER_IMAGE} {image:?} is not an image of this daemon; {}",
                accepted()
            ))
        })?;
        let profile_name = profile.unwrap_or_else(|| self.default_profile.clone());
        let mut profile = self.profiles.get(&profile_name).cloned().ok_or_else(|| {
            let names: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
            Error::FailedPrecondition(format!(
                "{HERMETIC_PROFILE} {profile_name:?} is not loaded; accepted: [{}]",
                names.join(", ")
            ))
        })?;
        if let Some(bytes) = memory {
            let mut limited = (*profile).clone();
            let current = limited.limits.memory_bytes;
            limited.limits.memory_bytes = Some(current.map_or(bytes, |m| m.min(bytes)));
            profile = Arc::new(limited);
        }
        Ok(Selection {
            image,
            rootfs,
            image_defaulted,
            profile_digest: profile.digest(),
            profile,
            repro: repro.request()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazel_remote_apis::build::bazel::remote::execution::v2::platform::Property;

    fn choices() -> Choices {
        let profile = Profile::from_toml("name = \"strict\"\ndescription = \"t\"\n", "t").unwrap();
        Choices {
            images: [("busybox".to_owned(), PathBuf::from("/x"))].into(),
            default_image: Some("busybox".into()),
            profiles: [("strict".to_owned(), Arc::new(profile))].into(),
            default_profile: "strict".into(),
        }
    }

    fn platform(props: &[(&str, &str)]) -> Platform {
        Platform {
            properties: props
                .iter()
                .map(|(n, v)| Property {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn defaults_and_refusals() {
        let c = choices();
        let s = c.select(None).unwrap();
        assert!(s.image_defaulted);
        assert_eq!(s.image, "busybox");
        let s = c
            .select(Some(&platform(&[
                ("OSFamily", "Linux"),
                ("container-image", "busybox"),
            ])))
            .unwrap();
        assert!(!s.image_defaulted);
        let e = c.select(Some(&platform(&[("container-image", "docker://x:latest")])));
        assert!(matches!(e, Err(Error::FailedPrecondition(m)) if m.contains("busybox")));
        let e = c.select(Some(&platform(&[("gpu", "yes")])));
        assert!(matches!(e, Err(Error::InvalidArgument(_))));
        let e = c.select(Some(&platform(&[("hermetic-profile", "nope")])));
        assert!(matches!(e, Err(Error::FailedPrecondition(m)) if m.contains("strict")));
        let e = c.select(Some(&platform(&[("OSFamily", "Windows")])));
        assert!(e.is_err());
        let s = c
            .select(Some(&platform(&[("hermetic-memory", "268435456")])))
            .unwrap();
        assert_eq!(s.profile.limits.memory_bytes, Some(268435456));
        assert_ne!(s.profile_digest, c.select(None).unwrap().profile_digest);
        let e = c.select(Some(&platform(&[("hermetic-memory", "1G")])));
        assert!(matches!(e, Err(Error::InvalidArgument(_))));
    }
}
