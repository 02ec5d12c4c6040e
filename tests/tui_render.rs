//! Every view of the terminal UI drawn into ratatui's `TestBackend` from fixed in-memory
//! states and compared with the committed snapshots in `tests/snapshots/`.

use dino_curate::curate::dups::Evidence;
use dino_curate::tui::app::{App, View};
use dino_curate::tui::fixture;
use dino_curate::tui::job::{Reply, Snapshot};
use dino_curate::tui::thumbs::Previews;
use dino_curate::tui::{render, Action};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn screen(app: &mut App) -> String {
    let mut terminal = Terminal::new(TestBackend::new(110, 30)).expect("test backend");
    terminal.draw(|f| render::draw(f, app)).expect("draw");
    terminal.backend().to_string()
}

fn app_after(actions: &[Action]) -> App {
    let mut app = App::new(fixture::small(), Previews::disabled());
    for a in actions {
        app.apply(a.clone());
    }
    app
}

#[test]
fn clusters() {
    insta::assert_snapshot!(screen(&mut app_after(&[Action::Move(1)])));
}

#[test]
fn cluster_members() {
    insta::assert_snapshot!(screen(&mut app_after(&[Action::Enter, Action::Move(2)])));
}

#[test]
fn duplicates_with_a_mark() {
    let mut app = app_after(&[
        Action::Show(View::Duplicates),
        Action::Move(1),
        Action::ToggleMark,
    ]);
    insta::assert_snapshot!(screen(&mut app));
}

/// The issue-27 report: "verified 154" was cut to "verified 1" in a 160-column terminal.
#[test]
fn duplicates_keep_three_digit_inlier_counts_whole() {
    let mut snapshot = fixture::small();
    let counts = [154, 1203];
    for (group, inliers) in snapshot.dups.iter_mut().zip(counts) {
        let member = group.members.first_mut().expect("a member");
        member.evidence = Evidence::Verified;
        member.inliers = inliers;
    }
    let mut app = App::new(snapshot, Previews::disabled());
    app.apply(Action::Show(View::Duplicates));
    let mut terminal = Terminal::new(TestBackend::new(160, 30)).expect("test backend");
    terminal.draw(|f| render::draw(f, &mut app)).expect("draw");
    let screen = terminal.backend().to_string();
    assert!(screen.contains("verified 154"), "{screen}");
    assert!(screen.contains("verified 1203"), "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn search_results() {
    let mut app = app_after(&[Action::Show(View::Search)]);
    app.receive(Reply::Found(fixture::search()));
    insta::assert_snapshot!(screen(&mut app));
}

#[test]
fn search_before_any_query() {
    insta::assert_snapshot!(screen(&mut app_after(&[Action::Show(View::Search)])));
}

#[test]
fn search_path_prompt() {
    let mut actions = vec![Action::SearchPathPrompt];
    actions.extend("/photos/new.jpg".chars().map(Action::Input));
    insta::assert_snapshot!(screen(&mut app_after(&actions)));
}

#[test]
fn failures() {
    insta::assert_snapshot!(screen(&mut app_after(&[Action::Show(View::Failures)])));
}

#[test]
fn training() {
    insta::assert_snapshot!(screen(&mut app_after(&[Action::Show(View::Training)])));
}

#[test]
fn help_overlay() {
    insta::assert_snapshot!(screen(&mut app_after(&[Action::Help])));
}

#[test]
fn trash_confirmation() {
    let mut app = app_after(&[
        Action::Show(View::Duplicates),
        Action::MarkAllButKeepers,
        Action::Trash,
    ]);
    insta::assert_snapshot!(screen(&mut app));
}

#[test]
fn filter_being_typed() {
    let mut actions = vec![Action::Show(View::Duplicates), Action::FilterPrompt];
    actions.extend("IMG_102".chars().map(Action::Input));
    insta::assert_snapshot!(screen(&mut app_after(&actions)));
}

#[test]
fn loading_with_the_spinner() {
    let mut app = App::new(Snapshot::default(), Previews::disabled());
    app.start();
    app.receive(Reply::Progress("clustering".into()));
    insta::assert_snapshot!(screen(&mut app));
}

#[test]
fn attention_map_without_previews() {
    let mut app = app_after(&[Action::Enter, Action::Move(2), Action::ToggleAttention]);
    let id = app.selected_photo().expect("a photo selected");
    app.receive(Reply::Attention(id, Ok(Box::new(fixture::attention()))));
    insta::assert_snapshot!(screen(&mut app));
}
