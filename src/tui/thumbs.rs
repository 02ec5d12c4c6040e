//! Photo previews: thumbnails decoded on a worker thread with the project's photo
//! loader, cached in `<workspace>/thumbs/<blake3>.jpg`, and shown with ratatui-image.
//!
//! The UI asks for the thumbnail of what it shows and never waits: until the worker
//! answers, the preview says "loading". When requests pile up (fast scrolling) the worker
//! serves the newest and drops the rest, which are asked for again if still on screen.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};

use image::{DynamicImage, RgbImage};
use ratatui_image::picker::Picker;
use ratatui_image::protocol::StatefulProtocol;

use crate::atomic::write_atomically;
use crate::photo::{decode, DecodeOptions};
use crate::{Error, Result};

/// Longest side of a cached thumbnail, in pixels.
pub const THUMB_SIZE: u32 = 320;
/// Thumbnails kept in memory before the cache is emptied.
const MEMORY_LIMIT: usize = 256;

/// A content hash naming a thumbnail.
pub type Key = [u8; 32];

struct Wanted {
    key: Key,
    path: PathBuf,
}

enum Loaded {
    Image(Key, RgbImage),
    Failed(Key, String),
    Skipped(Key),
}

/// One preview's state.
pub enum Preview {
    /// Asked for, not there yet.
    Loading,
    /// Ready to draw.
    Ready(Box<StatefulProtocol>),
    /// The photo could not be decoded: why.
    Failed(String),
}

impl std::fmt::Debug for Preview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Preview::Loading => write!(f, "Loading"),
            Preview::Ready(_) => write!(f, "Ready"),
            Preview::Failed(why) => write!(f, "Failed({why:?})"),
        }
    }
}

/// The previews of one session.
pub struct Previews {
    picker: Picker,
    worker: Option<(Sender<Wanted>, Receiver<Loaded>)>,
    cache: HashMap<Key, Preview>,
}

impl std::fmt::Debug for Previews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Previews")
            .field("protocol", &self.picker.protocol_type())
            .field("enabled", &self.worker.is_some())
            .field("cached", &self.cache.len())
            .finish()
    }
}

impl Previews {
    /// No previews (tests, benchmarks): the preview pane shows only the photo's details.
    pub fn disabled() -> Self {
        Self {
            picker: Picker::halfblocks(),
            worker: None,
            cache: HashMap::new(),
        }
    }

    /// Previews drawn with `picker`, thumbnails cached in `cache_dir` (none: not cached).
    pub fn new(picker: Picker, cache_dir: Option<PathBuf>) -> Self {
        Self {
            picker,
            worker: Some(spawn(cache_dir)),
            cache: HashMap::new(),
        }
    }

    /// Whether previews are drawn at all.
    pub fn enabled(&self) -> bool {
        self.worker.is_some()
    }

    /// The preview of a photo, asking the worker for it the first time.
    pub fn get(&mut self, key: Key, path: &Path) -> Option<&mut Preview> {
        let (tx, _) = self.worker.as_ref()?;
        if !self.cache.contains_key(&key) {
            if self.cache.len() >= MEMORY_LIMIT {
                self.cache.retain(|_, p| matches!(p, Preview::Loading));
            }
            let wanted = Wanted {
                key,
                path: path.to_path_buf(),
            };
            let sent = tx.send(wanted).is_ok();
            let state = if sent {
                Preview::Loading
            } else {
                Preview::Failed("the preview thread stopped".into())
            };
            self.cache.insert(key, state);
        }
        self.cache.get_mut(&key)
    }

    /// A ready preview of an image made elsewhere (an attention map); None when previews
    /// are off. Give it at most thumbnail size ([`fit`]): it is drawn on the UI thread.
    pub fn of_image(&self, img: RgbImage) -> Option<Preview> {
        self.worker.as_ref()?;
        let protocol = self
            .picker
            .new_resize_protocol(DynamicImage::ImageRgb8(img));
        Some(Preview::Ready(Box::new(protocol)))
    }

    /// Takes in what the worker finished; true when something changed on screen.
    pub fn poll(&mut self) -> bool {
        let Some((_, rx)) = &self.worker else {
            return false;
        };
        let mut changed = false;
        for done in rx.try_iter() {
            changed = true;
            match done {
                Loaded::Image(key, img) => {
                    let protocol = self
                        .picker
                        .new_resize_protocol(DynamicImage::ImageRgb8(img));
                    self.cache.insert(key, Preview::Ready(Box::new(protocol)));
                }
                Loaded::Failed(key, why) => {
                    self.cache.insert(key, Preview::Failed(why));
                }
                Loaded::Skipped(key) => {
                    self.cache.remove(&key);
                }
            }
        }
        changed
    }
}

fn spawn(cache_dir: Option<PathBuf>) -> (Sender<Wanted>, Receiver<Loaded>) {
    let (want_tx, want_rx) = channel::<Wanted>();
    let (done_tx, done_rx) = channel();
    std::thread::spawn(move || {
        while let Ok(first) = want_rx.recv() {
            let mut pending: Vec<Wanted> =
                std::iter::once(first).chain(want_rx.try_iter()).collect();
            let Some(newest) = pending.pop() else {
                continue;
            };
            let skipped = pending.into_iter().map(|w| Loaded::Skipped(w.key));
            let done = match thumbnail(&newest.path, &newest.key, cache_dir.as_deref()) {
                Ok(img) => Loaded::Image(newest.key, img),
                Err(why) => Loaded::Failed(newest.key, why),
            };
            if skipped.chain([done]).any(|m| done_tx.send(m).is_err()) {
                break;
            }
        }
    });
    (want_tx, done_rx)
}

/// A key in hexadecimal.
pub fn hex(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// File name of a cached thumbnail.
pub fn cache_name(key: &Key) -> String {
    format!("{}.jpg", hex(key))
}

/// The thumbnail of `path`: from the cache when there, else decoded, downscaled and cached.
fn thumbnail(
    path: &Path,
    key: &Key,
    cache_dir: Option<&Path>,
) -> std::result::Result<RgbImage, String> {
    let cached = cache_dir.map(|d| d.join(cache_name(key)));
    if let Some(img) = cached.as_ref().and_then(|c| image::open(c).ok()) {
        return Ok(img.into_rgb8());
    }
    let opts = DecodeOptions {
        target_short_side: Some(THUMB_SIZE),
        ..DecodeOptions::default()
    };
    let photo = decode(path, &opts).map_err(|e| e.reason())?;
    let thumb = fit(&photo.image);
    if let Some(file) = cached {
        // A cache that cannot be written only costs a decode next time.
        let _ = save(&file, &thumb);
    }
    Ok(thumb)
}

/// `image` downscaled to fit a [`THUMB_SIZE`] square, aspect ratio kept.
pub fn fit(image: &RgbImage) -> RgbImage {
    let (w, h) = image.dimensions();
    let scale = f64::from(THUMB_SIZE) / f64::from(w.max(h).max(1));
    if scale >= 1.0 {
        return image.clone();
    }
    let tw = ((f64::from(w) * scale).round() as u32).max(1);
    let th = ((f64::from(h) * scale).round() as u32).max(1);
    image::imageops::thumbnail(image, tw, th)
}

fn save(file: &Path, img: &RgbImage) -> Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_atomically(file, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Jpeg)
            .map_err(|e| Error::Config(format!("{}: {e}", tmp.display())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_keep_the_aspect_ratio_and_are_cached() {
        let dir = tempfile::tempdir().expect("temp dir");
        let photo = dir.path().join("wide.png");
        RgbImage::from_pixel(1000, 500, image::Rgb([10, 200, 30]))
            .save(&photo)
            .expect("write png");
        let key = [7u8; 32];
        let cache = dir.path().join("thumbs");
        let img = thumbnail(&photo, &key, Some(&cache)).expect("thumbnail");
        assert_eq!(img.dimensions(), (THUMB_SIZE, THUMB_SIZE / 2));
        assert!(cache.join(cache_name(&key)).is_file());
        std::fs::remove_file(&photo).expect("remove");
        assert!(
            thumbnail(&photo, &key, Some(&cache)).is_ok(),
            "served from the cache"
        );
    }

    #[test]
    fn the_worker_delivers_a_preview_that_draws() {
        use ratatui::buffer::Buffer;
        use ratatui::layout::Rect;
        use ratatui::widgets::StatefulWidget;
        use ratatui_image::{Resize, StatefulImage};

        let dir = tempfile::tempdir().expect("temp dir");
        let photo = dir.path().join("red.png");
        RgbImage::from_pixel(40, 20, image::Rgb([255, 0, 0]))
            .save(&photo)
            .expect("write png");
        let mut previews = Previews::new(Picker::halfblocks(), None);
        assert!(matches!(
            previews.get([3; 32], &photo),
            Some(Preview::Loading)
        ));
        let start = std::time::Instant::now();
        while !previews.poll() {
            assert!(start.elapsed().as_secs() < 10, "no preview");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let Some(Preview::Ready(protocol)) = previews.get([3; 32], &photo) else {
            panic!("not ready");
        };
        let area = Rect::new(0, 0, 8, 4);
        let mut buf = Buffer::empty(area);
        StatefulImage::default().resize(Resize::Scale(None)).render(
            area,
            &mut buf,
            protocol.as_mut(),
        );
        let red = buf
            .content()
            .iter()
            .filter(|c| c.fg == ratatui::style::Color::Rgb(255, 0, 0));
        assert!(red.count() > 0, "half-blocks drawn in red");
    }

    #[test]
    fn a_bad_file_gives_a_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bad = dir.path().join("bad.jpg");
        std::fs::write(&bad, b"not a jpeg").expect("write");
        let why = thumbnail(&bad, &[1; 32], None).expect_err("must fail");
        assert!(!why.is_empty());
    }
}
