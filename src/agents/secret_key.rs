//! The key that encrypts agent passwords at rest, and its file.
//!
//! Passwords are sealed with XChaCha20-Poly1305 (random 24-byte nonce, the
//! agent's hostname as associated data, so a sealed password cannot be moved
//! to another row). The 32-byte key lives in its own file, mode 0600,
//! written as hex; a database copied without it yields no password.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const NONCE_LEN: usize = 24;

pub struct SecretKey {
    cipher: XChaCha20Poly1305,
    pub path: PathBuf,
}

impl SecretKey {
    /// Makes a new key file; refuses to overwrite one.
    pub fn create(path: &Path) -> Result<SecretKey, String> {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("cannot create key file {}: {e}", path.display()))?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        file.write_all(format!("{hex}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("cannot write key file {}: {e}", path.display()))?;
        Ok(SecretKey {
            cipher: XChaCha20Poly1305::new(&key),
            path: path.to_path_buf(),
        })
    }

    /// Reads an existing key file.
    pub fn load(path: &Path) -> Result<SecretKey, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "key file {} not found; it is made by `vpoller agent init`, and without it the stored passwords cannot be read (give its place with --key-file)",
                    path.display()
                )
            } else {
                format!("cannot read key file {}: {e}", path.display())
            }
        })?;
        let Some(bytes) = crate::vsphere::tls::decode_hex::<32>(text.trim()) else {
            return Err(format!(
                "key file {} is not a vpoller key (64 hex digits)",
                path.display()
            ));
        };
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| format!("key file {} has a key of the wrong size", path.display()))?;
        Ok(SecretKey {
            cipher,
            path: path.to_path_buf(),
        })
    }

    /// Nonce followed by ciphertext.
    pub fn seal(&self, plaintext: &[u8], bound_to: &str) -> Result<Vec<u8>, String> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: bound_to.as_bytes(),
                },
            )
            .map_err(|_| "encryption failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// `None` when the data was not sealed with this key for `bound_to`.
    pub fn open(&self, sealed: &[u8], bound_to: &str) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: bound_to.as_bytes(),
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn sealed_data_opens_only_with_its_key_and_binding() {
        let dir = tempfile::tempdir().expect("dir");
        let key = SecretKey::create(&dir.path().join("k")).expect("key");
        let mode = std::fs::metadata(dir.path().join("k"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = key.seal(b"s3cret", "vc01").expect("seal");
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(key.open(&sealed, "vc01").as_deref(), Some(&b"s3cret"[..]));
        assert_eq!(key.open(&sealed, "vc02"), None, "bound to its hostname");
        let reloaded = SecretKey::load(&dir.path().join("k")).expect("load");
        assert_eq!(
            reloaded.open(&sealed, "vc01").as_deref(),
            Some(&b"s3cret"[..])
        );
        let other = SecretKey::create(&dir.path().join("other")).expect("key");
        assert_eq!(other.open(&sealed, "vc01"), None);
        assert!(
            SecretKey::create(&dir.path().join("k")).is_err(),
            "never overwrites"
        );
        let err = SecretKey::load(&dir.path().join("missing"))
            .err()
            .expect("missing");
        assert!(err.contains("vpoller agent init"), "{err}");
        std::fs::write(dir.path().join("bad"), "zz").expect("write");
        let err = SecretKey::load(&dir.path().join("bad"))
            .err()
            .expect("refused");
        assert!(err.contains("not a vpoller key"), "{err}");
        for text in [
            "é".repeat(32),
            "ü".repeat(64),
            format!("{}é", "a".repeat(63)),
        ] {
            std::fs::write(dir.path().join("odd"), &text).expect("write");
            let err = SecretKey::load(&dir.path().join("odd"))
                .err()
                .expect("refused");
            assert!(err.contains("not a vpoller key"), "{err}");
        }
    }
}
