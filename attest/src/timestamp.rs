//! RFC 3339 UTC timestamps, as every document here writes them.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time, always shown in UTC as RFC 3339 (`2026-05-01T12:00:00Z`,
/// with a fraction of a second only when there is one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(SystemTime::now())
    }

    /// `secs` seconds after the Unix epoch.
    pub fn from_unix(secs: u64) -> Self {
        Self(UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// The underlying `SystemTime`.
    pub fn system_time(self) -> SystemTime {
        self.0
    }

    /// RFC 3339 truncated to whole seconds (`2026-05-01T12:00:00Z`), the
    /// form SPDX requires.
    pub fn to_seconds_string(self) -> String {
        let secs = self.0.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Timestamp::from_unix(secs).to_string()
    }

    /// Parses RFC 3339 (any offset; normalized to UTC).
    pub fn parse(s: &str) -> Result<Self, time::error::Parse> {
        let t = OffsetDateTime::parse(s, &Rfc3339)?;
        Ok(Self(t.into()))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Self(t)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = OffsetDateTime::from(self.0);
        match t.format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_rfc3339() {
        assert_eq!(Timestamp::from_unix(0).to_string(), "1970-01-01T00:00:00Z");
        let t = Timestamp::from_unix(1_700_000_000);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20Z");
        assert_eq!(Timestamp::parse("2023-11-14T23:13:20+01:00").unwrap(), t);
        let frac = Timestamp(UNIX_EPOCH + Duration::from_millis(1500));
        assert_eq!(frac.to_string(), "1970-01-01T00:00:01.5Z");
        assert_eq!(frac.to_seconds_string(), "1970-01-01T00:00:01Z");
    }
}
