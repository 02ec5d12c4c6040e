//! The Training view: the current run's curves from its `metrics.jsonl`.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

use crate::train::plot::Series;
use crate::tui::app::App;

const COLOURS: [Color; 4] = [Color::Red, Color::Blue, Color::Green, Color::Magenta];

/// Draws one chart per non-empty series, or why there is none.
pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let training = match &app.data.training {
        Ok(t) => t,
        Err(why) => {
            let block = Block::bordered().title(" Training ");
            frame.render_widget(Paragraph::new(why.clone()).block(block), area);
            return;
        }
    };
    let series: Vec<&Series> = training
        .series
        .iter()
        .filter(|s| !s.points.is_empty())
        .collect();
    if series.is_empty() {
        let block = Block::bordered().title(format!(" Training: {} ", training.run));
        frame.render_widget(Paragraph::new("no step recorded yet").block(block), area);
        return;
    }
    let area = match &training.signal {
        Some(line) => {
            let [top, rest] =
                Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
            frame.render_widget(Paragraph::new(line.as_str()), top);
            rest
        }
        None => area,
    };
    let rows = series.len().div_ceil(2);
    let row_areas = Layout::vertical(vec![Constraint::Fill(1); rows]).split(area);
    for (i, s) in series.iter().enumerate() {
        let cols = Layout::horizontal([Constraint::Fill(1); 2]).split(row_areas[i / 2]);
        chart(
            frame,
            cols[i % 2],
            s,
            &training.run,
            COLOURS[i % COLOURS.len()],
        );
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> [f64; 2] {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo < hi {
        [lo, hi]
    } else {
        [lo - 0.5, lo + 0.5]
    }
}

fn label(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-2..1e4).contains(&a) {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
    }
}

fn chart(frame: &mut Frame, area: Rect, s: &Series, run: &str, colour: Color) {
    let x = bounds(s.points.iter().map(|p| p.0));
    let y = bounds(s.points.iter().map(|p| p.1));
    let last = s.points.last().map(|p| p.1).unwrap_or_default();
    let data = Dataset::default()
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(Style::new().fg(colour))
        .data(&s.points);
    let title = Line::from(format!(" {} (last {}) · {run} ", s.title, label(last)));
    let chart = Chart::new(vec![data])
        .block(Block::bordered().title(title))
        .x_axis(
            Axis::default()
                .title("step")
                .bounds(x)
                .labels([label(x[0]), label(x[1])]),
        )
        .y_axis(Axis::default().bounds(y).labels([label(y[0]), label(y[1])]));
    frame.render_widget(chart, area);
}
