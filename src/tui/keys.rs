//! Keys and mouse events to [`Action`]s, and the help listing every key.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind};

use super::action::Action;
use super::app::{Mode, View};

/// Every key, as the help overlay lists it.
pub const HELP: &[(&str, &str)] = &[
    ("↑ ↓ / k j", "move"),
    ("PgUp PgDn", "move a page"),
    ("g / G", "first / last row"),
    ("Enter / l / →", "open a cluster's members"),
    ("Esc / h / ←", "back, clear the filter, close a dialog"),
    ("Tab / Shift-Tab", "next / previous view"),
    (
        "1 2 3 4 5",
        "Clusters, Duplicates, Search, Failures, Training",
    ),
    ("space", "mark / unmark the photo for the trash"),
    ("a", "mark every duplicate but the keepers"),
    ("c", "clear the marks"),
    ("r", "keep: auto → largest → sharpest → newest → oldest"),
    ("t", "move the marked photos to the trash (asks first)"),
    ("u", "undo the last move to the trash"),
    ("o", "open the photo in the system viewer"),
    ("s", "search for photos like the selected one"),
    ("p", "search for photos like an image file (type its path)"),
    ("v", "the model's attention on the photo (v / Esc: back)"),
    ("/", "filter by path"),
    ("?", "this help"),
    ("q", "quit"),
    ("mouse", "scroll the list, click a row"),
];

/// Rows moved by PgUp / PgDn.
const PAGE: isize = 10;

/// The action a key stands for in `mode` (None: ignored).
pub fn action_for(key: KeyEvent, mode: &Mode) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    match mode {
        Mode::Normal | Mode::Help => normal(key),
        Mode::Filter | Mode::SearchPath(_) => prompt(key),
        Mode::Confirm(_) => confirm(key),
    }
}

fn normal(key: KeyEvent) -> Option<Action> {
    Some(match key.code {
        KeyCode::Up | KeyCode::Char('k') => Action::Move(-1),
        KeyCode::Down | KeyCode::Char('j') => Action::Move(1),
        KeyCode::PageUp => Action::Move(-PAGE),
        KeyCode::PageDown => Action::Move(PAGE),
        KeyCode::Home | KeyCode::Char('g') => Action::Top,
        KeyCode::End | KeyCode::Char('G') => Action::Bottom,
        KeyCode::Left | KeyCode::Char('h') | KeyCode::Esc => Action::Back,
        KeyCode::Right | KeyCode::Char('l') | KeyCode::Enter => Action::Enter,
        KeyCode::Tab => Action::NextView,
        KeyCode::BackTab => Action::PrevView,
        KeyCode::Char(c @ '1'..='5') => Action::Show(View::ALL[c as usize - '1' as usize]),
        KeyCode::Char(' ') => Action::ToggleMark,
        KeyCode::Char('a') => Action::MarkAllButKeepers,
        KeyCode::Char('c') => Action::ClearMarks,
        KeyCode::Char('r') => Action::CycleKeep,
        KeyCode::Char('t') => Action::Trash,
        KeyCode::Char('u') => Action::Undo,
        KeyCode::Char('o') => Action::Open,
        KeyCode::Char('s') => Action::SearchSelected,
        KeyCode::Char('p') => Action::SearchPathPrompt,
        KeyCode::Char('v') => Action::ToggleAttention,
        KeyCode::Char('/') => Action::FilterPrompt,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Char('q') => Action::Quit,
        _ => return None,
    })
}

fn prompt(key: KeyEvent) -> Option<Action> {
    Some(match key.code {
        KeyCode::Enter => Action::Confirm,
        KeyCode::Esc => Action::Back,
        KeyCode::Backspace => Action::Backspace,
        KeyCode::Char(c) => Action::Input(c),
        _ => return None,
    })
}

fn confirm(key: KeyEvent) -> Option<Action> {
    Some(match key.code {
        KeyCode::Enter => Action::Confirm,
        KeyCode::Esc => Action::Back,
        KeyCode::Char(c) => Action::Input(c.to_ascii_lowercase()),
        _ => return None,
    })
}

/// The action of a mouse event; the list's first row is at screen row `list_top` and the
/// list is `list_width` columns wide.
pub fn mouse_action(event: MouseEvent, list_top: u16, list_width: u16) -> Option<Action> {
    match event.kind {
        MouseEventKind::ScrollDown => Some(Action::Move(3)),
        MouseEventKind::ScrollUp => Some(Action::Move(-3)),
        MouseEventKind::Down(_) if event.row >= list_top && event.column < list_width => {
            Some(Action::Click(event.row - list_top))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn arrows_and_vim_keys_move() {
        for (code, d) in [
            (KeyCode::Up, -1),
            (KeyCode::Char('k'), -1),
            (KeyCode::Down, 1),
            (KeyCode::Char('j'), 1),
        ] {
            assert_eq!(action_for(key(code), &Mode::Normal), Some(Action::Move(d)));
        }
    }

    #[test]
    fn number_keys_pick_views() {
        for (i, v) in View::ALL.iter().enumerate() {
            let c = char::from(b'1' + i as u8);
            assert_eq!(
                action_for(key(KeyCode::Char(c)), &Mode::Normal),
                Some(Action::Show(*v))
            );
        }
    }

    #[test]
    fn prompts_take_letters_as_text() {
        let m = Mode::SearchPath(String::new());
        assert_eq!(
            action_for(key(KeyCode::Char('q')), &m),
            Some(Action::Input('q'))
        );
        assert_eq!(
            action_for(key(KeyCode::Char('q')), &Mode::Filter),
            Some(Action::Input('q'))
        );
        assert_eq!(action_for(key(KeyCode::Enter), &m), Some(Action::Confirm));
    }

    #[test]
    fn clicks_select_rows_of_the_list_only() {
        let at = |column, row| MouseEvent {
            kind: MouseEventKind::Down(crossterm::event::MouseButton::Left),
            column,
            row,
            modifiers: KeyModifiers::NONE,
        };
        assert_eq!(mouse_action(at(5, 7), 3, 60), Some(Action::Click(4)));
        assert_eq!(mouse_action(at(70, 7), 3, 60), None, "the preview pane");
        assert_eq!(mouse_action(at(5, 1), 3, 60), None, "above the rows");
    }

    #[test]
    fn ctrl_c_always_quits() {
        let k = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(action_for(k, &Mode::Filter), Some(Action::Quit));
    }

    fn code_of(token: &str) -> Option<KeyCode> {
        Some(match token {
            "↑" => KeyCode::Up,
            "↓" => KeyCode::Down,
            "←" => KeyCode::Left,
            "→" => KeyCode::Right,
            "PgUp" => KeyCode::PageUp,
            "PgDn" => KeyCode::PageDown,
            "Enter" => KeyCode::Enter,
            "Esc" => KeyCode::Esc,
            "Tab" => KeyCode::Tab,
            "Shift-Tab" => KeyCode::BackTab,
            "space" => KeyCode::Char(' '),
            t if t.chars().count() == 1 => KeyCode::Char(t.chars().next()?),
            _ => return None,
        })
    }

    #[test]
    fn every_key_in_the_help_does_something() {
        let tokens = HELP
            .iter()
            .filter(|(keys, _)| *keys != "mouse")
            .flat_map(|(keys, _)| keys.split([' ', '/']).filter(|t| !t.is_empty()));
        for token in tokens {
            let code = code_of(token).unwrap_or_else(|| panic!("unknown key {token:?}"));
            assert!(action_for(key(code), &Mode::Normal).is_some(), "{token}");
        }
    }
}
