//! The dashboard's state: which pipeline it watches, the latest counters, rates and
//! histories derived from successive snapshots, recent events, and what the operator
//! selected. No I/O here: the loop in `terminal.rs` feeds it snapshots and keys, and
//! carries out the [`Action`]s it returns.

use crate::model::{Command, LiveFrame, Snapshot, Source, Stage, Worker};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Margin, Rect};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Rates are counted over this window.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// One throughput sample per second, one minute of them.
pub const HISTORY_SECONDS: usize = 60;
const MAX_EVENTS: usize = 200;
/// The live view reads a frame at most this often.
pub const LIVE_PERIOD: Duration = Duration::from_millis(250);

/// What the screen shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    /// No pipeline runs on this host (or the watched one is gone and no other runs).
    Waiting,
    /// Several run and none is chosen.
    Choose {
        names: Vec<String>,
        selected: usize,
    },
    Overview,
}

/// What the operator asked for that the loop must carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Quit,
    Send(Command),
}

/// A line of the events pane.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Wall-clock time, `HH:MM:SS` UTC.
    pub at: String,
    pub text: String,
    /// Loss, a failure or an error: shown in red.
    pub alarm: bool,
}

/// Rates of one worker over the last [`RATE_WINDOW`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub fps_in: f64,
    pub fps_out: f64,
    pub mb_in: f64,
    pub mb_out: f64,
}

/// Counters of one worker at one instant, for rates.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    frames_in: u64,
    frames_out: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Sample {
    fn of(worker: &Worker, at: Instant) -> Sample {
        Sample {
            at,
            frames_in: worker.frames_in,
            frames_out: worker.frames_out,
            bytes_in: worker.bytes_in,
            bytes_out: worker.bytes_out,
        }
    }
}

/// The live view: which ring, and the last frame read from it.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub ring: usize,
    pub frame: Option<LiveFrame>,
    last_read: Option<Instant>,
}

pub struct App {
    pub screen: Screen,
    /// The pipeline watched (the one named on the command line, or chosen).
    pub pipeline: Option<String>,
    pub snapshot: Option<Snapshot>,
    /// Why the watched pipeline cannot be read right now (gone, incompatible).
    pub problem: Option<String>,
    /// Per worker, by (stage index, worker index).
    rates: HashMap<(usize, usize), Rates>,
    samples: HashMap<(usize, usize), VecDeque<Sample>>,
    /// Per stage: frames/s, one value per second, oldest first.
    pub history: Vec<VecDeque<u64>>,
    /// Loss counters at the last one-second tick, per worker: missed, dropped, errors.
    ticked: HashMap<(usize, usize), (u64, u64, u64)>,
    last_second: Option<Instant>,
    /// Newest first.
    pub events: VecDeque<Event>,
    /// Index into [`App::rows`].
    pub selected: usize,
    pub detail: bool,
    pub live: Option<Live>,
    pub confirm_stop: bool,
    pub frozen: bool,
    /// The list of keys is shown over the screen; any key closes it.
    pub help: bool,
    /// The reply to the last command, shown on the help line for a while.
    pub message: Option<(String, Instant)>,
    /// The terminal's size at the last draw: the live view samples frames to fit it.
    pub area: Rect,
}

impl App {
    /// A dashboard that watches `pipeline` (`None`: the only one running, or a choice).
    pub fn new(pipeline: Option<String>) -> App {
        App {
            screen: Screen::Waiting,
            pipeline,
            snapshot: None,
            problem: None,
            rates: HashMap::new(),
            samples: HashMap::new(),
            history: Vec::new(),
            ticked: HashMap::new(),
            last_second: None,
            events: VecDeque::new(),
            selected: 0,
            detail: false,
            live: None,
            confirm_stop: false,
            frozen: false,
            help: false,
            message: None,
            area: Rect::default(),
        }
    }

    /// Every worker row of the overview: (stage index, worker index).
    pub fn rows(&self) -> Vec<(usize, usize)> {
        self.snapshot.as_ref().map_or_else(Vec::new, |s| {
            s.stages
                .iter()
                .enumerate()
                .flat_map(|(i, stage)| (0..stage.workers.len()).map(move |w| (i, w)))
                .collect()
        })
    }

    pub fn rates(&self, stage: usize, worker: usize) -> Rates {
        self.rates
            .get(&(stage, worker))
            .copied()
            .unwrap_or_default()
    }

    /// A stage's throughput: frames/s it takes in (what it publishes, for the source,
    /// which is stage 0).
    pub fn stage_fps(&self, stage: usize) -> f64 {
        let workers = self
            .snapshot
            .as_ref()
            .and_then(|s| s.stages.get(stage))
            .map_or(0, |s| s.workers.len());
        (0..workers)
            .map(|w| {
                let r = self.rates(stage, w);
                if stage == 0 {
                    r.fps_out
                } else {
                    r.fps_in
                }
            })
            .sum()
    }

    /// One refresh: finds the pipeline to watch, reads its counters and, with the live
    /// view open, the newest frame when one is due. Does nothing while frozen.
    pub fn refresh(&mut self, source: &mut dyn Source, now: Instant) {
        if self.frozen {
            return;
        }
        let name = match (&self.pipeline, &self.screen) {
            (_, Screen::Choose { .. }) => {
                self.choose_from(source.pipelines());
                return;
            }
            (Some(name), _) => name.clone(),
            (None, _) => {
                self.choose_from(source.pipelines());
                match &self.pipeline {
                    Some(name) => name.clone(),
                    None => return,
                }
            }
        };
        match source.snapshot(&name) {
            Ok(snapshot) => {
                self.problem = None;
                self.screen = Screen::Overview;
                self.update(snapshot, now);
                self.read_live(source, now);
            }
            Err(reason) => {
                if self.problem.is_none() {
                    self.event(format!("{reason}; waiting for it to start"), true);
                }
                self.problem = Some(reason);
                // Its last counters stay on screen; its rates are no longer true.
                self.rates.clear();
                self.samples.clear();
                if self.snapshot.is_none() {
                    self.screen = Screen::Waiting;
                }
            }
        }
    }

    /// Picks the pipeline to watch from those running: the only one, or a chooser.
    fn choose_from(&mut self, names: Vec<String>) {
        match (names.len(), &mut self.screen) {
            (0, _) => self.screen = Screen::Waiting,
            (1, _) => {
                self.pipeline = Some(names[0].clone());
                self.screen = Screen::Overview;
            }
            (
                _,
                Screen::Choose {
                    names: shown,
                    selected,
                },
            ) => {
                *selected = (*selected).min(names.len() - 1);
                *shown = names;
            }
            _ => self.screen = Screen::Choose { names, selected: 0 },
        }
    }

    /// Takes a new snapshot of the watched pipeline taken at `now`.
    pub fn update(&mut self, snapshot: Snapshot, now: Instant) {
        let new_run = self.snapshot.as_ref().map(|s| s.started_unix_ns);
        match new_run {
            None => self.event(
                format!(
                    "watching pipeline {} (supervisor pid {}, {})",
                    snapshot.pipeline, snapshot.supervisor_pid, snapshot.state
                ),
                false,
            ),
            Some(started) if started != snapshot.started_unix_ns => {
                self.event(
                    format!(
                        "pipeline {} started again (supervisor pid {})",
                        snapshot.pipeline, snapshot.supervisor_pid
                    ),
                    false,
                );
                self.forget_history();
            }
            Some(_) => {
                if let Some(old) = self.snapshot.take() {
                    self.compare(&old, &snapshot);
                }
            }
        }
        if self.history.len() != snapshot.stages.len() {
            self.history = vec![VecDeque::new(); snapshot.stages.len()];
        }
        self.count_rates(&snapshot, now);
        self.snapshot = Some(snapshot);
        let second_due = self
            .last_second
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if second_due {
            self.last_second = Some(now);
            self.each_second();
        }
        let rows = self.rows().len();
        self.selected = self.selected.min(rows.saturating_sub(1));
    }

    fn forget_history(&mut self) {
        self.rates.clear();
        self.samples.clear();
        self.history.clear();
        self.ticked.clear();
        self.last_second = None;
    }

    fn count_rates(&mut self, snapshot: &Snapshot, now: Instant) {
        for (s, stage) in snapshot.stages.iter().enumerate() {
            for (w, worker) in stage.workers.iter().enumerate() {
                let samples = self.samples.entry((s, w)).or_default();
                let sample = Sample::of(worker, now);
                // Counters going back: statistics were reset; rates start over.
                if samples.back().is_some_and(|b| {
                    b.frames_in > sample.frames_in || b.frames_out > sample.frames_out
                }) {
                    samples.clear();
                }
                samples.push_back(sample);
                while samples.len() > 2 && now.duration_since(samples[1].at) >= RATE_WINDOW {
                    samples.pop_front();
                }
                let first = samples[0];
                let seconds = now.duration_since(first.at).as_secs_f64();
                let rate = |a: u64, b: u64| {
                    if seconds > 0.0 {
                        b.saturating_sub(a) as f64 / seconds
                    } else {
                        0.0
                    }
                };
                self.rates.insert(
                    (s, w),
                    Rates {
                        fps_in: rate(first.frames_in, sample.frames_in),
                        fps_out: rate(first.frames_out, sample.frames_out),
                        mb_in: rate(first.bytes_in, sample.bytes_in) / 1e6,
                        mb_out: rate(first.bytes_out, sample.bytes_out) / 1e6,
                    },
                );
            }
        }
    }

    /// Once a second: the throughput histories, and loss counted since the last second.
    fn each_second(&mut self) {
        for s in 0..self.history.len() {
            let fps = self.stage_fps(s);
            let history = &mut self.history[s];
            history.push_back(fps.round() as u64);
            while history.len() > HISTORY_SECONDS {
                history.pop_front();
            }
        }
        let Some(snapshot) = self.snapshot.take() else {
            return;
        };
        for (s, stage) in snapshot.stages.iter().enumerate() {
            for (w, worker) in stage.workers.iter().enumerate() {
                let now = (worker.missed, worker.dropped, worker.errors);
                let before = self.ticked.insert((s, w), now);
                let Some((missed, dropped, errors)) = before else {
                    continue;
                };
                let who = format!("{} w{}", stage.name, worker.worker);
                let mut loss = Vec::new();
                if now.0 > missed {
                    loss.push(format!("missed {} frames", now.0 - missed));
                }
                if now.1 > dropped {
                    loss.push(format!("dropped {} frames", now.1 - dropped));
                }
                if now.2 > errors {
                    let why = worker.last_error.as_deref().unwrap_or("no message");
                    loss.push(format!("{} new errors: {why}", now.2 - errors));
                }
                if !loss.is_empty() {
                    self.event(format!("{who} {}", loss.join(", ")), true);
                }
            }
        }
        self.snapshot = Some(snapshot);
    }

    /// Events from what changed between two snapshots of one run: restarts, state
    /// changes, configuration changes, a reset.
    fn compare(&mut self, old: &Snapshot, new: &Snapshot) {
        if old.state != new.state {
            self.event(format!("pipeline {}", new.state), false);
        }
        // One event per reset, however many refreshes its workers take to follow it.
        if new.resets != old.resets {
            self.event("statistics reset".into(), false);
            self.ticked.clear();
        }
        for (stage, old_stage) in new.stages.iter().zip(&old.stages) {
            if stage.below_rate && !old_stage.below_rate {
                self.event(format!("{} {}", stage.name, rate_text(stage)), true);
            } else if old_stage.below_rate && !stage.below_rate {
                self.event(
                    format!("{} holds the rate asked for again", stage.name),
                    false,
                );
            }
            if stage.args != old_stage.args {
                let from = stage
                    .workers
                    .iter()
                    .filter_map(|w| w.configured_from_frame)
                    .min()
                    .map_or(String::new(), |f| format!(" from frame {f}"));
                self.event(
                    format!("{} configured: {}{from}", stage.name, stage.args),
                    false,
                );
            }
            for (w, was) in stage.workers.iter().zip(&old_stage.workers) {
                let who = format!("{} w{}", stage.name, w.worker);
                let why = w
                    .reason
                    .as_deref()
                    .or(w.last_error.as_deref())
                    .map_or(String::new(), |e| format!(": {e}"));
                if w.restarts > was.restarts {
                    self.event(
                        format!(
                            "{who} restarted (restart {}, pid {} → {}){why}",
                            w.restarts, was.pid, w.pid
                        ),
                        true,
                    );
                }
                if w.stalled && !was.stalled {
                    let why = w.reason.as_deref().unwrap_or("no sign of life");
                    self.event(format!("{who} stalled: {why}"), true);
                } else if was.stalled && !w.stalled && w.pid == was.pid {
                    self.event(format!("{who} shows signs of life again"), false);
                }
                if w.state != was.state {
                    match w.state.as_str() {
                        "failed" => self.event(format!("{who} failed{why}"), true),
                        "error" => self.event(format!("{who} in error{why}"), true),
                        "running" if was.state == "error" => {
                            self.event(format!("{who} recovered"), false)
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn event(&mut self, text: String, alarm: bool) {
        self.events.push_front(Event {
            at: clock(SystemTime::now()),
            text,
            alarm,
        });
        self.events.truncate(MAX_EVENTS);
    }

    /// With the live view open, reads the newest frame of its ring when one is due.
    fn read_live(&mut self, source: &mut dyn Source, now: Instant) {
        let Some(ring) = self.live_ring() else {
            return;
        };
        let (width, height) = self.live_pixels();
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if live
            .last_read
            .is_some_and(|t| now.duration_since(t) < LIVE_PERIOD)
        {
            return;
        }
        live.last_read = Some(now);
        if let Some(frame) = source.newest_frame(&ring, width, height) {
            live.frame = Some(frame);
        }
    }

    /// The segment name of the live view's ring.
    pub fn live_ring(&self) -> Option<String> {
        let live = self.live.as_ref()?;
        let rings = &self.snapshot.as_ref()?.rings;
        rings
            .get(live.ring.min(rings.len().saturating_sub(1)))
            .map(|r| r.name.clone())
    }

    /// Handles a key; returns what the loop must do about it.
    pub fn key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Some(Action::Quit);
        }
        if self.help {
            self.help = false;
            return None;
        }
        if self.confirm_stop {
            self.confirm_stop = false;
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => Some(Action::Send(Command::Stop)),
                _ => {
                    self.say("stop cancelled".into());
                    None
                }
            };
        }
        if key.code == KeyCode::Char('?') {
            self.help = true;
            return None;
        }
        if let Screen::Choose { names, selected } = &mut self.screen {
            match key.code {
                KeyCode::Up => *selected = selected.saturating_sub(1),
                KeyCode::Down => *selected = (*selected + 1).min(names.len().saturating_sub(1)),
                KeyCode::Enter => {
                    // The list is empty until the next refresh has looked for pipelines.
                    if let Some(name) = names.get(*selected) {
                        self.pipeline = Some(name.clone());
                        self.screen = Screen::Overview;
                        self.snapshot = None;
                        self.detail = false;
                        self.forget_history();
                    }
                }
                KeyCode::Char('q') | KeyCode::Esc => return Some(Action::Quit),
                _ => {}
            }
            return None;
        }
        let rows = self.rows().len();
        match key.code {
            KeyCode::Char('q') => return Some(Action::Quit),
            KeyCode::Esc if self.detail => self.detail = false,
            KeyCode::Esc if self.live.is_some() => self.live = None,
            KeyCode::Esc => return Some(Action::Quit),
            KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down => self.selected = (self.selected + 1).min(rows.saturating_sub(1)),
            KeyCode::Enter if rows > 0 => self.detail = !self.detail,
            KeyCode::Char('v') => {
                self.live = match self.live {
                    Some(_) => None,
                    None => Some(Live {
                        ring: self.ring_of_selected(),
                        ..Live::default()
                    }),
                }
            }
            KeyCode::Left | KeyCode::Right => {
                let count = self.snapshot.as_ref().map_or(0, |s| s.rings.len()).max(1);
                if let Some(live) = self.live.as_mut() {
                    live.ring = if key.code == KeyCode::Left {
                        (live.ring + count - 1) % count
                    } else {
                        (live.ring + 1) % count
                    };
                    live.frame = None;
                    live.last_read = None;
                }
            }
            KeyCode::Char('r') => return Some(Action::Send(Command::ResetStats)),
            KeyCode::Char('s') if self.snapshot.is_some() => self.confirm_stop = true,
            KeyCode::Char('p') => self.frozen = !self.frozen,
            KeyCode::Char('c') => {
                // The chooser fills from the next refresh, which a frozen view skips:
                // choosing means watching live again.
                self.frozen = false;
                self.screen = Screen::Choose {
                    names: Vec::new(),
                    selected: 0,
                };
            }
            _ => {}
        }
        None
    }

    /// The ring the selected worker's stage reads (its group's ring), else the first.
    fn ring_of_selected(&self) -> usize {
        let Some(snapshot) = &self.snapshot else {
            return 0;
        };
        let Some(stage) = self
            .rows()
            .get(self.selected)
            .and_then(|&(stage, _)| snapshot.stages.get(stage))
        else {
            return 0;
        };
        snapshot
            .rings
            .iter()
            .position(|r| r.groups.iter().any(|g| group_stage(&g.name) == stage.name))
            .unwrap_or(0)
    }

    /// Every kind of loss, summed: `missed 12 (most: check w0)`, `dropped 3 (most: source
    /// w0)`, frames the producer could not publish, failed workers.
    pub fn loss_summary(&self) -> Vec<String> {
        let Some(s) = &self.snapshot else {
            return Vec::new();
        };
        let mut parts = Vec::new();
        for (what, get) in [
            ("missed", (|w: &Worker| w.missed) as fn(&Worker) -> u64),
            ("dropped", |w| w.dropped),
            ("errors", |w| w.errors),
        ] {
            let mut total = 0;
            let mut worst: Option<(u64, String)> = None;
            for stage in &s.stages {
                for w in &stage.workers {
                    let n = get(w);
                    total += n;
                    if n > 0 && worst.as_ref().is_none_or(|(m, _)| n > *m) {
                        worst = Some((n, format!("{} w{}", stage.name, w.worker)));
                    }
                }
            }
            // A worst worker exists exactly when the total is not zero.
            if let Some((_, who)) = worst {
                parts.push(format!("{what} {total} (most: {who})"));
            }
        }
        let ring_dropped: u64 = s.rings.iter().map(|r| r.dropped).sum();
        if ring_dropped > 0 {
            parts.push(format!("not published (ring full) {ring_dropped}"));
        }
        let failed: Vec<String> = s
            .stages
            .iter()
            .flat_map(|st| {
                st.workers
                    .iter()
                    .filter(|w| w.state == "failed")
                    .map(move |w| match &w.last_exit {
                        Some(how) => format!("{} w{} ({how})", st.name, w.worker),
                        None => format!("{} w{}", st.name, w.worker),
                    })
            })
            .collect();
        if !failed.is_empty() {
            parts.push(format!("FAILED: {}", failed.join(", ")));
        }
        for stage in s.stages.iter().filter(|st| st.below_rate) {
            parts.push(format!(
                "{} {}",
                stage.name.to_uppercase(),
                rate_text(stage)
            ));
        }
        let stalled: Vec<String> = s
            .stages
            .iter()
            .flat_map(|st| {
                st.workers
                    .iter()
                    .filter(|w| w.stalled)
                    .map(move |w| format!("{} w{}", st.name, w.worker))
            })
            .collect();
        if !stalled.is_empty() {
            parts.push(format!("STALLED: {}", stalled.join(", ")));
        }
        parts
    }

    /// Where each panel of the overview goes in `area`. The App owns it, not the
    /// drawing, because the live view samples its frames to the live panel's size.
    pub(crate) fn layout(&self, area: Rect) -> Areas {
        let mut rest = area;
        let help = Rect {
            y: area.bottom().saturating_sub(1),
            height: 1.min(area.height),
            ..area
        };
        rest.height = rest.height.saturating_sub(1);
        let title = take(&mut rest, 1);
        let banner =
            (!self.loss_summary().is_empty() || self.problem.is_some()).then(|| take(&mut rest, 1));
        let rows = self.rows().len() as u16;
        let table_height = (rows + 3).min(rest.height);
        // What is left below the table goes to the live view, or to throughput and rings
        // and the events; a short terminal keeps only the table.
        let below = rest.height - table_height;
        let mut areas = Areas {
            title,
            banner,
            help,
            ..Areas::default()
        };
        if below < 5 {
            areas.table = rest;
            return areas;
        }
        areas.table = take(&mut rest, table_height);
        if self.live.is_some() {
            areas.live = Some(rest);
            return areas;
        }
        let stages = self.snapshot.as_ref().map_or(0, |s| s.stages.len()) as u16;
        let ring_lines = self.snapshot.as_ref().map_or(0, Snapshot::ring_lines) as u16;
        let middle =
            (stages.max(ring_lines) + 2).min(rest.height.saturating_sub(3).max(rest.height / 2));
        let middle = take(&mut rest, middle);
        let [left, right] = middle.layout(&Layout::horizontal([
            Constraint::Percentage(50),
            Constraint::Percentage(50),
        ]));
        areas.throughput = Some(left);
        areas.rings = Some(right);
        areas.events = (rest.height >= 3).then_some(rest);
        areas
    }

    /// How many pixels the live view shows in a terminal of [`App::area`]: a column
    /// each, two rows per line (half blocks), inside the panel's border.
    pub fn live_pixels(&self) -> (usize, usize) {
        let live = self.layout(self.area).live.unwrap_or_default();
        let inner = live.inner(Margin::new(1, 1));
        (usize::from(inner.width), 2 * usize::from(inner.height))
    }

    /// Shows `text` on the help line for a few seconds.
    pub fn say(&mut self, text: String) {
        self.message = Some((text, Instant::now()));
    }

    /// The message to show now, if any.
    pub fn message(&self) -> Option<&str> {
        self.message
            .as_ref()
            .filter(|(_, at)| at.elapsed() < Duration::from_secs(5))
            .map(|(t, _)| t.as_str())
    }
}

/// `below the rate asked for: 42.3 of 100 frames/s` for a source short of its rate.
pub fn rate_text(stage: &Stage) -> String {
    format!(
        "below the rate asked for: {:.1} of {} frames/s",
        stage.achieved_fps.unwrap_or_default(),
        stage.requested_fps.unwrap_or_default()
    )
}

/// Where each panel of the overview goes; `None` for panels that do not fit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Areas {
    pub title: Rect,
    pub banner: Option<Rect>,
    pub table: Rect,
    pub throughput: Option<Rect>,
    pub rings: Option<Rect>,
    pub live: Option<Rect>,
    pub events: Option<Rect>,
    pub help: Rect,
}

/// Splits `height` rows off the top of `area`.
pub(crate) fn take(area: &mut Rect, height: u16) -> Rect {
    let height = height.min(area.height);
    let top = Rect { height, ..*area };
    area.y += height;
    area.height -= height;
    top
}

/// The stage a ring group belongs to: `STAGE`, `STAGE.N` (broadcast) or `STAGE.mN`
/// (metadata) all name `STAGE`.
pub fn group_stage(group: &str) -> &str {
    group.split('.').next().unwrap_or(group)
}

/// `HH:MM:SS` UTC of `at`.
pub fn clock(at: SystemTime) -> String {
    let s = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}
