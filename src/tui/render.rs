//! Drawing: a pure function of the [`App`] (only scroll offsets and thumbnail requests
//! change while drawing). Lists draw only their visible window.

mod details;
mod lists;
mod overlay;
mod training;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::app::{App, Mode, View};

/// Screen row of a list's first row (tab bar, border, header above it).
pub const LIST_TOP: u16 = 3;

const SPINNER: [char; 8] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧'];
const ACCENT: Color = Color::Cyan;

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &mut App) {
    let [tabs, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_tabs(frame, tabs, app);
    match app.view {
        View::Training => training::draw(frame, body, app),
        _ => lists::draw(frame, body, app),
    }
    draw_status(frame, status, app);
    overlay::draw(frame, app);
}

fn draw_tabs(frame: &mut Frame, area: Rect, app: &App) {
    let mut spans = Vec::new();
    for (i, v) in View::ALL.iter().enumerate() {
        let style = if *v == app.view {
            Style::new()
                .fg(Color::Black)
                .bg(ACCENT)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        };
        spans.push(Span::styled(format!(" {} {} ", i + 1, v.title()), style));
    }
    if !app.marks.is_empty() {
        spans.push(Span::styled(
            format!("  {} marked", app.marks.len()),
            Style::new().fg(Color::Yellow),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_status(frame: &mut Frame, area: Rect, app: &App) {
    let line = match &app.mode {
        Mode::Filter => Line::from(vec![
            Span::styled("/", Style::new().fg(ACCENT)),
            Span::raw(app.filter.clone()),
            Span::styled("▏", Style::new().fg(ACCENT)),
            Span::styled(
                "  Enter keeps, Esc clears",
                Style::new().fg(Color::DarkGray),
            ),
        ]),
        _ => status_line(app),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn status_line(app: &App) -> Line<'static> {
    let mut spans = Vec::new();
    if app.busy.0 > 0 {
        let frame = SPINNER[app.tick % SPINNER.len()];
        let what = if app.busy.1.is_empty() {
            "working"
        } else {
            &app.busy.1
        };
        spans.push(Span::styled(
            format!("{frame} {what}…  "),
            Style::new().fg(Color::Yellow),
        ));
    }
    if !app.filter.is_empty() {
        spans.push(Span::styled(
            format!("filter: {}  ", app.filter),
            Style::new().fg(ACCENT),
        ));
    }
    spans.push(Span::raw(app.status.clone()));
    spans.push(Span::styled(
        "  ? help  q quit",
        Style::new().fg(Color::DarkGray),
    ));
    Line::from(spans)
}

/// `text` cut to `width` columns, keeping its end (paths: the file name matters most).
pub fn keep_tail(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let tail: String = text.chars().skip(n - (width - 1)).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::keep_tail;

    #[test]
    fn long_text_keeps_its_end() {
        assert_eq!(keep_tail("/a/b/photo.jpg", 20), "/a/b/photo.jpg");
        assert_eq!(keep_tail("/a/b/photo.jpg", 8), "…oto.jpg");
        assert_eq!(keep_tail("abc", 0), "");
    }
}
