//! Errors of the photo module, and the skip-and-report record callers keep.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why one photo could not be decoded. Every message starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    /// The file no longer exists (deleted or moved since it was listed).
    #[error("{}: file vanished", path.display())]
    Vanished {
        /// The photo's path.
        path: PathBuf,
    },
    /// The file exists but reading it failed (permission denied, I/O error).
    #[error("{}: cannot read the file: {source}", path.display())]
    Unreadable {
        /// The photo's path.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The file is empty (zero bytes).
    #[error("{}: empty file", path.display())]
    Empty {
        /// The photo's path.
        path: PathBuf,
    },
    /// The content is not an image format we recognise, whatever the extension says.
    #[error("{}: not an image", path.display())]
    NotAnImage {
        /// The photo's path.
        path: PathBuf,
    },
    /// An image format, or a feature of one, that is not supported.
    #[error("{}: unsupported image: {detail}", path.display())]
    Unsupported {
        /// The photo's path.
        path: PathBuf,
        /// What is not supported.
        detail: String,
    },
    /// The image data is corrupt or truncated.
    #[error("{}: corrupt or truncated image: {detail}", path.display())]
    Corrupt {
        /// The photo's path.
        path: PathBuf,
        /// What the decoder said.
        detail: String,
    },
    /// The header announces more pixels (or memory) than allowed: refused before decoding.
    #[error(
        "{}: image too large ({width}x{height} pixels, limit {max_pixels})",
        path.display()
    )]
    TooLarge {
        /// The photo's path.
        path: PathBuf,
        /// Width as stored in the file, in pixels.
        width: u32,
        /// Height as stored in the file, in pixels.
        height: u32,
        /// The pixel limit in force.
        max_pixels: u64,
    },
}

impl PhotoError {
    /// The file concerned.
    pub fn path(&self) -> &Path {
        match self {
            Self::Vanished { path }
            | Self::Unreadable { path, .. }
            | Self::Empty { path }
            | Self::NotAnImage { path }
            | Self::Unsupported { path, .. }
            | Self::Corrupt { path, .. }
            | Self::TooLarge { path, .. } => path,
        }
    }

    /// The reason alone, without the path: short text for a skip report.
    pub fn reason(&self) -> String {
        match self {
            Self::Vanished { .. } => "file vanished".to_owned(),
            Self::Unreadable { source, .. } => format!("cannot read the file: {source}"),
            Self::Empty { .. } => "empty file".to_owned(),
            Self::NotAnImage { .. } => "not an image".to_owned(),
            Self::Unsupported { detail, .. } => format!("unsupported image: {detail}"),
            Self::Corrupt { detail, .. } => format!("corrupt or truncated image: {detail}"),
            Self::TooLarge {
                width,
                height,
                max_pixels,
                ..
            } => format!("image too large ({width}x{height} pixels, limit {max_pixels})"),
        }
    }

    /// Turns the error into a [`Skipped`] entry.
    pub fn to_skipped(&self) -> Skipped {
        Skipped::new(self.path(), self.reason())
    }

    /// Maps an I/O error met while reading `path`: a missing file has vanished, an early end
    /// of data means a truncated image, anything else is unreadable.
    pub(crate) fn from_io(path: &Path, source: io::Error) -> Self {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::NotFound => Self::Vanished { path },
            io::ErrorKind::UnexpectedEof => Self::Corrupt {
                path,
                detail: "unexpected end of data".to_owned(),
            },
            _ => Self::Unreadable { path, source },
        }
    }

    /// A [`PhotoError::Corrupt`] for `path`.
    pub(crate) fn corrupt(path: &Path, detail: impl fmt::Display) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            detail: detail.to_string(),
        }
    }

    /// A [`PhotoError::Unsupported`] for `path`.
    pub(crate) fn unsupported(path: &Path, detail: impl fmt::Display) -> Self {
        Self::Unsupported {
            path: path.to_path_buf(),
            detail: detail.to_string(),
        }
    }
}

/// A file or folder that was left out, and why: what callers collect to report at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file or folder left out.
    pub path: PathBuf,
    /// Why, in a few words.
    pub reason: String,
}

impl Skipped {
    /// A skipped entry for `path`.
    pub fn new(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for Skipped {}

impl From<PhotoError> for Skipped {
    fn from(err: PhotoError) -> Self {
        err.to_skipped()
    }
}

/// Why a scan could not start: a bad root. Problems below a root are [`Skipped`] instead.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The root does not exist.
    #[error("{}: no such folder", path.display())]
    RootNotFound {
        /// The root as given.
        path: PathBuf,
    },
    /// The root exists but could not be resolved or inspected.
    #[error("{}: cannot open the folder: {source}", path.display())]
    RootUnreadable {
        /// The root as given.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The root is neither a folder nor a regular file (a device, a socket...).
    #[error("{}: not a folder", path.display())]
    RootNotAFolder {
        /// The root as given.
        path: PathBuf,
    },
}
