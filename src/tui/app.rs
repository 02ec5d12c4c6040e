//! The whole state of the UI and the one place it changes ([`App::apply`] for actions,
//! [`App::receive`] for the job thread's replies).

use std::collections::BTreeSet;
use std::path::PathBuf;

use dino_curate_index::{PhotoId, PhotoRecord};

use super::action::{Action, Effect, Query};
use super::job::{photos, AttentionMap, Found, Reply, Request, Snapshot};
use super::list::Cursor;
use super::thumbs::{Preview, Previews};
use crate::curate::keeper::KeepRule;

/// The five views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// Visual themes.
    Clusters,
    /// Near-duplicate groups.
    Duplicates,
    /// Photos like a query.
    Search,
    /// Files the index could not read.
    Failures,
    /// The training run's curves.
    Training,
}

impl View {
    /// In tab order.
    pub const ALL: [View; 5] = [
        View::Clusters,
        View::Duplicates,
        View::Search,
        View::Failures,
        View::Training,
    ];

    /// Tab title.
    pub fn title(self) -> &'static str {
        match self {
            View::Clusters => "Clusters",
            View::Duplicates => "Duplicates",
            View::Search => "Search",
            View::Failures => "Failures",
            View::Training => "Training",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn step(self, by: isize) -> View {
        let n = Self::ALL.len() as isize;
        Self::ALL[(self.index() as isize + by).rem_euclid(n) as usize]
    }
}

/// What keys currently do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Browsing.
    Normal,
    /// The key help is shown.
    Help,
    /// Typing the path filter (applied as it is typed).
    Filter,
    /// Typing the path of an image to search by.
    SearchPath(String),
    /// Asking whether to move these files to the trash.
    Confirm(Vec<PathBuf>),
}

/// One line of a list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Row {
    /// A cluster, by index.
    Cluster(usize),
    /// A photo; `score` is its similarity (to the keeper, or to the query); `group` its
    /// duplicate group; `keeper` whether it is the group's keeper.
    Photo {
        /// The photo.
        id: PhotoId,
        /// Similarity, when it has one.
        score: Option<f32>,
        /// Duplicate group index.
        group: Option<usize>,
        /// Whether it is its group's keeper.
        keeper: bool,
    },
    /// A failure, by index.
    Failure(usize),
}

/// The selected photo's attention map, shown in the preview pane instead of its thumbnail.
#[derive(Debug)]
pub enum Attention {
    /// Asked for, not there yet.
    Computing(PhotoId),
    /// The map, and its image when previews are on.
    Ready(PhotoId, Box<AttentionMap>, Option<Preview>),
}

impl Attention {
    /// The photo it belongs to.
    pub fn photo(&self) -> PhotoId {
        match self {
            Attention::Computing(id) | Attention::Ready(id, ..) => *id,
        }
    }
}

/// The rule after `rule` in the cycle auto → largest → sharpest → newest → oldest.
pub fn next_rule(rule: &KeepRule) -> KeepRule {
    match rule {
        KeepRule::Auto => KeepRule::Largest,
        KeepRule::Largest => KeepRule::Sharpest,
        KeepRule::Sharpest => KeepRule::Newest,
        KeepRule::Newest => KeepRule::Oldest,
        KeepRule::Oldest | KeepRule::PathPrefix(_) => KeepRule::Auto,
    }
}

/// "original copy, sharpest burst shot", "largest", "newest", "first under /x".
/// "2 copies and 3 similar photos", "5 photos like this one".
fn found_summary(found: &Found) -> String {
    let copies = found.hits.iter().filter(|h| h.copy.is_some()).count();
    let similar = found.hits.len() - copies;
    match copies {
        0 => format!("{} like this one", photos(similar)),
        1 => format!("1 copy and {similar} similar"),
        _ => format!("{copies} copies and {similar} similar"),
    }
}

pub fn rule_name(rule: &KeepRule) -> String {
    match rule {
        KeepRule::Auto => "original copy, sharpest burst shot".into(),
        KeepRule::Largest => "largest".into(),
        KeepRule::Sharpest => "sharpest".into(),
        KeepRule::Newest => "newest".into(),
        KeepRule::Oldest => "oldest".into(),
        KeepRule::PathPrefix(p) => format!("first under {}", p.display()),
    }
}

/// The UI state.
#[derive(Debug)]
pub struct App {
    /// The view on screen.
    pub view: View,
    /// What keys do now.
    pub mode: Mode,
    /// What the job thread computed last.
    pub data: Snapshot,
    /// The last search.
    pub search: Option<Found>,
    /// The cluster drilled into, and the cluster list's cursor to go back to.
    pub drill: Option<(usize, Cursor)>,
    /// Path filter (substring), applied to every list.
    pub filter: String,
    /// Photos marked for the trash.
    pub marks: BTreeSet<PhotoId>,
    /// Rows of the list on screen.
    pub rows: Vec<Row>,
    /// One cursor per view.
    pub cursors: [Cursor; 5],
    /// Last message for the status line.
    pub status: String,
    /// Requests sent and not yet answered, and the last progress message.
    pub busy: (usize, String),
    /// Frames drawn while busy (the spinner).
    pub tick: usize,
    /// Thumbnails.
    pub previews: Previews,
    /// The attention map shown for the selected photo (dropped when the selection moves).
    pub attention: Option<Attention>,
    /// Width of the list on screen, as last drawn (mouse clicks right of it are not rows).
    pub list_width: u16,
}

impl App {
    /// A UI over `data`, with `previews`.
    pub fn new(data: Snapshot, previews: Previews) -> Self {
        let mut app = Self {
            view: View::Clusters,
            mode: Mode::Normal,
            data,
            search: None,
            drill: None,
            filter: String::new(),
            marks: BTreeSet::new(),
            rows: Vec::new(),
            cursors: [Cursor::default(); 5],
            status: String::new(),
            busy: (0, String::new()),
            tick: 0,
            previews,
            attention: None,
            list_width: 0,
        };
        app.refresh_rows();
        app
    }

    /// The record of a photo, if the index still has it.
    pub fn record(&self, id: PhotoId) -> Option<&PhotoRecord> {
        self.data.records.get(&id)
    }

    /// The cursor of the view on screen.
    pub fn cursor(&mut self) -> &mut Cursor {
        &mut self.cursors[self.view.index()]
    }

    /// The selected row, if the list has rows.
    pub fn selected_row(&self) -> Option<Row> {
        self.rows
            .get(self.cursors[self.view.index()].selected)
            .copied()
    }

    /// The selected photo (a cluster's representative for a cluster row).
    pub fn selected_photo(&self) -> Option<PhotoId> {
        match self.selected_row()? {
            Row::Cluster(i) => self.data.clusters.get(i).map(|c| c.representative),
            Row::Photo { id, .. } => Some(id),
            Row::Failure(_) => None,
        }
    }

    /// Sends `request` and counts it as pending.
    fn job(&mut self, request: Request) -> Vec<Effect> {
        self.busy.0 += 1;
        vec![Effect::Job(request)]
    }

    /// The request that fills the UI when it starts.
    pub fn start(&mut self) -> Vec<Effect> {
        self.job(Request::Load)
    }

    /// Applies one action.
    pub fn apply(&mut self, action: Action) -> Vec<Effect> {
        let effects = match &self.mode {
            Mode::Normal => self.apply_normal(action),
            Mode::Help => self.apply_help(action),
            Mode::Filter => self.apply_filter(action),
            Mode::SearchPath(_) => self.apply_search_path(action),
            Mode::Confirm(_) => self.apply_confirm(action),
        };
        self.forget_attention_elsewhere();
        effects
    }

    fn apply_normal(&mut self, action: Action) -> Vec<Effect> {
        let len = self.rows.len();
        match action {
            Action::Move(d) => self.cursor().move_by(d, len),
            Action::Top => self.cursor().selected = 0,
            Action::Bottom => self.cursor().selected = len.saturating_sub(1),
            Action::Click(row) => {
                let c = self.cursor();
                c.selected = (c.offset + usize::from(row)).min(len.saturating_sub(1));
            }
            Action::Enter => self.drill_in(),
            Action::Back => self.back(),
            Action::NextView => self.show(self.view.step(1)),
            Action::PrevView => self.show(self.view.step(-1)),
            Action::Show(v) => self.show(v),
            Action::ToggleMark => self.toggle_mark(),
            Action::MarkAllButKeepers => self.mark_all_but_keepers(),
            Action::ClearMarks => self.marks.clear(),
            Action::CycleKeep => return self.job(Request::Regroup(next_rule(&self.data.keep))),
            Action::Trash => self.ask_trash(),
            Action::Undo => return self.job(Request::Undo),
            Action::Open => return self.open(),
            Action::SearchSelected => return self.search_selected(),
            Action::ToggleAttention => return self.toggle_attention(),
            Action::SearchPathPrompt => self.mode = Mode::SearchPath(String::new()),
            Action::FilterPrompt => self.mode = Mode::Filter,
            Action::Help => self.mode = Mode::Help,
            Action::Quit => return vec![Effect::Quit],
            Action::Input(_) | Action::Backspace | Action::Confirm => {}
        }
        Vec::new()
    }

    fn apply_help(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Quit => return vec![Effect::Quit],
            Action::Help | Action::Back | Action::Confirm => self.mode = Mode::Normal,
            _ => {}
        }
        Vec::new()
    }

    fn apply_filter(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Input(c) => self.filter.push(c),
            Action::Backspace => {
                self.filter.pop();
            }
            Action::Confirm => self.mode = Mode::Normal,
            Action::Back => {
                self.filter.clear();
                self.mode = Mode::Normal;
            }
            _ => return Vec::new(),
        }
        self.refresh_rows();
        Vec::new()
    }

    fn apply_search_path(&mut self, action: Action) -> Vec<Effect> {
        let Mode::SearchPath(text) = &mut self.mode else {
            return Vec::new();
        };
        match action {
            Action::Input(c) => text.push(c),
            Action::Backspace => {
                text.pop();
            }
            Action::Back => self.mode = Mode::Normal,
            Action::Confirm => {
                let path = PathBuf::from(text.trim());
                self.mode = Mode::Normal;
                if !path.as_os_str().is_empty() {
                    self.status = format!("searching like {}", path.display());
                    self.show(View::Search);
                    return self.job(Request::Search(Query::Path(path)));
                }
            }
            _ => {}
        }
        Vec::new()
    }

    fn apply_confirm(&mut self, action: Action) -> Vec<Effect> {
        let Mode::Confirm(files) = &self.mode else {
            return Vec::new();
        };
        match action {
            Action::Confirm | Action::Input('y') => {
                let files = files.clone();
                self.mode = Mode::Normal;
                self.marks.clear();
                self.job(Request::Trash(files))
            }
            Action::Back | Action::Input('n') | Action::Quit => {
                self.mode = Mode::Normal;
                self.status = "nothing moved".into();
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn show(&mut self, view: View) {
        if view != self.view {
            self.view = view;
            self.refresh_rows();
        }
    }

    fn drill_in(&mut self) {
        if let (View::Clusters, None, Some(Row::Cluster(i))) =
            (self.view, self.drill, self.selected_row())
        {
            self.drill = Some((i, *self.cursor()));
            *self.cursor() = Cursor::default();
            self.refresh_rows();
        }
    }

    fn back(&mut self) {
        if self.attention.take().is_some() {
            return;
        }
        if self.view == View::Clusters {
            if let Some((_, parent)) = self.drill.take() {
                *self.cursor() = parent;
                self.refresh_rows();
                return;
            }
        }
        if !self.filter.is_empty() {
            self.filter.clear();
            self.refresh_rows();
        }
    }

    fn toggle_mark(&mut self) {
        let Some(Row::Photo { id, .. }) = self.selected_row() else {
            self.status = "space marks photos: Enter opens the cluster".into();
            return;
        };
        if !self.marks.remove(&id) {
            self.marks.insert(id);
        }
        let len = self.rows.len();
        self.cursor().move_by(1, len);
    }

    fn mark_all_but_keepers(&mut self) {
        let members = self.data.dups.iter().flat_map(|g| g.members.iter());
        self.marks.extend(members.map(|m| m.id));
        self.status = format!(
            "marked {}: every group keeps its keeper",
            photos(self.marks.len())
        );
    }

    fn ask_trash(&mut self) {
        let files: Vec<PathBuf> = self
            .marks
            .iter()
            .filter_map(|&id| self.record(id).map(|r| r.path.clone()))
            .collect();
        if files.is_empty() {
            self.status = "nothing marked: space marks a photo".into();
        } else {
            self.mode = Mode::Confirm(files);
        }
    }

    fn open(&mut self) -> Vec<Effect> {
        match self.selected_photo().and_then(|id| self.record(id)) {
            Some(r) => vec![Effect::Open(r.path.clone())],
            None => Vec::new(),
        }
    }

    fn search_selected(&mut self) -> Vec<Effect> {
        let Some(id) = self.selected_photo() else {
            return Vec::new();
        };
        self.show(View::Search);
        self.job(Request::Search(Query::Photo(id)))
    }

    /// Asks for the selected photo's attention map, or drops the one shown.
    fn toggle_attention(&mut self) -> Vec<Effect> {
        if self.attention.take().is_some() {
            return Vec::new();
        }
        let Some(id) = self.selected_photo() else {
            self.status = "v shows the attention map of a photo: select one".into();
            return Vec::new();
        };
        self.attention = Some(Attention::Computing(id));
        self.job(Request::Attention(id))
    }

    /// Shows an attention map if it is still waited for (the selection has not moved).
    fn attention_done(&mut self, id: PhotoId, map: Result<Box<AttentionMap>, String>) {
        let waited = matches!(self.attention, Some(Attention::Computing(w)) if w == id);
        match map {
            Err(why) => {
                if waited {
                    self.attention = None;
                }
                self.status = format!("no attention map: {why}");
            }
            Ok(map) if waited => {
                self.status = format!(
                    "attention map ready: {}×{} patches (v or Esc: the photo again)",
                    map.rows, map.cols
                );
                let preview = self.previews.of_image(map.overlay.clone());
                self.attention = Some(Attention::Ready(id, map, preview));
            }
            Ok(_) => {}
        }
    }

    /// Drops the attention map when the selected photo is no longer its photo.
    fn forget_attention_elsewhere(&mut self) {
        let selected = self.selected_photo();
        if self
            .attention
            .as_ref()
            .is_some_and(|a| Some(a.photo()) != selected)
        {
            self.attention = None;
        }
    }

    /// Takes in a reply of the job thread.
    pub fn receive(&mut self, reply: Reply) {
        if reply.is_final() {
            self.busy.0 = self.busy.0.saturating_sub(1);
        }
        self.take_reply(reply);
        self.forget_attention_elsewhere();
    }

    fn take_reply(&mut self, reply: Reply) {
        match reply {
            Reply::Progress(what) => self.busy.1 = what,
            Reply::Loaded(snapshot, note) => {
                self.data = *snapshot;
                self.marks.retain(|id| self.data.records.contains_key(id));
                if let Some((i, _)) = self.drill {
                    if i >= self.data.clusters.len() {
                        self.drill = None;
                    }
                }
                self.status = note.unwrap_or_else(|| self.loaded_summary());
                self.refresh_rows();
            }
            Reply::Found(found) => {
                self.status = found_summary(&found);
                self.search = Some(found);
                self.cursors[View::Search.index()] = Cursor::default();
                self.refresh_rows();
            }
            Reply::Regrouped(dups, keep) => {
                self.data.dups = dups;
                let keepers: BTreeSet<PhotoId> = self.data.dups.iter().map(|g| g.keep).collect();
                self.marks.retain(|id| !keepers.contains(id));
                self.status = format!("every group keeps its {}", rule_name(&keep));
                self.data.keep = keep;
                self.refresh_rows();
            }
            Reply::Attention(id, map) => self.attention_done(id, map),
            Reply::Failed(why) => self.status = format!("error: {why}"),
        }
    }

    fn loaded_summary(&self) -> String {
        match &self.data.empty_reason {
            Some(why) => why.clone(),
            None => format!(
                "{}, {} clusters, {} duplicate groups",
                photos(self.data.records.len()),
                self.data.clusters.len(),
                self.data.dups.len()
            ),
        }
    }

    fn matches(&self, id: PhotoId) -> bool {
        self.filter.is_empty()
            || self
                .record(id)
                .is_some_and(|r| r.path.to_string_lossy().contains(&self.filter))
    }

    /// Rebuilds the rows of the view on screen (after data, view, drill or filter changed).
    pub fn refresh_rows(&mut self) {
        self.rows = match self.view {
            View::Clusters => self.cluster_rows(),
            View::Duplicates => self.dup_rows(),
            View::Search => self.search_rows(),
            View::Failures => self.failure_rows(),
            View::Training => Vec::new(),
        };
        let len = self.rows.len();
        self.cursor().clamp(len);
    }

    fn photo_row(id: PhotoId, score: Option<f32>) -> Row {
        Row::Photo {
            id,
            score,
            group: None,
            keeper: false,
        }
    }

    fn cluster_rows(&self) -> Vec<Row> {
        if let Some((i, _)) = self.drill {
            let members = self.data.clusters.get(i).map(|c| c.members.as_slice());
            return members
                .unwrap_or_default()
                .iter()
                .filter(|&&id| self.matches(id))
                .map(|&id| Self::photo_row(id, None))
                .collect();
        }
        (0..self.data.clusters.len())
            .filter(|&i| {
                self.filter.is_empty()
                    || self.data.clusters[i]
                        .members
                        .iter()
                        .any(|&id| self.matches(id))
            })
            .map(Row::Cluster)
            .collect()
    }

    fn dup_rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (g, group) in self.data.dups.iter().enumerate() {
            let ids = std::iter::once(group.keep).chain(group.members.iter().map(|m| m.id));
            if !self.filter.is_empty() && !ids.clone().any(|id| self.matches(id)) {
                continue;
            }
            rows.push(Row::Photo {
                id: group.keep,
                score: None,
                group: Some(g),
                keeper: true,
            });
            rows.extend(group.members.iter().map(|m| Row::Photo {
                id: m.id,
                score: Some(m.similarity),
                group: Some(g),
                keeper: false,
            }));
        }
        rows
    }

    fn search_rows(&self) -> Vec<Row> {
        let hits = self.search.as_ref().map(|f| f.hits.as_slice());
        hits.unwrap_or_default()
            .iter()
            .filter(|h| self.matches(h.id))
            .map(|h| Self::photo_row(h.id, Some(h.similarity)))
            .collect()
    }

    fn failure_rows(&self) -> Vec<Row> {
        let f = &self.filter;
        (0..self.data.failures.len())
            .filter(|&i| f.is_empty() || self.data.failures[i].0.to_string_lossy().contains(f))
            .map(Row::Failure)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixture;

    fn app() -> App {
        App::new(fixture::small(), Previews::disabled())
    }

    #[test]
    fn tab_and_numbers_switch_views() {
        let mut a = app();
        a.apply(Action::NextView);
        assert_eq!(a.view, View::Duplicates);
        a.apply(Action::PrevView);
        a.apply(Action::PrevView);
        assert_eq!(a.view, View::Training);
        a.apply(Action::Show(View::Failures));
        assert_eq!(a.rows, vec![Row::Failure(0), Row::Failure(1)]);
    }

    #[test]
    fn enter_drills_into_a_cluster_and_esc_comes_back() {
        let mut a = app();
        a.apply(Action::Move(2));
        a.apply(Action::Enter);
        assert_eq!(a.drill.map(|d| d.0), Some(2));
        assert_eq!(a.rows.len(), a.data.clusters[2].members.len());
        a.apply(Action::Move(3));
        a.apply(Action::Back);
        assert_eq!(a.drill, None);
        assert_eq!(a.cursors[0].selected, 2, "back where it was");
    }

    #[test]
    fn mark_then_trash_asks_then_sends_the_files() {
        let mut a = app();
        a.apply(Action::Show(View::Duplicates));
        a.apply(Action::Move(1));
        a.apply(Action::ToggleMark);
        assert_eq!(a.marks.len(), 1);
        assert_eq!(a.cursors[1].selected, 2, "space moves on");
        assert!(a.apply(Action::Trash).is_empty());
        let Mode::Confirm(files) = a.mode.clone() else {
            panic!("no confirmation asked");
        };
        let effects = a.apply(Action::Confirm);
        assert_eq!(effects, vec![Effect::Job(Request::Trash(files))]);
        assert_eq!(a.mode, Mode::Normal);
        assert!(a.marks.is_empty());
        assert_eq!(a.busy.0, 1);
    }

    #[test]
    fn the_confirmation_can_be_refused() {
        let mut a = app();
        a.apply(Action::Show(View::Duplicates));
        a.apply(Action::ToggleMark);
        a.apply(Action::Trash);
        assert!(a.apply(Action::Input('n')).is_empty());
        assert_eq!(a.mode, Mode::Normal);
        assert_eq!(a.marks.len(), 1, "marks kept");
    }

    #[test]
    fn r_asks_for_the_next_keeper_rule_and_takes_in_the_groups() {
        let mut a = app();
        a.apply(Action::Show(View::Duplicates));
        let next = Request::Regroup(KeepRule::Sharpest);
        assert_eq!(a.apply(Action::CycleKeep), vec![Effect::Job(next)]);
        a.apply(Action::MarkAllButKeepers);
        let mut dups = a.data.dups.clone();
        let old_keeper = dups[0].keep;
        let mut moved = dups[0].members.remove(0);
        let new_keeper = std::mem::replace(&mut moved.id, old_keeper);
        dups[0].members.push(moved);
        dups[0].keep = new_keeper;
        a.receive(Reply::Regrouped(dups, KeepRule::Sharpest));
        assert_eq!(a.data.keep, KeepRule::Sharpest);
        assert!(!a.marks.contains(&new_keeper), "a keeper is never marked");
        assert_eq!(a.rows.len(), 6);
        assert_eq!(next_rule(&KeepRule::Oldest), KeepRule::Auto);
    }

    #[test]
    fn space_on_a_cluster_marks_nothing() {
        let mut a = app();
        a.apply(Action::ToggleMark);
        assert!(a.marks.is_empty());
        a.apply(Action::Enter);
        a.apply(Action::ToggleMark);
        assert_eq!(a.marks.len(), 1);
    }

    #[test]
    fn trash_without_marks_explains() {
        let mut a = app();
        a.apply(Action::Trash);
        assert_eq!(a.mode, Mode::Normal);
        assert!(a.status.contains("nothing marked"));
    }

    #[test]
    fn bulk_marking_spares_the_keepers() {
        let mut a = app();
        a.apply(Action::MarkAllButKeepers);
        let keepers: Vec<PhotoId> = a.data.dups.iter().map(|g| g.keep).collect();
        assert_eq!(a.marks.len(), 2 * keepers.len());
        assert!(keepers.iter().all(|k| !a.marks.contains(k)));
        a.apply(Action::ClearMarks);
        assert!(a.marks.is_empty());
    }

    #[test]
    fn filter_narrows_every_list_and_esc_clears_it() {
        let mut a = app();
        a.apply(Action::Show(View::Duplicates));
        let all = a.rows.len();
        a.apply(Action::FilterPrompt);
        for c in "IMG_1021".chars() {
            a.apply(Action::Input(c));
        }
        assert_eq!(a.rows.len(), 3, "one group of three");
        assert!(a.rows.len() < all);
        a.apply(Action::Confirm);
        assert_eq!(a.filter, "IMG_1021");
        a.apply(Action::Back);
        assert_eq!(a.rows.len(), all);
    }

    #[test]
    fn search_starts_from_the_selected_photo() {
        let mut a = app();
        a.apply(Action::Show(View::Duplicates));
        a.apply(Action::Move(1));
        let effects = a.apply(Action::SearchSelected);
        assert_eq!(effects, vec![Effect::Job(Request::Search(Query::Photo(1)))]);
        assert_eq!(a.view, View::Search);
        a.receive(Reply::Found(fixture::search()));
        assert_eq!(a.rows.len(), 4);
        assert_eq!(a.busy.0, 0);
    }

    #[test]
    fn search_by_typed_path() {
        let mut a = app();
        a.apply(Action::SearchPathPrompt);
        for c in "/tmp/x.jpg".chars() {
            a.apply(Action::Input(c));
        }
        let effects = a.apply(Action::Confirm);
        let q = Query::Path(PathBuf::from("/tmp/x.jpg"));
        assert_eq!(effects, vec![Effect::Job(Request::Search(q))]);
    }

    #[test]
    fn undo_open_help_and_quit() {
        let mut a = app();
        assert_eq!(a.apply(Action::Undo), vec![Effect::Job(Request::Undo)]);
        let path = a.record(0).map(|r| r.path.clone()).unwrap_or_default();
        assert_eq!(a.apply(Action::Open), vec![Effect::Open(path)]);
        a.apply(Action::Help);
        assert_eq!(a.mode, Mode::Help);
        a.apply(Action::Move(1));
        assert_eq!(a.cursors[0].selected, 0, "help swallows moves");
        a.apply(Action::Back);
        assert_eq!(a.apply(Action::Quit), vec![Effect::Quit]);
    }

    /// The app with the attention map of the second member of cluster 0 asked for.
    fn asked_for_attention() -> (App, PhotoId) {
        let mut a = app();
        a.apply(Action::Enter);
        a.apply(Action::Move(1));
        let id = a.selected_photo().expect("a photo selected");
        let effects = a.apply(Action::ToggleAttention);
        assert_eq!(effects, vec![Effect::Job(Request::Attention(id))]);
        (a, id)
    }

    fn map() -> Result<Box<AttentionMap>, String> {
        Ok(Box::new(fixture::attention()))
    }

    #[test]
    fn v_shows_the_attention_map_until_the_selection_moves() {
        let (mut a, id) = asked_for_attention();
        assert!(matches!(a.attention, Some(Attention::Computing(i)) if i == id));
        a.receive(Reply::Attention(id, map()));
        assert_eq!(a.busy.0, 0);
        assert!(
            matches!(&a.attention, Some(Attention::Ready(i, m, None)) if *i == id && m.heads == 3),
            "ready, without an image when previews are off"
        );
        assert!(a.status.contains("30×40 patches"), "{}", a.status);
        a.apply(Action::Move(1));
        assert!(a.attention.is_none(), "another photo: its thumbnail again");
        a.apply(Action::Move(-1));
        assert!(a.attention.is_none(), "not recomputed by coming back");
    }

    #[test]
    fn a_map_that_comes_after_the_selection_moved_is_not_shown() {
        let (mut a, id) = asked_for_attention();
        a.apply(Action::Move(1));
        a.receive(Reply::Attention(id, map()));
        assert!(a.attention.is_none());
        assert_eq!(a.busy.0, 0);
    }

    #[test]
    fn v_or_esc_go_back_to_the_thumbnail() {
        let (mut a, id) = asked_for_attention();
        a.receive(Reply::Attention(id, map()));
        assert!(a.apply(Action::ToggleAttention).is_empty());
        assert!(a.attention.is_none());
        a.apply(Action::ToggleAttention);
        a.receive(Reply::Attention(id, map()));
        a.apply(Action::Back);
        assert!(a.attention.is_none());
        assert!(a.drill.is_some(), "Esc closed the map only");
    }

    #[test]
    fn attention_without_a_model_or_a_photo_explains() {
        let (mut a, id) = asked_for_attention();
        a.receive(Reply::Attention(id, Err("no model here".into())));
        assert!(a.attention.is_none());
        assert_eq!(a.status, "no attention map: no model here");
        a.apply(Action::Show(View::Training));
        assert!(a.apply(Action::ToggleAttention).is_empty());
        assert!(a.status.contains("select one"), "{}", a.status);
    }

    #[test]
    fn a_reload_forgets_marks_of_photos_gone() {
        let mut a = app();
        a.apply(Action::Show(View::Duplicates));
        a.apply(Action::MarkAllButKeepers);
        let mut data = fixture::small();
        data.records.remove(&1);
        a.receive(Reply::Loaded(Box::new(data), Some("moved 1 photo".into())));
        assert!(!a.marks.contains(&1));
        assert_eq!(a.status, "moved 1 photo");
    }
}
