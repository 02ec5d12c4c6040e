//! The preview pane: the selected photo's thumbnail and details (for a duplicate, the
//! keeper beside it), a cluster's representative, or a failure's full reason. A photo
//! whose attention map was asked for shows the map instead of its thumbnail, and where the
//! map's PNG is (the only way to see it with previews off).

use dino_curate_index::{PhotoId, PhotoRecord};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;
use ratatui_image::{Resize, StatefulImage};

use super::keep_tail;
use crate::tui::app::{App, Attention, Row};
use crate::tui::thumbs::Preview;

/// Draws the preview pane for the selected row.
pub fn draw(frame: &mut Frame, area: Rect, app: &mut App) {
    match app.selected_row() {
        Some(Row::Failure(i)) => {
            let (path, why) = &app.data.failures[i];
            let text = format!("{}\n\n{why}", path.display());
            let p = Paragraph::new(text).wrap(Wrap { trim: false });
            frame.render_widget(p.block(Block::bordered().title(" Failure ")), area);
        }
        Some(Row::Photo {
            id,
            group: Some(g),
            keeper,
            ..
        }) => draw_pair(frame, area, app, g, (!keeper).then_some(id)),
        Some(Row::Cluster(i)) => {
            let c = &app.data.clusters[i];
            let title = format!(" Cluster {i}: {} photos ", c.members.len());
            photo(frame, area, app, c.representative, &title);
        }
        Some(Row::Photo { id, .. }) => photo(frame, area, app, id, " Photo "),
        None => frame.render_widget(Block::bordered().title(" Preview "), area),
    }
}

/// A duplicate group's keeper beside the selected member (or the first one).
fn draw_pair(frame: &mut Frame, area: Rect, app: &mut App, group: usize, member: Option<PhotoId>) {
    let Some(g) = app.data.dups.get(group) else {
        return;
    };
    let keep = g.keep;
    let other = member.or_else(|| g.members.first().map(|m| m.id));
    let halves = [Constraint::Percentage(50), Constraint::Percentage(50)];
    // Side by side on a wide pane, else one above the other (cells are twice as tall as wide).
    let [left, right] = if area.width > area.height * 4 {
        Layout::horizontal(halves).areas(area)
    } else {
        Layout::vertical(halves).areas(area)
    };
    photo(frame, left, app, keep, " Keeper ");
    if let Some(other) = other {
        photo(frame, right, app, other, " Duplicate ");
    }
}

/// One photo: thumbnail (or attention map) above, details below.
fn photo(frame: &mut Frame, area: Rect, app: &mut App, id: PhotoId, title: &str) {
    let attention = app.attention.as_ref().filter(|a| a.photo() == id);
    let block = Block::bordered().title(attention_title(attention, title));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(record) = app.record(id).cloned() else {
        frame.render_widget(Paragraph::new("(no longer indexed)"), inner);
        return;
    };
    let mut lines = detail_lines(&record, app.marks.contains(&id));
    lines.extend(attention_lines(attention, usize::from(inner.width)));
    let [image, text] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(lines.len() as u16)]).areas(inner);
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), text);
    if !attention_image(frame, image, app, id) {
        thumbnail(frame, image, app, &record);
    }
}

/// The pane's title, saying when it shows the attention map.
fn attention_title(attention: Option<&Attention>, title: &str) -> String {
    match attention {
        None => title.to_string(),
        Some(Attention::Computing(_)) => format!("{} · attention… ", title.trim_end()),
        Some(Attention::Ready(_, map, _)) => format!(
            "{} · attention (mean of {} heads) ",
            title.trim_end(),
            map.heads
        ),
    }
}

/// What the attention map found and where its PNG is, cut to `width` columns.
fn attention_lines(attention: Option<&Attention>, width: usize) -> Vec<Line<'static>> {
    let map = match attention {
        None => return Vec::new(),
        Some(Attention::Computing(_)) => {
            return vec![Line::styled(
                "computing the attention map…",
                Style::new().fg(Color::DarkGray),
            )]
        }
        Some(Attention::Ready(_, map, _)) => map,
    };
    let (row, col) = map.strongest;
    let found = [
        format!("attention map: {}×{} patches", map.rows, map.cols),
        format!("strongest at row {}, column {}", row + 1, col + 1),
    ];
    let mut lines: Vec<Line> = found
        .iter()
        .map(|t| Line::styled(keep_tail(t, width), Style::new().fg(Color::Yellow)))
        .collect();
    lines.push(match &map.file {
        Ok(path) => Line::from(keep_tail(&format!("saved as {}", path.display()), width)),
        Err(why) => Line::styled(
            keep_tail(&format!("not saved: {why}"), width),
            Style::new().fg(Color::Red),
        ),
    });
    lines
}

/// Draws the photo's attention map if it is ready and previews are on; false otherwise.
fn attention_image(frame: &mut Frame, area: Rect, app: &mut App, id: PhotoId) -> bool {
    match app.attention.as_mut() {
        Some(Attention::Ready(of, _, Some(Preview::Ready(protocol)))) if *of == id => {
            frame.render_stateful_widget(
                StatefulImage::default().resize(Resize::Scale(None)),
                area,
                protocol.as_mut(),
            );
            true
        }
        _ => false,
    }
}

fn thumbnail(frame: &mut Frame, area: Rect, app: &mut App, record: &PhotoRecord) {
    if area.height == 0 {
        return;
    }
    match app.previews.get(record.blake3, &record.path) {
        None => {}
        Some(Preview::Loading) => frame.render_widget(
            Paragraph::new("loading preview…").style(Style::new().fg(Color::DarkGray)),
            area,
        ),
        Some(Preview::Failed(why)) => frame.render_widget(
            Paragraph::new(format!("no preview: {why}"))
                .style(Style::new().fg(Color::Red))
                .wrap(Wrap { trim: false }),
            area,
        ),
        Some(Preview::Ready(protocol)) => frame.render_stateful_widget(
            StatefulImage::default().resize(Resize::Scale(None)),
            area,
            protocol.as_mut(),
        ),
    }
}

fn detail_lines(r: &PhotoRecord, marked: bool) -> Vec<Line<'static>> {
    let name = r
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let folder = r
        .path
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut lines = vec![
        Line::from(name),
        Line::styled(folder, Style::new().fg(Color::DarkGray)),
        Line::from(format!(
            "{} · {} · {}",
            resolution(r),
            bytes(r.size),
            date(r)
        )),
    ];
    if marked {
        lines.push(Line::styled(
            "marked for the trash",
            Style::new().fg(Color::Yellow),
        ));
    }
    lines
}

/// "4032×3024".
pub fn resolution(r: &PhotoRecord) -> String {
    format!("{}×{}", r.width, r.height)
}

/// "2.1 MB", "340 kB", "12 B".
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.0} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

/// The date taken (EXIF), else the modification date (UTC), as YYYY-MM-DD.
pub fn date(r: &PhotoRecord) -> String {
    if let Some(t) = &r.taken_at {
        return t.chars().take(10).collect();
    }
    let secs = i64::try_from(r.mtime_ns / 1_000_000_000).unwrap_or_default();
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(340_000), "340 kB");
        assert_eq!(bytes(2_100_000), "2.1 MB");
    }
}
