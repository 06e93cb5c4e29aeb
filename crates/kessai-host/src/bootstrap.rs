//! First-run bootstrap of the host's two local secrets:
//!
//! - the **master key** (32 bytes) that seals every issuer key at rest:
//!   from `KESSAI_MASTER_KEY` (64 hex digits) if set, else from
//!   `DATA_DIR/master.key`, generated on first run (mode 0600) with a loud
//!   notice. Several host processes sharing one PostgreSQL must share it.
//! - the **admin token** that authenticates admin calls: from
//!   `KESSAI_ADMIN_TOKEN` if set, else `DATA_DIR/admin.token`, generated on
//!   first run. The host keeps only its SHA-256 in memory and compares in
//!   constant time.

use std::io::Write;
use std::path::Path;

use kessai_secrets::SecretKey;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Environment variable holding the master key as 64 hex digits.
pub const MASTER_KEY_ENV: &str = "KESSAI_MASTER_KEY";
/// Environment variable holding the admin token.
pub const ADMIN_TOKEN_ENV: &str = "KESSAI_ADMIN_TOKEN";
/// Master key file name inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
/// Admin token file name inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Bootstrap failures.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The master key in the environment or file is not 64 hex digits.
    #[error("master key must be 64 hex digits ({0})")]
    BadMasterKey(&'static str),
    /// The admin token is shorter than 32 characters or not printable.
    #[error("admin token must be at least 32 printable ASCII characters ({0})")]
    BadAdminToken(&'static str),
    /// Reading or writing a file in the data directory failed.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
}

/// Where a secret came from (for the startup log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The environment variable.
    Environment,
    /// An existing file in the data directory.
    File,
    /// Generated now and written to the data directory.
    Generated,
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), BootstrapError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

/// Loads or creates the master key (see module docs).
pub fn master_key(
    data_dir: &Path,
    env: Option<&str>,
) -> Result<(SecretKey<32>, Origin), BootstrapError> {
    if let Some(hex_key) = env {
        return Ok((
            parse_master(hex_key.trim(), "environment")?,
            Origin::Environment,
        ));
    }
    let path = data_dir.join(MASTER_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let s = Zeroizing::new(s);
            Ok((parse_master(s.trim(), "file")?, Origin::File))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = Zeroizing::new([0u8; 32]);
            rand::fill(&mut bytes[..]);
            let text = Zeroizing::new(hex::encode(*bytes));
            write_private(&path, text.as_bytes())?;
            Ok((SecretKey::new(*bytes), Origin::Generated))
        }
        Err(e) => Err(e.into()),
    }
}

fn parse_master(s: &str, origin: &'static str) -> Result<SecretKey<32>, BootstrapError> {
    let mut b = Zeroizing::new([0u8; 32]);
    if s.len() != 64 {
        return Err(BootstrapError::BadMasterKey(origin));
    }
    hex::decode_to_slice(s, &mut b[..]).map_err(|_| BootstrapError::BadMasterKey(origin))?;
    Ok(SecretKey::new(*b))
}

/// The admin token as the host keeps it: only its hash.
#[derive(Clone)]
pub struct AdminTokenHash([u8; 32]);

impl std::fmt::Debug for AdminTokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminTokenHash(redacted)")
    }
}

impl AdminTokenHash {
    /// Hashes a token.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Constant-time check of a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(self.0.ct_eq(&h))
    }
}

fn check_token(t: &str, origin: &'static str) -> Result<(), BootstrapError> {
    if t.len() < 32 || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BootstrapError::BadAdminToken(origin));
    }
    Ok(())
}

/// Loads or creates the admin token (see module docs). Returns the token
/// text too, so that the CLI can use it for local admin calls.
pub fn admin_token(
    data_dir: &Path,
    env: Option<&str>,
) -> Result<(Zeroizing<String>, Origin), BootstrapError> {
    if let Some(t) = env {
        check_token(t.trim(), "environment")?;
        return Ok((Zeroizing::new(t.trim().to_string()), Origin::Environment));
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            check_token(s.trim(), "file")?;
            Ok((Zeroizing::new(s.trim().to_string()), Origin::File))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = Zeroizing::new([0u8; 24]);
            rand::fill(&mut bytes[..]);
            let token = Zeroizing::new(format!("kst_{}", hex::encode(*bytes)));
            write_private(&path, token.as_bytes())?;
            Ok((token, Origin::Generated))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_is_generated_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, o1) = master_key(dir.path(), None).unwrap();
        assert_eq!(o1, Origin::Generated);
        let (k2, o2) = master_key(dir.path(), None).unwrap();
        assert_eq!(o2, Origin::File);
        assert_eq!(k1, k2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(MASTER_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn master_key_from_env_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let hexkey = "00".repeat(32);
        let (k, o) = master_key(dir.path(), Some(&hexkey)).unwrap();
        assert_eq!(o, Origin::Environment);
        assert_eq!(k.expose(), &[0u8; 32]);
        assert!(matches!(
            master_key(dir.path(), Some("abcd")),
            Err(BootstrapError::BadMasterKey("environment"))
        ));
        assert!(!dir.path().join(MASTER_KEY_FILE).exists());
    }

    #[test]
    fn admin_token_hash_matches_only_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let (t, o) = admin_token(dir.path(), None).unwrap();
        assert_eq!(o, Origin::Generated);
        let h = AdminTokenHash::of(&t);
        assert!(h.matches(&t));
        assert!(!h.matches("kst_wrong"));
        assert!(!format!("{h:?}").contains(&t[..8]));
        assert!(matches!(
            admin_token(dir.path(), Some("short")),
            Err(BootstrapError::BadAdminToken(_))
        ));
    }
}
