//! The real terminal: raw mode, alternate screen and mouse capture, always undone (also on
//! panic), and the event loop tying keys, the job thread and the previews together.

use std::io::{stdout, Stdout};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use ratatui_image::picker::Picker;

use super::action::Effect;
use super::app::App;
use super::job::{self, Reply, Request, Snapshot, Worker};
use super::thumbs::Previews;
use super::{keys, render};
use crate::{Error, Result};

/// How long the loop waits for a key before looking at the workers again.
const TICK: Duration = Duration::from_millis(80);

type Term = Terminal<CrosstermBackend<Stdout>>;

fn io_error(e: std::io::Error) -> Error {
    Error::io("terminal", e)
}

/// Puts the terminal back as it was; safe to call more than once.
pub fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(
        stdout(),
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
}

fn setup() -> Result<Term> {
    install_panic_hook();
    enable_raw_mode().map_err(io_error)?;
    execute!(stdout(), EnterAlternateScreen, EnableMouseCapture).map_err(io_error)?;
    Terminal::new(CrosstermBackend::new(stdout())).map_err(io_error)
}

/// Whether we run inside tmux or screen, which do not pass graphics queries through by
/// default.
fn in_multiplexer() -> bool {
    let term = std::env::var("TERM").unwrap_or_default();
    std::env::var_os("TMUX").is_some() || term.starts_with("tmux") || term.starts_with("screen")
}

/// The graphics protocol the terminal answers to (kitty, sixel, iTerm2), else unicode
/// half-blocks. Asked before raw mode is ours (the query toggles raw mode itself). Not
/// asked inside tmux: there the query times out, and the reader it leaves behind would
/// swallow the first key typed.
fn picker() -> Picker {
    if in_multiplexer() {
        return Picker::halfblocks();
    }
    Picker::from_query_stdio().unwrap_or_else(|_| Picker::halfblocks())
}

/// Runs the UI until the user quits. Thumbnails are cached in `thumbs` when given.
pub fn run(worker: Worker, thumbs: Option<PathBuf>, previews: bool) -> Result<()> {
    let previews = if previews {
        Previews::new(picker(), thumbs)
    } else {
        Previews::disabled()
    };
    let mut terminal = setup()?;
    let app = App::new(Snapshot::default(), previews);
    let result = event_loop(&mut terminal, app, job::spawn(worker));
    restore();
    result
}

fn event_loop(
    terminal: &mut Term,
    mut app: App,
    (jobs, replies): (Sender<Request>, Receiver<Reply>),
) -> Result<()> {
    let mut effects = app.start();
    let mut dirty = true;
    loop {
        for effect in effects.drain(..) {
            match effect {
                Effect::Quit => return Ok(()),
                Effect::Open(path) => app.status = open(&path),
                Effect::Job(request) => {
                    if jobs.send(request).is_err() {
                        app.receive(Reply::Failed("the job thread stopped".into()));
                    }
                }
            }
            dirty = true;
        }
        if dirty {
            terminal
                .draw(|f| render::draw(f, &mut app))
                .map_err(io_error)?;
        }
        dirty = false;
        if event::poll(TICK).map_err(io_error)? {
            while {
                effects.extend(handle(&mut app, event::read().map_err(io_error)?));
                event::poll(Duration::ZERO).map_err(io_error)?
            } {}
            dirty = true;
        }
        for reply in replies.try_iter() {
            app.receive(reply);
            dirty = true;
        }
        dirty |= app.previews.poll();
        if app.busy.0 > 0 {
            app.tick = app.tick.wrapping_add(1);
            dirty = true;
        }
    }
}

fn handle(app: &mut App, event: Event) -> Vec<crate::tui::Effect> {
    let action = match event {
        Event::Key(key) => keys::action_for(key, &app.mode),
        Event::Mouse(m) if app.mode == crate::tui::Mode::Normal => {
            keys::mouse_action(m, render::LIST_TOP, app.list_width)
        }
        _ => None,
    };
    action.map(|a| app.apply(a)).unwrap_or_default()
}

/// Opens `path` with the system viewer, without waiting for it; returns a status line.
fn open(path: &Path) -> String {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let child = Command::new(opener)
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(mut child) => {
            // Reaped in the background so that it leaves no zombie.
            std::thread::spawn(move || child.wait());
            format!("opened {}", path.display())
        }
        Err(e) => format!("cannot run {opener}: {e}"),
    }
}
