//! Report tokens: 128 bits, derived from the report id with the collector's secret (HMAC-SHA256),
//! so that the same report uploaded again gets the same answer; stored only as their SHA-256 and
//! compared in constant time.

use std::{fs, io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use anyhow::{bail, Context as _};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes of a token (128 bits).
pub const TOKEN_BYTES: usize = 16;
const SECRET_BYTES: usize = 32;

pub struct Secret([u8; SECRET_BYTES]);

impl Secret {
    /// Reads the secret at `path`, or makes one there (mode 0600) when there is none.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match fs::read(path) {
            Ok(bytes) => {
                let Ok(b) = <[u8; SECRET_BYTES]>::try_from(bytes.as_slice()) else {
                    bail!(
                        "{} is not a collector secret ({} bytes, not {SECRET_BYTES})",
                        path.display(),
                        bytes.len()
                    );
                };
                Ok(Self(b))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = [0u8; SECRET_BYTES];
                rand::fill(&mut b);
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .with_context(|| format!("creating the collector secret {}", path.display()))?;
                f.write_all(&b)?;
                f.sync_all()?;
                Ok(Self(b))
            }
            Err(e) => Err(e).with_context(|| format!("reading the collector secret {}", path.display())),
        }
    }

    /// The token of a report, as hex.
    pub fn token(&self, report_id: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(report_id.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..TOKEN_BYTES])
    }
}

pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

/// Whether `presented` is the token whose SHA-256 is `stored`, in time that does not depend on
/// where they differ.
pub fn matches(presented: &str, stored: &[u8]) -> bool {
    sha256(presented.as_bytes()).ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_128_bits_per_report_and_check_against_their_hash_only() {
        let s = Secret([7; SECRET_BYTES]);
        let t = s.token("a");
        assert_eq!(t.len(), 2 * TOKEN_BYTES);
        assert_eq!(t, s.token("a"), "the same report, the same token");
        assert_ne!(t, s.token("b"));
        assert_ne!(t, Secret([8; SECRET_BYTES]).token("a"), "another collector, another token");
        let stored = sha256(t.as_bytes());
        assert!(matches(&t, &stored));
        assert!(!matches(&s.token("b"), &stored));
        assert!(!matches("", &stored));
    }

    #[test]
    fn a_secret_is_made_once_and_read_back() {
        let dir = std::env::temp_dir().join(format!("mpp-secret-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("secret");
        let a = Secret::load_or_create(&p).unwrap();
        let b = Secret::load_or_create(&p).unwrap();
        assert_eq!(a.token("x"), b.token("x"));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        fs::write(&p, b"short").unwrap();
        let e = format!("{:#}", Secret::load_or_create(&p).err().unwrap());
        assert!(e.contains("is not a collector secret"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
