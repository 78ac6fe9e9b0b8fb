//! The node's persistent ed25519 identity: a key file beside the database, created on first
//! start with mode 0600 and read on every later one, so the peer id (and the standing peers
//! have given it) survives restarts.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use libp2p::identity::Keypair;

#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentityError {
    #[error("cannot read the key file: {0}")]
    Read(std::io::Error),
    #[error("cannot write the key file: {0}")]
    Write(std::io::Error),
    #[error("the key file does not hold a libp2p key: {0}")]
    Decode(String),
}

/// Reads the key at `path`, or creates it. Returns the key and whether it was created.
pub(crate) fn load_or_create(path: &Path) -> Result<(Keypair, bool), IdentityError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "The peer-to-peer key file is readable by others; chmod 600 it.");
                }
            }
            let key = Keypair::from_protobuf_encoding(&bytes)
                .map_err(|e| IdentityError::Decode(e.to_string()))?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| IdentityError::Decode(e.to_string()))?;
            write_private(path, &bytes).map_err(IdentityError::Write)?;
            Ok((key, true))
        }
        Err(e) => Err(IdentityError::Read(e)),
    }
}

/// Writes a file only its owner can read, atomically (a crash leaves the old state or the new).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_private_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.p2p-key");
        let (a, created) = load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (b, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
    }

    #[test]
    fn a_corrupt_key_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.p2p-key");
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(IdentityError::Decode(_))
        ));
    }
}
