//! The list views (Clusters, Duplicates, Search, Failures): a table of the visible rows
//! beside a preview pane.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, Cell, Paragraph, Row as TableRow, Table};
use ratatui::Frame;

use super::{details, keep_tail, ACCENT};
use crate::curate::dups::Evidence;
use crate::tui::action::Query;
use crate::tui::app::{rule_name, App, Row, View};
use dino_curate_index::PhotoId;

/// Draws the list of the view on screen and its preview pane.
pub fn draw(frame: &mut Frame, area: Rect, app: &mut App) {
    let [list, preview] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(area);
    app.list_width = list.width;
    draw_table(frame, list, app);
    details::draw(frame, preview, app);
}

fn title(app: &App) -> String {
    let n = app.rows.len();
    match (app.view, app.drill) {
        (View::Clusters, Some((i, _))) => format!(" Cluster {i}: {n} photos (Esc: back) "),
        (View::Clusters, None) => format!(" {n} clusters (Enter: members) "),
        (View::Duplicates, _) => format!(
            " {} groups, {n} photos · keeping the {} (r: change) ",
            app.data.dups.len(),
            rule_name(&app.data.keep)
        ),
        (View::Search, _) => match app.search.as_ref().map(|f| &f.query) {
            Some(Query::Photo(id)) => {
                let name = app.record(*id).and_then(|r| r.path.file_name());
                let name = name
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                format!(" {n} photos like {name} ")
            }
            Some(Query::Path(p)) => format!(" {n} photos like {} ", p.display()),
            None => " Search ".into(),
        },
        _ => format!(" {n} files the index could not read "),
    }
}

fn header(app: &App) -> (Vec<&'static str>, Vec<Constraint>) {
    let path = Constraint::Fill(1);
    match (app.view, app.drill) {
        (View::Clusters, None) => (
            vec!["#", "photos", "cohesion", "representative"],
            vec![
                Constraint::Length(4),
                Constraint::Length(7),
                Constraint::Length(8),
                path,
            ],
        ),
        (View::Duplicates, _) => (
            vec!["", "group", "why", "size", "bytes", "date", "path"],
            vec![
                Constraint::Length(3),
                Constraint::Length(9),
                Constraint::Length(why_width(app)),
                Constraint::Length(9),
                Constraint::Length(7),
                Constraint::Length(10),
                path,
            ],
        ),
        (View::Failures, _) => (vec!["path", "reason"], vec![path, Constraint::Fill(1)]),
        (View::Search, _) => (
            vec!["", "why", "size", "path"],
            vec![
                Constraint::Length(3),
                Constraint::Length(search_why_width(app)),
                Constraint::Length(9),
                path,
            ],
        ),
        _ => (
            vec!["", "sim.", "size", "path"],
            vec![
                Constraint::Length(3),
                Constraint::Length(5),
                Constraint::Length(9),
                path,
            ],
        ),
    }
}

fn draw_table(frame: &mut Frame, area: Rect, app: &mut App) {
    let block = Block::bordered().title(title(app));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if app.rows.is_empty() {
        frame.render_widget(Paragraph::new(empty_text(app)), inner);
        return;
    }
    let height = usize::from(inner.height.saturating_sub(1));
    let len = app.rows.len();
    let range = app.cursor().window(height, len);
    let selected = app.cursor().selected;
    let (names, widths) = header(app);
    let path_width = path_width(&widths, inner.width.saturating_sub(2));
    let highlight = Style::new()
        .bg(Color::DarkGray)
        .add_modifier(Modifier::BOLD);
    let rows: Vec<TableRow> = range
        .map(|i| {
            let pointer = Cell::from(if i == selected { "›" } else { " " });
            let cells = std::iter::once(pointer).chain(cells(app, app.rows[i], path_width));
            let row = TableRow::new(cells.collect::<Vec<_>>());
            if i == selected {
                row.style(highlight)
            } else {
                row
            }
        })
        .collect();
    let head = TableRow::new(std::iter::once("").chain(names)).style(Style::new().fg(ACCENT));
    let widths = std::iter::once(Constraint::Length(1)).chain(widths);
    frame.render_widget(Table::new(rows, widths).header(head), inner);
}

/// Columns left for the path once the fixed columns and their gaps are taken.
fn path_width(widths: &[Constraint], total: u16) -> usize {
    let fixed: u16 = widths
        .iter()
        .map(|c| match c {
            Constraint::Length(n) => n + 1,
            _ => 0,
        })
        .sum();
    usize::from(total.saturating_sub(fixed))
}

fn empty_text(app: &App) -> String {
    if let Some(why) = &app.data.empty_reason {
        return why.clone();
    }
    if !app.filter.is_empty() {
        return format!(
            "nothing matches the filter {:?} (Esc clears it)",
            app.filter
        );
    }
    match app.view {
        View::Duplicates => "no near-duplicates".into(),
        View::Search => "s searches for photos like the selected one, p by a file's path".into(),
        View::Failures => "every file was read".into(),
        _ => "nothing here".into(),
    }
}

fn cells(app: &App, row: Row, path_width: usize) -> Vec<Cell<'static>> {
    match row {
        Row::Cluster(i) => cluster_cells(app, i, path_width),
        Row::Failure(i) => {
            let (path, why) = &app.data.failures[i];
            vec![
                Cell::from(keep_tail(&path.to_string_lossy(), path_width)),
                Cell::from(why.clone()),
            ]
        }
        Row::Photo {
            id,
            score,
            group,
            keeper,
        } => {
            let mark = if app.marks.contains(&id) {
                "[x]"
            } else {
                "[ ]"
            };
            let rec = app.record(id);
            let path = rec.map(|r| keep_tail(&r.path.to_string_lossy(), path_width));
            let size = rec.map(details::resolution).unwrap_or_default();
            let sim = if keeper {
                Cell::from("keep").style(Style::new().fg(Color::Green))
            } else {
                Cell::from(score.map(|s| format!("{s:.3}")).unwrap_or_default())
            };
            let path = path.unwrap_or_else(|| "(no longer indexed)".into());
            match group {
                Some(g) => vec![
                    Cell::from(mark),
                    Cell::from(group_cell(app, g, keeper)),
                    if keeper {
                        sim
                    } else {
                        Cell::from(evidence_cell(app, g, id))
                    },
                    Cell::from(size),
                    Cell::from(rec.map(|r| details::bytes(r.size)).unwrap_or_default()),
                    Cell::from(rec.map(details::date).unwrap_or_default()),
                    Cell::from(path),
                ],
                None if app.view == View::Search => {
                    let why = search_label(app, id).unwrap_or_default();
                    let style = if why.starts_with("copy") {
                        Style::new().fg(Color::Green)
                    } else {
                        Style::new()
                    };
                    let why = Cell::from(why).style(style);
                    vec![Cell::from(mark), why, Cell::from(size), Cell::from(path)]
                }
                None => vec![Cell::from(mark), sim, Cell::from(size), Cell::from(path)],
            }
        }
    }
}

/// The group number, with its kind on the keeper's row: "3 burst".
fn group_cell(app: &App, g: usize, keeper: bool) -> String {
    match app.data.dups.get(g) {
        Some(group) if keeper => format!("{g} {}", group.kind.name()),
        _ => g.to_string(),
    }
}

/// Width of the duplicates' "why" column: the widest of "desc 0.993" and "verified N" for
/// the most inliers of any group, so that the count is never cut.
fn why_width(app: &App) -> u16 {
    let most_inliers = (app.data.dups.iter())
        .flat_map(|group| &group.members)
        .filter(|m| m.evidence == Evidence::Verified)
        .map(|m| m.inliers)
        .max();
    let verified = most_inliers.map_or(0, |n| "verified ".len() + n.to_string().len());
    u16::try_from(verified.max("desc 0.993".len())).unwrap_or(u16::MAX)
}

/// Why a search result is listed: "copy: verified 57", "similar 0.83".
fn search_label(app: &App, id: PhotoId) -> Option<String> {
    let found = app.search.as_ref()?;
    Some(found.hits.iter().find(|h| h.id == id)?.label())
}

/// Width of the search's "why" column: its longest label, so that no count is cut.
fn search_why_width(app: &App) -> u16 {
    let hits = app.search.as_ref().map(|f| f.hits.as_slice());
    let longest = (hits.unwrap_or_default().iter())
        .map(|h| h.label().chars().count())
        .max()
        .unwrap_or(0);
    u16::try_from(longest.max("similar 0.83".len())).unwrap_or(u16::MAX)
}

/// Why a member is in its group: "hash .81", "desc .993", "exact", "verified 42".
fn evidence_cell(app: &App, g: usize, id: PhotoId) -> String {
    let member = app
        .data
        .dups
        .get(g)
        .and_then(|group| group.members.iter().find(|m| m.id == id));
    match member.map(|m| (m.evidence, m.score, m.inliers)) {
        Some((Evidence::Exact, _, _)) => "exact".into(),
        Some((Evidence::Hash, s, _)) => format!("hash {s:.2}"),
        Some((Evidence::Descriptor, s, _)) => format!("desc {s:.3}"),
        Some((Evidence::Verified, _, inliers)) => format!("verified {inliers}"),
        None => String::new(),
    }
}

fn cluster_cells(app: &App, i: usize, path_width: usize) -> Vec<Cell<'static>> {
    let c = &app.data.clusters[i];
    let rep = app
        .record(c.representative)
        .map(|r| keep_tail(&r.path.to_string_lossy(), path_width))
        .unwrap_or_default();
    [
        i.to_string(),
        c.members.len().to_string(),
        format!("{:.3}", c.cohesion),
        rep,
    ]
    .into_iter()
    .map(Cell::from)
    .collect()
}
