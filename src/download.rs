//! Resumable HTTP(S) downloads into a partial file.
//!
//! [`download`] appends to `<part>` from where an earlier, interrupted try stopped (an HTTP
//! `Range` request; a server that ignores it sends the whole file, which then replaces the
//! partial one). It never renames anything: the caller verifies the finished partial file
//! and moves it into place. Failures are sorted by what the user can do about them: no
//! connection at all ([`DownloadError::Unreachable`]), a server that answered with an
//! error, a TLS failure, and a transfer cut short, whose bytes stay for the next try.
//!
//! The client is `ureq` with rustls: blocking (the callers are batch commands), small, and
//! no OpenSSL at build or run time; the trust roots are Mozilla's (webpki-roots).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bytes read from the network between two progress reports and disk writes.
const CHUNK: usize = 1 << 20;

/// How long to wait for a name lookup or a connection before calling the network absent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a transfer may go without receiving a byte before it counts as interrupted.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a download did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// No connection could be made (no network, name not found, refused, timed out).
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// What was asked for.
        url: String,
        /// What the network layer said.
        reason: String,
    },
    /// The server answered with an HTTP error status.
    #[error("{url}: the server answered HTTP {status}")]
    Status {
        /// What was asked for.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The TLS handshake failed (an intercepting proxy, a wrong clock, a bad certificate).
    #[error("{url}: TLS failed: {reason}")]
    Tls {
        /// What was asked for.
        url: String,
        /// What rustls said.
        reason: String,
    },
    /// The transfer stopped before the end; what arrived is kept for a resume.
    #[error("{url}: the download stopped after {received} of {}: {reason}", total.map_or("?".to_owned(), |t| t.to_string()))]
    Interrupted {
        /// What was asked for.
        url: String,
        /// Bytes in the partial file now.
        received: u64,
        /// Bytes the server announced for the whole file.
        total: Option<u64>,
        /// What cut it short.
        reason: String,
    },
    /// The server's answer made no sense (bad headers, an impossible range).
    #[error("{url}: unexpected answer: {reason}")]
    Protocol {
        /// What was asked for.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The partial file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The partial file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// What [`download`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downloaded {
    /// Size of the complete file.
    pub bytes: u64,
    /// Bytes that an earlier try had already fetched and this one kept.
    pub resumed_from: u64,
}

/// Fetches `url` into `part`, continuing a partial file left by an earlier try.
/// `progress(done, total)` is called as bytes arrive (`total` when the server says it).
pub fn download(
    url: &str,
    part: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Downloaded, DownloadError> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    match fetch_from(url, part, have, progress) {
        // A partial file the server cannot continue (it shrank, or was already whole but
        // not yet moved into place): start again from zero.
        Err(DownloadError::Status { status: 416, .. }) if have > 0 => {
            std::fs::remove_file(part).map_err(|source| io_error(part, source))?;
            fetch_from(url, part, 0, progress)
        }
        other => other,
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_resolve(Some(CONNECT_TIMEOUT))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(STALL_TIMEOUT))
        .user_agent(concat!("dino-curate/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn fetch_from(
    url: &str,
    part: &Path,
    have: u64,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Downloaded, DownloadError> {
    let mut request = agent().get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = request.call().map_err(|e| request_error(url, e))?;
    let status = response.status().as_u16();
    let start = match status {
        200 => 0,
        206 => range_start(url, &response, have)?,
        _ => {
            return Err(DownloadError::Status {
                url: url.to_owned(),
                status,
            })
        }
    };
    let length = header_u64(&response, "content-length");
    let total = length.map(|n| start + n);
    let mut file = open_part(part, start)?;
    let mut body = response.into_body().into_reader();
    let mut done = start;
    let mut buf = vec![0u8; CHUNK];
    progress(done, total);
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(interrupted(url, part, &file, done, total, e.to_string())),
        };
        file.write_all(&buf[..n])
            .map_err(|source| io_error(part, source))?;
        done += n as u64;
        progress(done, total);
    }
    if let Some(total) = total.filter(|&t| t != done) {
        return Err(interrupted(
            url,
            part,
            &file,
            done,
            Some(total),
            "the connection closed early".into(),
        ));
    }
    file.sync_all().map_err(|source| io_error(part, source))?;
    Ok(Downloaded {
        bytes: done,
        resumed_from: start,
    })
}

/// The partial file, opened to continue at `start` (0: emptied).
fn open_part(part: &Path, start: u64) -> Result<File, DownloadError> {
    let mut options = OpenOptions::new();
    options.create(true).write(true);
    if start == 0 {
        options.truncate(true);
    } else {
        options.append(true);
    }
    options.open(part).map_err(|source| io_error(part, source))
}

/// Keeps what arrived (synced, so that a resume after a crash finds it) and says so.
fn interrupted(
    url: &str,
    part: &Path,
    file: &File,
    received: u64,
    total: Option<u64>,
    reason: String,
) -> DownloadError {
    if let Err(source) = file.sync_all() {
        return io_error(part, source);
    }
    DownloadError::Interrupted {
        url: url.to_owned(),
        received,
        total,
        reason,
    }
}

/// Where a 206 answer starts; it must be where the partial file ends.
fn range_start(
    url: &str,
    response: &ureq::http::Response<ureq::Body>,
    have: u64,
) -> Result<u64, DownloadError> {
    let start = response
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match start {
        Some(s) if s == have => Ok(s),
        other => Err(DownloadError::Protocol {
            url: url.to_owned(),
            reason: format!(
                "asked for the bytes from {have} on, got a range starting at {}",
                other.map_or("an unreadable place".to_owned(), |s| s.to_string())
            ),
        }),
    }
}

fn header_u64(response: &ureq::http::Response<ureq::Body>, name: &str) -> Option<u64> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn io_error(path: &Path, source: std::io::Error) -> DownloadError {
    DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Sorts a failed request: no connection, TLS, or a confused exchange.
fn request_error(url: &str, error: ureq::Error) -> DownloadError {
    let url = url.to_owned();
    let reason = error.to_string();
    match error {
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => {
            DownloadError::Tls { url, reason }
        }
        // rustls reports a failed handshake (an unknown certificate authority, a clock far
        // off) through the socket, as invalid data.
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => DownloadError::Tls {
            url,
            reason: e.to_string(),
        },
        ureq::Error::Io(_)
        | ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::Timeout(_) => DownloadError::Unreachable { url, reason },
        _ => DownloadError::Protocol { url, reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_unreachable_and_writes_nothing() {
        // Bind then drop a listener: the port is free and nobody answers on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.part");
        let url = format!("http://127.0.0.1:{port}/x.pth");
        let err = download(&url, &part, &mut |_, _| {}).expect_err("nobody listens");
        assert!(
            matches!(err, DownloadError::Unreachable { .. }),
            "got {err:?}"
        );
        assert!(!part.exists());
    }
}
