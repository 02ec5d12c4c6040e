//! Responsiveness on a large synthetic state: the time to draw the first frame of a loaded
//! collection and to redraw after a key, into an off-screen buffer of a real terminal's
//! size (what the terminal itself then takes to show the cells is not counted).

use std::time::{Duration, Instant};

use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::action::Action;
use super::app::{App, View};
use super::fixture;
use super::job::Reply;
use super::render;
use super::thumbs::Previews;
use crate::{Error, Result};

/// What [`run`] measured, in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TuiBench {
    /// Photos in the synthetic collection.
    pub photos: u64,
    /// Terminal size drawn, columns × rows.
    pub size: (u16, u16),
    /// Taking in the loaded collection and drawing the first frame.
    pub first_frame_ms: f64,
    /// Median over the keys of one key's action and the redraw.
    pub key_redraw_median_ms: f64,
    /// Slowest key (view switches rebuild the list).
    pub key_redraw_max_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Measures a collection of `photos` photos on a `width` × `height` terminal.
pub fn run(photos: u64, width: u16, height: u16) -> Result<TuiBench> {
    let snapshot = fixture::synthetic(photos);
    let mut terminal = Terminal::new(TestBackend::new(width, height))
        .map_err(|e| Error::Config(format!("test backend: {e}")))?;
    let mut draw = |app: &mut App| {
        terminal
            .draw(|f| render::draw(f, app))
            .map(|_| ())
            .map_err(|e| Error::Config(format!("draw: {e}")))
    };
    let start = Instant::now();
    let mut app = App::new(Default::default(), Previews::disabled());
    app.receive(Reply::Loaded(Box::new(snapshot), None));
    draw(&mut app)?;
    let first = start.elapsed();
    let keys = [
        Action::Move(1),
        Action::Move(10),
        Action::Bottom,
        Action::Enter,
        Action::Move(1),
        Action::Back,
        Action::Show(View::Duplicates),
        Action::Move(1),
        Action::ToggleMark,
        Action::Bottom,
        Action::Show(View::Search),
        Action::Show(View::Failures),
        Action::Show(View::Training),
        Action::Show(View::Clusters),
        Action::Top,
    ];
    let mut times = Vec::with_capacity(keys.len());
    for key in keys {
        let t = Instant::now();
        app.apply(key);
        draw(&mut app)?;
        times.push(ms(t.elapsed()));
    }
    times.sort_by(f64::total_cmp);
    Ok(TuiBench {
        photos,
        size: (width, height),
        first_frame_ms: ms(first),
        key_redraw_median_ms: times[times.len() / 2],
        key_redraw_max_ms: times.last().copied().unwrap_or_default(),
    })
}
