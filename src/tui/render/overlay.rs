//! Overlays: key help, the trash confirmation and the search-by-path prompt.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::{keep_tail, ACCENT};
use crate::tui::app::{App, Mode};
use crate::tui::job::photos;
use crate::tui::keys::HELP;

/// Draws the overlay of the current mode, if it has one.
pub fn draw(frame: &mut Frame, app: &App) {
    match &app.mode {
        Mode::Help => help(frame),
        Mode::Confirm(files) => confirm(frame, files),
        Mode::SearchPath(text) => search_prompt(frame, text),
        Mode::Normal | Mode::Filter => {}
    }
}

fn centred(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height)])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width)])
        .flex(Flex::Center)
        .areas(row);
    cell
}

fn popup(frame: &mut Frame, area: Rect, title: &str, lines: Vec<Line<'static>>) {
    frame.render_widget(Clear, area);
    let block = Block::bordered()
        .title(title.to_string())
        .border_style(Style::new().fg(ACCENT));
    let p = Paragraph::new(lines)
        .block(block)
        .wrap(Wrap { trim: false });
    frame.render_widget(p, area);
}

fn help(frame: &mut Frame) {
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(keys, what)| {
            Line::from(vec![
                Span::styled(format!("{keys:>16}  "), Style::new().fg(ACCENT)),
                Span::raw(*what),
            ])
        })
        .collect();
    let area = centred(frame.area(), 72, lines.len() as u16 + 2);
    popup(frame, area, " Keys (Esc closes) ", lines);
}

fn confirm(frame: &mut Frame, files: &[std::path::PathBuf]) {
    let width = 64u16.min(frame.area().width);
    let shown = 6;
    let mut lines = vec![Line::styled(
        format!("Move {} to the workspace trash?", photos(files.len())),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    for f in files.iter().take(shown) {
        let text = keep_tail(&f.to_string_lossy(), usize::from(width.saturating_sub(4)));
        lines.push(Line::from(format!("  {text}")));
    }
    if files.len() > shown {
        lines.push(Line::from(format!("  … and {} more", files.len() - shown)));
    }
    lines.push(Line::from(""));
    lines.push(Line::styled(
        "y / Enter: move (u undoes)    n / Esc: cancel",
        Style::new().fg(Color::Yellow),
    ));
    let area = centred(frame.area(), width, lines.len() as u16 + 2);
    popup(frame, area, " Trash ", lines);
}

fn search_prompt(frame: &mut Frame, text: &str) {
    let lines = vec![
        Line::from(vec![
            Span::raw(text.to_string()),
            Span::styled("▏", Style::new().fg(ACCENT)),
        ]),
        Line::styled(
            "Enter: search    Esc: cancel",
            Style::new().fg(Color::DarkGray),
        ),
    ];
    let area = centred(frame.area(), 64u16.min(frame.area().width), 4);
    popup(frame, area, " Search like the image at ", lines);
}
