//! A PNG of a run's `metrics.jsonl`: loss, learning rate, teacher momentum and
//! throughput against the step. Text uses an embedded font (DejaVu Sans Mono), so it
//! renders the same on machines without fontconfig.

use std::path::Path;

use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_hollow_rect_mut, draw_line_segment_mut, draw_text_mut};
use imageproc::rect::Rect;

use crate::atomic::write_atomically;
use crate::{Error, Result};

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");
const PANEL: (u32, u32) = (600, 340);
const MARGIN: (f32, f32, f32, f32) = (70.0, 20.0, 40.0, 40.0); // left, right, top, bottom
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([40, 40, 40]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);

/// One curve to draw.
#[derive(Debug, Clone)]
pub struct Series {
    /// Panel title.
    pub title: &'static str,
    /// `(step, value)` points in step order.
    pub points: Vec<(f64, f64)>,
    /// Line colour.
    pub color: Rgb<u8>,
}

/// Reads `metrics.jsonl` into the plotted series.
pub fn series_from_metrics(path: &Path) -> Result<Vec<Series>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let rows: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let column = |key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
            .collect()
    };
    Ok(vec![
        Series {
            title: "loss",
            points: column("loss"),
            color: Rgb([200, 40, 40]),
        },
        Series {
            title: "learning rate",
            points: column("lr"),
            color: Rgb([40, 90, 200]),
        },
        Series {
            title: "teacher momentum",
            points: column("momentum"),
            color: Rgb([30, 140, 70]),
        },
        Series {
            title: "images / s",
            points: column("img_per_s"),
            color: Rgb([150, 80, 180]),
        },
    ])
}

/// The embedded font (DejaVu Sans Mono), for every text this crate draws into images.
pub(crate) fn font() -> Result<FontRef<'static>> {
    FontRef::try_from_slice(FONT).map_err(|e| Error::Config(format!("embedded font: {e}")))
}

fn label(value: f64) -> String {
    let a = value.abs();
    if a != 0.0 && !(1e-2..1e4).contains(&a) {
        format!("{value:.2e}")
    } else {
        format!("{value:.4}")
    }
}

/// Draws one series into the panel whose top-left corner is `origin`.
fn draw_panel(img: &mut RgbImage, font: &FontRef<'_>, origin: (u32, u32), series: &Series) {
    let (ox, oy) = (origin.0 as f32, origin.1 as f32);
    let (w, h) = (PANEL.0 as f32, PANEL.1 as f32);
    let (left, top) = (ox + MARGIN.0, oy + MARGIN.2);
    let (right, bottom) = (ox + w - MARGIN.1, oy + h - MARGIN.3);
    let small = PxScale::from(13.0);
    draw_text_mut(
        img,
        INK,
        left as i32,
        (oy + 12.0) as i32,
        PxScale::from(16.0),
        font,
        series.title,
    );
    let frame =
        Rect::at(left as i32, top as i32).of_size((right - left) as u32, (bottom - top) as u32);
    draw_hollow_rect_mut(img, frame, INK);
    let points: Vec<(f64, f64)> = series
        .points
        .iter()
        .copied()
        .filter(|p| p.1.is_finite())
        .collect();
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        draw_text_mut(
            img,
            INK,
            (left + 10.0) as i32,
            (top + 10.0) as i32,
            small,
            font,
            "no data",
        );
        return;
    };
    let (x0, x1) = (first.0, last.0.max(first.0 + 1.0));
    let (mut y0, mut y1) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if y1 - y0 < 1e-12 {
        (y0, y1) = (y0 - 0.5 * y0.abs().max(1e-6), y1 + 0.5 * y1.abs().max(1e-6));
    }
    let to_px = |(x, y): (f64, f64)| {
        let px = left + ((x - x0) / (x1 - x0)) as f32 * (right - left);
        let py = bottom - ((y - y0) / (y1 - y0)) as f32 * (bottom - top);
        (px, py)
    };
    for i in 1..4 {
        let gy = top + (bottom - top) * i as f32 / 4.0;
        draw_line_segment_mut(img, (left + 1.0, gy), (right - 1.0, gy), GRID);
    }
    for pair in points.windows(2) {
        draw_line_segment_mut(img, to_px(pair[0]), to_px(pair[1]), series.color);
    }
    draw_text_mut(
        img,
        INK,
        (ox + 4.0) as i32,
        top as i32,
        small,
        font,
        &label(y1),
    );
    draw_text_mut(
        img,
        INK,
        (ox + 4.0) as i32,
        (bottom - 14.0) as i32,
        small,
        font,
        &label(y0),
    );
    let (bx, by) = (left as i32, (bottom + 6.0) as i32);
    draw_text_mut(img, INK, bx, by, small, font, &format!("step {x0:.0}"));
    draw_text_mut(
        img,
        INK,
        (right - 90.0) as i32,
        by,
        small,
        font,
        &format!("step {x1:.0}"),
    );
}

/// Height of the caption strip above the panels.
const CAPTION_HEIGHT: u32 = 30;

/// Renders the series two panels per row, under `caption` when there is one (the
/// learned-signal line), and writes the PNG atomically.
pub fn write_plot(series: &[Series], caption: Option<&str>, path: &Path) -> Result<()> {
    let font = font()?;
    let rows = series.len().div_ceil(2).max(1) as u32;
    let top = if caption.is_some() { CAPTION_HEIGHT } else { 0 };
    let mut img = RgbImage::from_pixel(PANEL.0 * 2, PANEL.1 * rows + top, WHITE);
    if let Some(text) = caption {
        draw_text_mut(&mut img, INK, 10, 8, PxScale::from(13.0), &font, text);
    }
    for (i, s) in series.iter().enumerate() {
        let origin = ((i as u32 % 2) * PANEL.0, (i as u32 / 2) * PANEL.1 + top);
        draw_panel(&mut img, &font, origin, s);
    }
    write_atomically(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| Error::Config(format!("{}: {e}", tmp.display())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_curves_and_empty_series() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("plot.png");
        let series = vec![
            Series {
                title: "loss",
                points: (0..50).map(|i| (i as f64, 8.0 - i as f64 * 0.05)).collect(),
                color: INK,
            },
            Series {
                title: "flat",
                points: vec![(0.0, 1.0), (1.0, 1.0)],
                color: INK,
            },
            Series {
                title: "empty",
                points: vec![],
                color: INK,
            },
        ];
        write_plot(&series, Some("learned: a caption"), &path)?;
        let img = image::open(&path)
            .map_err(|e| Error::Config(e.to_string()))?
            .to_rgb8();
        assert_eq!(
            img.dimensions(),
            (PANEL.0 * 2, PANEL.1 * 2 + CAPTION_HEIGHT)
        );
        // the loss curve put coloured pixels inside the first panel
        let inked = img
            .enumerate_pixels()
            .filter(|(x, y, p)| *x < PANEL.0 && *y < PANEL.1 && **p == INK)
            .count();
        assert!(inked > 500, "{inked} dark pixels");
        Ok(())
    }
}
