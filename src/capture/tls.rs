//! SIP over TLS: the server configuration (loading the certificate and key, or generating a
//! self-signed pair when both are missing, as upstream does) and the handshake.

use std::fs;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::CaptureContext;
use super::inspect::Meta;
use crate::settings::ConfigError;

/// TLS certificate and key files; generated when both are missing.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}
use crate::event::Transport;
use crate::metrics::Counters;

/// What happened to the certificate files.
#[derive(Debug, PartialEq, Eq)]
pub enum CertSource {
    Loaded,
    Generated,
}

/// Loads the certificate and key, generating a self-signed pair if neither file exists.
pub fn server_config(files: &TlsFiles) -> Result<(Arc<ServerConfig>, CertSource), ConfigError> {
    let source = if !files.cert.exists() && !files.key.exists() {
        generate(files)?;
        CertSource::Generated
    } else {
        CertSource::Loaded
    };
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("-t (--cert)", files.cert.display(), e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            ConfigError::new(
                "-k (--key)",
                files.key.display(),
                format!("does not match the certificate: {e}"),
            )
        })?;
    // No TLS 1.3 session tickets: a scanner never resumes, and clients that select() on the
    // socket and then read (sipsak with GnuTLS) take the unsolicited ticket record for the
    // reply, fail, and never see our answer.
    config.send_tls13_tickets = 0;
    Ok((Arc::new(config), source))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let err =
        |e: &dyn std::fmt::Display| ConfigError::new("-t (--cert)", path.display(), e.to_string());
    let file = fs::File::open(path).map_err(|e| err(&e))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&e))?;
    if certs.is_empty() {
        return Err(err(&"no PEM certificate in the file"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let err =
        |e: &dyn std::fmt::Display| ConfigError::new("-k (--key)", path.display(), e.to_string());
    let file = fs::File::open(path).map_err(|e| err(&e))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| err(&e))?
        .ok_or_else(|| err(&"no PEM private key in the file"))
}

fn generate(files: &TlsFiles) -> Result<(), ConfigError> {
    let names = vec!["localhost".to_string(), "sentrypeer".to_string()];
    let cert = rcgen::generate_simple_self_signed(names).map_err(|e| {
        ConfigError::new(
            "-t (--cert)",
            files.cert.display(),
            format!("cannot generate a certificate: {e}"),
        )
    })?;
    write_file(&files.key, cert.key_pair.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| ConfigError::new("-k (--key)", files.key.display(), e))?;
    write_file(&files.cert, cert.cert.pem().as_bytes(), 0o644)
        .map_err(|e| ConfigError::new("-t (--cert)", files.cert.display(), e))?;
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)
}

/// Handles one TLS connection: handshake within the limit, then SIP as on TCP.
pub async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    cx: Arc<CaptureContext>,
    cancel: CancellationToken,
    acceptor: TlsAcceptor,
) {
    let Some(_slot) = cx.stream_limits.conns.admit(peer.ip()) else {
        Counters::inc(&cx.counters.connections_refused);
        return;
    };
    Counters::inc(&cx.counters.connections_accepted);
    let tls = tokio::select! {
        _ = cancel.cancelled() => return,
        r = tokio::time::timeout(cx.stream_limits.handshake_timeout, acceptor.accept(stream)) => r,
    };
    let tls = match tls {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            Counters::inc(&cx.counters.tls_handshakes_failed);
            tracing::debug!(error = %e, "TLS handshake failed.");
            return;
        }
        Err(_) => {
            Counters::inc(&cx.counters.tls_handshakes_failed);
            tracing::debug!("TLS handshake timed out.");
            return;
        }
    };
    let meta = Meta {
        transport: Transport::Tls,
        source: peer,
        local,
    };
    super::stream::serve_stream(tls, meta, &cx, &cancel).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_pair_is_generated_once_and_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        assert_eq!(server_config(&files).unwrap().1, CertSource::Generated);
        assert_eq!(server_config(&files).unwrap().1, CertSource::Loaded);
    }

    #[test]
    fn a_missing_key_beside_a_cert_names_the_option() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        server_config(&files).unwrap();
        std::fs::remove_file(&files.key).unwrap();
        let e = server_config(&files).unwrap_err();
        assert!(e.option.starts_with("-k"), "{e}");
    }
}
