//! Finding and decoding a user's photos.
//!
//! [`scan`] walks one or more folders and lists the image files in them, in a deterministic
//! order, recording what it had to skip. [`decode`] turns one file into an 8-bit RGB image,
//! upright (EXIF orientation applied) and, when asked, already downscaled (JPEGs cheaply, in
//! the DCT domain). HEIF (HEIC) photos are found by [`scan`] in every build and decoded
//! through libheif with the `heic` feature; without it they fail with a clear reason. Both are
//! meant to be called from many threads at once and never panic on bad input: every failure
//! is a [`PhotoError`] or a [`Skipped`] entry naming the file.

mod decode;
mod error;
mod format;
#[cfg(feature = "heic")]
mod heic;
mod jpeg;
mod jpeg_layout;
mod libjpeg;
mod raw;
mod scan;

pub use decode::{decode, DecodeOptions, JpegDecoder, Photo, DEFAULT_MAX_PIXELS};
pub use error::{PhotoError, ScanError, Skipped};
pub use format::PhotoFormat;
pub use raw::{has_raw_extension, RAW_EXTENSIONS};
pub use scan::{has_image_extension, scan, FoundFile, ScanReport, IMAGE_EXTENSIONS};
