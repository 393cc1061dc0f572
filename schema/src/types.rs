//! Newtypes that cross the SQL boundary.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::Error;

/// The SHA-256 of a whole file: how package repositories name their content, and how the
/// embedded store names the files it keeps.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, as `sha256sum` prints it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl FromStr for Sha256 {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if s.len() != 64 {
            return Err(Error::Invalid {
                what: "sha256",
                detail: format!("expected 64 hex digits, got {} characters: {s:?}", s.len()),
            });
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| Error::Invalid {
            what: "sha256",
            detail: format!("{e} in {s:?}"),
        })?;
        Ok(Sha256(out))
    }
}

impl ToSql for Sha256 {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(&self.0)))
    }
}

impl FromSql for Sha256 {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let blob = value.as_blob()?;
        let arr: [u8; 32] = blob.try_into().map_err(|_| FromSqlError::InvalidBlobSize {
            expected_size: 32,
            blob_size: blob.len(),
        })?;
        Ok(Sha256(arr))
    }
}

/// Row id of a file kept by the embedded store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub i64);

impl ToSql for FileId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl FromSql for FileId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(value).map(FileId)
    }
}

/// Seconds since the Unix epoch; what the database stores for every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// The current time (0 if the clock is before 1970).
    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
    }

    /// This time moved by `secs` (saturating).
    pub fn plus_secs(self, secs: i64) -> Self {
        UnixTime(self.0.saturating_add(secs))
    }
}

impl ToSql for UnixTime {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl FromSql for UnixTime {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(value).map(UnixTime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_parses_and_prints() {
        let s = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let h: Sha256 = s.parse().unwrap();
        assert_eq!(h.to_string(), s);
        assert_eq!(h.as_bytes()[0], 0xe3);
    }

    #[test]
    fn sha256_rejects_bad_input() {
        for bad in ["", "e3b0", &"g".repeat(64), &"a".repeat(65)] {
            let err = bad.parse::<Sha256>().unwrap_err().to_string();
            assert!(err.contains("sha256"), "{err}");
        }
    }
}
