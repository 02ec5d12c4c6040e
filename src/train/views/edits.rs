//! The edits people make to photos, as extra augmentations for copy-robust training
//! (`--augment curation`, after SSCD, Pizzi et al. 2022): 90° rotations, aspect changes,
//! borders and letterbox bars, text overlays and JPEG re-encoding. Grayscale, flips and
//! crops are already DINO augmentations.
//!
//! An edit is drawn for each view before any pixel work and applied to the whole source
//! image; the view's crop is then drawn on the edited image.

use ab_glyph::PxScale;
use image::codecs::jpeg::JpegEncoder;
use image::{imageops, ImageDecoder, Rgb, RgbImage};
use imageproc::drawing::draw_text_mut;
use rand::Rng;

/// Chance of each edit, drawn independently per view.
const ROTATE_P: f64 = 0.15;
const ASPECT_P: f64 = 0.15;
const BARS_P: f64 = 0.15;
const TEXT_P: f64 = 0.15;
const JPEG_P: f64 = 0.2;
/// Width or height scaled by a factor in this range.
const ASPECT_RANGE: (f64, f64) = (0.67, 1.5);
/// Bar thickness as a share of the image side.
const BAR_RANGE: (f64, f64) = (0.05, 0.2);
/// Text height as a share of the image height.
const TEXT_RANGE: (f64, f64) = (0.08, 0.2);
/// JPEG quality range.
const JPEG_QUALITY: (u8, u8) = (15, 80);
const TEXT_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 !?#@";

/// Uniform bars around the photo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bars {
    /// The same colour on all four sides.
    Border,
    /// Top and bottom only (a wide frame).
    Letterbox,
    /// Left and right only (a tall frame).
    Pillarbox,
}

/// Text drawn over the photo.
#[derive(Debug, Clone, PartialEq)]
pub struct Caption {
    /// The characters.
    pub text: String,
    /// Height as a share of the image height.
    pub size: f64,
    /// Position of the first character as shares of width and height.
    pub at: (f64, f64),
    /// Text colour.
    pub colour: [u8; 3],
}

/// The edits of one view, all optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Edit {
    /// Quarter turns clockwise (1–3).
    pub quarter_turns: Option<u8>,
    /// Width and height factors.
    pub aspect: Option<(f64, f64)>,
    /// Bars, their thickness (share of the side) and colour.
    pub bars: Option<(Bars, f64, [u8; 3])>,
    /// A caption.
    pub caption: Option<Caption>,
    /// JPEG re-encoding at this quality.
    pub jpeg_quality: Option<u8>,
}

fn uniform(rng: &mut impl Rng, (lo, hi): (f64, f64)) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

fn colour(rng: &mut impl Rng) -> [u8; 3] {
    [rng.random(), rng.random(), rng.random()]
}

/// Draws one view's edits.
pub fn draw_edit(rng: &mut impl Rng) -> Edit {
    let quarter_turns = rng.random_bool(ROTATE_P).then(|| rng.random_range(1..=3u8));
    let aspect = rng.random_bool(ASPECT_P).then(|| {
        let f = uniform(rng, ASPECT_RANGE);
        if rng.random_bool(0.5) {
            (f, 1.0)
        } else {
            (1.0, f)
        }
    });
    let bars = rng.random_bool(BARS_P).then(|| {
        let kind = match rng.random_range(0..3) {
            0 => Bars::Border,
            1 => Bars::Letterbox,
            _ => Bars::Pillarbox,
        };
        (kind, uniform(rng, BAR_RANGE), colour(rng))
    });
    let caption = rng.random_bool(TEXT_P).then(|| {
        let len = rng.random_range(3..=14);
        let text = (0..len)
            .map(|_| char::from(TEXT_CHARS[rng.random_range(0..TEXT_CHARS.len())]))
            .collect();
        Caption {
            text,
            size: uniform(rng, TEXT_RANGE),
            at: (uniform(rng, (0.0, 0.6)), uniform(rng, (0.0, 0.85))),
            colour: colour(rng),
        }
    });
    let jpeg_quality = rng
        .random_bool(JPEG_P)
        .then(|| rng.random_range(JPEG_QUALITY.0..=JPEG_QUALITY.1));
    Edit {
        quarter_turns,
        aspect,
        bars,
        caption,
        jpeg_quality,
    }
}

impl Edit {
    /// Whether the edit leaves the photo as it is.
    pub fn is_none(&self) -> bool {
        *self == Edit::default()
    }

    /// The size of `(width, height)` after the edit (the crop is drawn on it).
    pub fn edited_size(&self, width: u32, height: u32) -> (u32, u32) {
        let (mut w, mut h) = (width, height);
        if self.quarter_turns.is_some_and(|q| q % 2 == 1) {
            (w, h) = (h, w);
        }
        if let Some((fw, fh)) = self.aspect {
            (w, h) = (scaled(w, fw), scaled(h, fh));
        }
        if let Some((kind, share, _)) = self.bars {
            let (bw, bh) = bar_sizes(kind, share, w, h);
            (w, h) = (w + 2 * bw, h + 2 * bh);
        }
        (w, h)
    }

    /// The edited image.
    pub fn apply(&self, img: &RgbImage) -> RgbImage {
        let mut out = match self.quarter_turns {
            Some(1) => imageops::rotate90(img),
            Some(2) => imageops::rotate180(img),
            Some(3) => imageops::rotate270(img),
            _ => img.clone(),
        };
        if let Some((fw, fh)) = self.aspect {
            let (w, h) = (scaled(out.width(), fw), scaled(out.height(), fh));
            out = imageops::resize(&out, w, h, imageops::FilterType::Triangle);
        }
        if let Some((kind, share, colour)) = self.bars {
            out = with_bars(&out, kind, share, colour);
        }
        if let Some(caption) = &self.caption {
            draw_caption(&mut out, caption);
        }
        if let Some(quality) = self.jpeg_quality {
            out = jpeg_round_trip(&out, quality).unwrap_or(out);
        }
        out
    }
}

fn scaled(side: u32, factor: f64) -> u32 {
    ((f64::from(side) * factor).round() as u32).max(1)
}

fn bar_sizes(kind: Bars, share: f64, w: u32, h: u32) -> (u32, u32) {
    let bar = |side: u32| (f64::from(side) * share).round() as u32;
    match kind {
        Bars::Border => (bar(w.min(h)), bar(w.min(h))),
        Bars::Letterbox => (0, bar(h)),
        Bars::Pillarbox => (bar(w), 0),
    }
}

pub(crate) fn with_bars(img: &RgbImage, kind: Bars, share: f64, colour: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    let (bw, bh) = bar_sizes(kind, share, w, h);
    let mut out = RgbImage::from_pixel(w + 2 * bw, h + 2 * bh, Rgb(colour));
    imageops::replace(&mut out, img, i64::from(bw), i64::from(bh));
    out
}

pub(crate) fn draw_caption(img: &mut RgbImage, caption: &Caption) {
    let Ok(font) = crate::train::plot::font() else {
        return;
    };
    let (w, h) = (f64::from(img.width()), f64::from(img.height()));
    let px = (caption.size * h).max(4.0) as f32;
    let (x, y) = ((caption.at.0 * w) as i32, (caption.at.1 * h) as i32);
    draw_text_mut(
        img,
        Rgb(caption.colour),
        x,
        y,
        PxScale::from(px),
        &font,
        &caption.text,
    );
}

pub(crate) fn jpeg_round_trip(img: &RgbImage, quality: u8) -> Option<RgbImage> {
    let mut bytes = Vec::new();
    img.write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, quality))
        .ok()?;
    let decoder = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(bytes)).ok()?;
    let (w, h) = decoder.dimensions();
    let mut buf = vec![0u8; usize::try_from(decoder.total_bytes()).ok()?];
    decoder.read_image(&mut buf).ok()?;
    RgbImage::from_raw(w, h, buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn photo() -> RgbImage {
        RgbImage::from_fn(60, 40, |x, y| Rgb([(x * 4) as u8, (y * 6) as u8, 90]))
    }

    #[test]
    fn every_edit_happens_and_the_size_is_predicted() {
        let mut rng = StdRng::seed_from_u64(3);
        let (mut turns, mut aspects, mut bars, mut captions, mut jpegs, mut none) =
            (0, 0, 0, 0, 0, 0);
        for _ in 0..400 {
            let edit = draw_edit(&mut rng);
            turns += usize::from(edit.quarter_turns.is_some());
            aspects += usize::from(edit.aspect.is_some());
            bars += usize::from(edit.bars.is_some());
            captions += usize::from(edit.caption.is_some());
            jpegs += usize::from(edit.jpeg_quality.is_some());
            none += usize::from(edit.is_none());
            let out = edit.apply(&photo());
            assert_eq!(out.dimensions(), edit.edited_size(60, 40), "{edit:?}");
        }
        for (name, n, p) in [
            ("rotation", turns, ROTATE_P),
            ("aspect", aspects, ASPECT_P),
            ("bars", bars, BARS_P),
            ("text", captions, TEXT_P),
            ("jpeg", jpegs, JPEG_P),
        ] {
            let want = 400.0 * p;
            assert!((n as f64 - want).abs() < 0.5 * want, "{name}: {n} of 400");
        }
        assert!(none > 100, "{none} of 400 views unedited");
    }

    #[test]
    fn edits_do_what_they_say() {
        let img = photo();
        let turned = Edit {
            quarter_turns: Some(1),
            ..Edit::default()
        }
        .apply(&img);
        assert_eq!(turned.dimensions(), (40, 60));
        assert_eq!(turned.get_pixel(39, 0), img.get_pixel(0, 0));
        let boxed = Edit {
            bars: Some((Bars::Letterbox, 0.1, [0, 0, 0])),
            ..Edit::default()
        }
        .apply(&img);
        assert_eq!(boxed.dimensions(), (60, 48));
        assert_eq!(boxed.get_pixel(30, 1), &Rgb([0, 0, 0]));
        assert_eq!(boxed.get_pixel(30, 20), img.get_pixel(30, 16));
        let caption = Caption {
            text: "COPY".into(),
            size: 0.3,
            at: (0.1, 0.1),
            colour: [255, 255, 255],
        };
        let captioned = Edit {
            caption: Some(caption),
            ..Edit::default()
        }
        .apply(&img);
        let changed = captioned
            .pixels()
            .zip(img.pixels())
            .filter(|(a, b)| a != b)
            .count();
        assert!(changed > 20, "{changed} pixels changed by the text");
        let jpeg = Edit {
            jpeg_quality: Some(20),
            ..Edit::default()
        }
        .apply(&img);
        assert_eq!(jpeg.dimensions(), img.dimensions());
        assert_ne!(jpeg, img);
    }
}
