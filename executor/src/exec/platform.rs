//! Platform properties: which base image and sandbox profile an action
//! gets, an optional lower memory limit, and the checks of `OSFamily` and
//! `ISA`.
//!
//! Every property is either honoured or refused: an unknown name is
//! INVALID_ARGUMENT, never silently ignored.
//!
//! `container-image` takes a digest only (see [`crate::images::reference`]):
//! `hermetic-image:blake3:<64 hex>` (or the sha256 form), naming an image of
//! the daemon's store. Aliases are resolved by the client before it builds
//! the action, so no alias is ever part of an action key. With
//! `require_trusted_images` the image must be trusted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2::Platform;
use hermetic_sandbox::profile::Profile;

use crate::error::{Error, Result};
use crate::images::{ImageDigest, ImageLease, ImageStore};

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
#[derive(Debug, Clone)]
pub struct Choices {
    /// The image store.
    pub images: Arc<ImageStore>,
    /// The image used when an action names none (resolved at start-up).
    pub default_image: Option<ImageDigest>,
    /// Refuse images without a trust record saying trusted.
    pub require_trusted_images: bool,
    /// Profile name → validated profile.
    pub profiles: BTreeMap<String, Arc<Profile>>,
    /// The profile used when none is named.
    pub default_profile: String,
    /// The alert hook, told about refused (untrusted) images.
    pub alerts: Option<Arc<crate::alerts::Alerter>>,
}

/// What an action runs on.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The image, pinned form (`hermetic-image:blake3:HEX`).
    pub image: String,
    /// The image's BLAKE3 digest.
    pub image_digest: ImageDigest,
    /// Its root filesystem in the store.
    pub rootfs: PathBuf,
    /// Keeps the image from being removed while the action exists.
    pub image_lease: ImageLease,
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
        let image_defaulted = image.is_none();
        let (image, rootfs, image_lease) = self.select_image(image)?;
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
            image: image.to_string(),
            image_digest: image,
            rootfs,
            image_lease,
            image_defaulted,
            profile_digest: profile.digest(),
            profile,
            repro: repro.request()?,
        })
    }
}

impl Choices {
    /// Before a cached result is served: with `require_trusted_images`, the
    /// image the action names (or the default) must still be trusted, so
    /// that untrusting an image stops its use at once. Only the Action's
    /// platform is looked at (the hit path does not read the Command).
    pub fn recheck_trust(&self, platform: Option<&Platform>) -> Result<()> {
        let Some(digest) = self.trust_subject(platform) else {
            return Ok(());
        };
        if self.images.trusted(&digest)? {
            return Ok(());
        }
        Err(self.untrusted(&digest))
    }

    /// [`Choices::recheck_trust`] from memory and one `stat`: true when
    /// the image is known to be trusted still (or no check applies); false
    /// when that is not known (ask `recheck_trust`, which reports).
    pub fn recheck_trust_recent(&self, platform: Option<&Platform>) -> bool {
        match self.trust_subject(platform) {
            None => true,
            Some(digest) => self.images.trusted_recent(&digest) == Some(true),
        }
    }

    /// The image whose trust a cached result of an action on `platform`
    /// needs, if any.
    fn trust_subject(&self, platform: Option<&Platform>) -> Option<ImageDigest> {
        if !self.require_trusted_images {
            return None;
        }
        let named = platform
            .and_then(|p| p.properties.iter().find(|p| p.name == CONTAINER_IMAGE))
            .map(|p| p.value.as_str());
        match named {
            Some(value) => match ImageDigest::parse(value) {
                Ok(Some(d)) => Some(d),
                // Not a digest: such an action never ran here.
                _ => None,
            },
            None => self.default_image.clone(),
        }
    }

    /// The refusal of an untrusted image, told to the alert hook too (a
    /// verification failure).
    fn untrusted(&self, digest: &ImageDigest) -> Error {
        let message = format!(
            "image {digest} is not trusted on this daemon (require_trusted_images); an admin \
             trusts it with `hermetic image trust {digest}`"
        );
        if let Some(alerts) = &self.alerts {
            alerts.fire(crate::alerts::Alert::new(
                crate::alerts::AlertKind::VerificationFailure,
                format!("an action was refused: {message}"),
            ));
        }
        Error::FailedPrecondition(message)
    }

    /// The image an action runs on: the one it names by digest, else the
    /// default; stored, trusted when trust is required, and leased.
    fn select_image(&self, named: Option<String>) -> Result<(ImageDigest, PathBuf, ImageLease)> {
        let digest = match named {
            Some(value) => ImageDigest::parse(&value)
                .map_err(|e| Error::FailedPrecondition(format!("{CONTAINER_IMAGE}: {e}")))?
                .ok_or_else(|| {
                    let aliases: Vec<String> = self
                        .images
                        .list()
                        .unwrap_or_default()
                        .into_iter()
                        .flat_map(|i| i.aliases)
                        .collect();
                    Error::FailedPrecondition(format!(
                        "{CONTAINER_IMAGE} {value:?} is not an image digest: actions name images \
                         by digest (hermetic-image:blake3:<64 hex>); clients resolve aliases \
                         (here: {}) with `hermetic image inspect ALIAS`",
                        if aliases.is_empty() {
                            "none".to_owned()
                        } else {
                            aliases.join(", ")
                        }
                    ))
                })?,
            None => self.default_image.clone().ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "the action names no {CONTAINER_IMAGE} and this daemon has no default image; \
                     name one by digest (hermetic-image:blake3:<64 hex>, see `hermetic image ls`)"
                ))
            })?,
        };
        let info = self.images.get(&digest)?.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "image {digest} is not in this daemon's image store; import it with \
                 `hermetic image import ARCHIVE` (see `hermetic image ls`)"
            ))
        })?;
        if self.require_trusted_images && !info.trusted() {
            return Err(self.untrusted(&info.digest));
        }
        let lease = self.images.lease(&info.digest)?;
        Ok((info.digest, info.rootfs, lease))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazel_remote_apis::build::bazel::remote::execution::v2::platform::Property;

    fn choices(dir: &std::path::Path) -> Choices {
        let profile = Profile::from_toml("name = \"strict\"\ndescription = \"t\"\n", "t").unwrap();
        let rootfs = dir.join("src");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::write(rootfs.join("bin/sh"), b"not really a shell").unwrap();
        let store = ImageStore::open(&dir.join("images"), false).unwrap();
        crate::images::configured::import_all(&store, &[("busybox".to_owned(), rootfs)].into())
            .unwrap();
        let default = store.resolve("busybox").unwrap().digest;
        Choices {
            images: Arc::new(store),
            default_image: Some(default),
            require_trusted_images: true,
            profiles: [("strict".to_owned(), Arc::new(profile))].into(),
            default_profile: "strict".into(),
            alerts: None,
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
        let dir = tempfile::tempdir().unwrap();
        let c = choices(dir.path());
        let s = c.select(None).unwrap();
        assert!(s.image_defaulted);
        let pinned = c.default_image.clone().unwrap().to_string();
        assert_eq!(s.image, pinned);
        assert!(s.rootfs.join("bin/sh").is_file());
        let s = c
            .select(Some(&platform(&[
                ("OSFamily", "Linux"),
                ("container-image", &pinned),
            ])))
            .unwrap();
        assert!(!s.image_defaulted);
        // An alias is not a digest: refused, naming the aliases there are.
        let e = c.select(Some(&platform(&[("container-image", "busybox")])));
        assert!(matches!(e, Err(Error::FailedPrecondition(m)) if m.contains("busybox")));
        let e = c.select(Some(&platform(&[("container-image", "docker://x:latest")])));
        assert!(matches!(e, Err(Error::FailedPrecondition(m)) if m.contains("busybox")));
        let unknown = format!("hermetic-image:blake3:{}", "0".repeat(64));
        let e = c.select(Some(&platform(&[("container-image", &unknown)])));
        assert!(matches!(e, Err(Error::FailedPrecondition(m)) if m.contains("not in this daemon")));
        // Untrusted: refused, naming the digest and the command.
        let info = c.images.resolve("busybox").unwrap();
        c.images.set_trust(&info, false, "test").unwrap();
        let e = c.select(None);
        assert!(
            matches!(&e, Err(Error::FailedPrecondition(m)) if m.contains(&pinned) && m.contains("hermetic image trust")),
            "{e:?}"
        );
        c.images.set_trust(&info, true, "test").unwrap();
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
