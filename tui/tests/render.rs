//! The dashboard drawn with ratatui's `TestBackend` over synthetic counters: normal
//! flow, loss, a failed stage, a tiny terminal, the live view, the worker detail; and
//! what keys do.

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::Terminal;
use std::time::{Duration, Instant};
use streamd_tui::app::{Action, Screen};
use streamd_tui::model::{Group, Ring, Stage, Worker};
use streamd_tui::{App, Command, LiveFrame, Snapshot, Source};

fn worker(index: u32, frames: u64) -> Worker {
    Worker {
        worker: index,
        pid: 1000 + index,
        core: Some(u64::from(index)),
        state: "running".into(),
        frames_in: frames,
        frames_out: frames,
        bytes_in: frames * 1_000_000,
        bytes_out: frames * 1_000_000,
        proc_us_p50: 180.0,
        proc_us_p99: 2100.0,
        proc_histogram: [0, 0, 0, 0, 0, 0, 0, 40, 900, 50, 10]
            .into_iter()
            .chain([0; 13])
            .collect(),
        ..Worker::default()
    }
}

/// A pipeline `source → work (2 workers) → store` after `seconds` at 500 frames/s.
fn snapshot(seconds: u64) -> Snapshot {
    let frames = 500 * seconds;
    let mut source = worker(0, frames);
    source.frames_in = 0;
    source.bytes_in = 0;
    let mut store = worker(0, frames);
    store.frames_out = 0;
    store
        .counters
        .insert("frames_written".into(), frames.into());
    Snapshot {
        pipeline: "beamline".into(),
        state: "running".into(),
        supervisor_pid: 999,
        started_unix_ns: 1,
        resets: 0,
        uptime_s: seconds as f64,
        stages: vec![
            Stage {
                name: "source".into(),
                processor: "sim".into(),
                workers: vec![source],
                ..Stage::default()
            },
            Stage {
                name: "work".into(),
                processor: "passthrough".into(),
                workers: vec![worker(0, frames / 2), worker(1, frames / 2)],
                ..Stage::default()
            },
            Stage {
                name: "store".into(),
                processor: "hdf5".into(),
                workers: vec![store],
                ..Stage::default()
            },
        ],
        rings: vec![Ring {
            name: "beamline.raw".into(),
            slots: 64,
            slot_bytes: 1 << 20,
            published: frames,
            producer: "running".into(),
            groups: vec![Group {
                name: "work".into(),
                delivery: "lossless".into(),
                members: 3,
                set: None,
                published: frames,
                delivered: frames.saturating_sub(40),
                missed: 0,
                in_flight: frames.min(40),
            }],
            ..Ring::default()
        }],
    }
}

/// An app that has seen `first` and then `second`, one second apart.
fn app_after(first: Snapshot, second: Snapshot) -> App {
    let mut app = App::new(Some("beamline".into()));
    app.screen = Screen::Overview;
    let t0 = Instant::now();
    app.update(first, t0);
    app.update(second, t0 + Duration::from_secs(1));
    app
}

fn draw(app: &mut App, width: u16, height: u16) -> Buffer {
    app.area = Rect::new(0, 0, width, height);
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| f.render_widget(&*app, f.area())).unwrap();
    terminal.backend().buffer().clone()
}

fn lines(buf: &Buffer) -> Vec<String> {
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect()
}

fn screen(buf: &Buffer) -> String {
    lines(buf).join("\n")
}

/// The line of the stage table for `stage` worker `w`, split into its cells.
fn row<'a>(lines: &'a [String], stage: &str, w: u32) -> Vec<&'a str> {
    lines
        .iter()
        .map(|l| l.trim_matches(|c| c == '│' || c == ' '))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| {
            cells.first() == Some(&stage) && cells.get(1) == Some(&w.to_string().as_str())
        })
        .unwrap_or_else(|| panic!("no row for {stage} w{w} in:\n{}", lines.join("\n")))
}

/// Where `text` starts on screen.
fn find(buf: &Buffer, text: &str) -> (u16, u16) {
    for (y, line) in lines(buf).iter().enumerate() {
        if let Some(byte) = line.find(text) {
            return (line[..byte].chars().count() as u16, y as u16);
        }
    }
    panic!("{text:?} is not on screen:\n{}", screen(buf));
}

#[test]
fn normal_flow_shows_every_worker_with_its_rates() {
    let mut app = app_after(snapshot(10), snapshot(11));
    let buf = draw(&mut app, 120, 40);
    let lines = lines(&buf);
    // STAGE W PID CORE STATE IN/s OUT/s MB/s LAG MISSED DROPPED ERRORS RESTARTS P50 P99
    assert_eq!(
        row(&lines, "source", 0),
        [
            "source", "0", "1000", "0", "running", "0.0", "500.0", "500.0", "0", "0", "0", "0",
            "0", "180µs", "2.1ms"
        ]
    );
    assert_eq!(row(&lines, "work", 1)[5..7], ["250.0", "250.0"]);
    assert_eq!(row(&lines, "store", 0)[5..8], ["500.0", "0.0", "500.0"]);
    let text = screen(&buf);
    assert!(!text.contains("LOSS"), "{text}");
    // Rings: fill of the slowest lossless group and its accounting.
    assert!(
        text.contains("raw        ██████░░░░ 40/64 slowest work"),
        "{text}"
    );
    assert!(text.contains("work 5500 = 5460 + 0 + 40"), "{text}");
    // The throughput pane has a line per stage with its current rate.
    let (_, y) = find(&buf, "frames/s, last 60 s");
    assert!(lines[y as usize + 2].contains("work") && lines[y as usize + 2].contains("500.0"));
    assert!(text.contains("watching pipeline beamline"));
    assert!(lines
        .last()
        .unwrap()
        .starts_with("q quit  ↑↓ select  Enter detail  v live view"));
}

#[test]
fn loss_is_red_and_summed_in_a_banner() {
    let first = snapshot(10);
    let mut second = snapshot(11);
    second.stages[1].workers[1].missed = 12;
    second.stages[0].workers[0].dropped = 3;
    second.rings[0].groups[0].missed = 12;
    let mut app = app_after(first, second.clone());
    app.update(second, Instant::now() + Duration::from_secs(3));
    let buf = draw(&mut app, 120, 40);
    let (x, y) = find(&buf, "LOSS");
    assert_eq!(buf[(x, y)].bg, Color::Red);
    let text = screen(&buf);
    assert!(
        text.contains("LOSS  missed 12 (most: work w1) · dropped 3 (most: source w0)"),
        "{text}"
    );
    let lines = lines(&buf);
    assert_eq!(row(&lines, "work", 1)[9], "12");
    let y = lines
        .iter()
        .position(|l| l.contains("work       1"))
        .expect("the work w1 row") as u16;
    let x = lines[y as usize][..lines[y as usize].find(" 12 ").unwrap()]
        .chars()
        .count() as u16;
    assert_eq!(buf[(x + 1, y)].fg, Color::Red, "the MISSED cell is red");
    assert!(text.contains("work 5500 = 5460 + 12 + 40"), "{text}");
    assert!(
        text.contains("work w1 missed 12 frames"),
        "an event: {text}"
    );
}

#[test]
fn a_failed_stage_is_named_with_its_reason() {
    let first = snapshot(10);
    let mut second = snapshot(11);
    let w = &mut second.stages[2].workers[0];
    let killed = "was killed by signal 9 (SIGKILL)";
    let why = format!("{killed}; the disk holding /data is full");
    w.state = "failed".into();
    w.restarts = 3;
    w.last_error = Some("the disk holding /data is full".into());
    w.last_exit = Some(killed.into());
    w.last_stderr = Some("hdf5: H5Dwrite failed".into());
    w.reason = Some(why.clone());
    let mut app = app_after(first, second);
    let buf = draw(&mut app, 120, 40);
    let text = screen(&buf);
    assert!(
        text.contains(&format!("FAILED: store w0 ({killed})")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "store w0 restarted (restart 3, pid 1000 → 1000): {killed}"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("store w0 failed: {why}")), "{text}");
    let (x, y) = find(&buf, "failed ");
    assert_eq!(buf[(x, y)].fg, Color::Red);

    // A wide terminal has room for the reason in the row, in red.
    let buf = draw(&mut app, 170, 40);
    let lines = lines(&buf);
    let store = lines
        .iter()
        .position(|l| l.contains("store      0"))
        .expect("the store row");
    assert!(lines[0..store].iter().any(|l| l.contains("REASON")));
    assert!(lines[store].contains(&why[..40]), "{}", lines[store]);
    let (x, y) = find(&buf, &why[..40]);
    assert_eq!((y as usize, buf[(x, y)].fg), (store, Color::Red));

    // The detail names how it ended, its last error and its last stderr line.
    app.selected = app.rows().len() - 1;
    app.key(key(KeyCode::Enter));
    let text = screen(&draw(&mut app, 120, 40));
    for line in [
        "last error: the disk holding /data is full".to_string(),
        format!("last exit: {killed}"),
        "last stderr line: hdf5: H5Dwrite failed".to_string(),
    ] {
        assert!(text.contains(&line), "{line:?} in:\n{text}");
    }
}

#[test]
fn a_stalled_worker_is_flagged_in_colour_and_what_waits_for_it_is_blocked() {
    let first = snapshot(10);
    let mut second = snapshot(11);
    let why = "no heartbeat for 3.1 s, process stopped (SIGSTOP)";
    let store = &mut second.stages[2].workers[0];
    store.stalled = true;
    store.heartbeat_age_ms = 3100;
    store.reason = Some(why.into());
    let work = &mut second.stages[1].workers[0];
    work.waiting_for = Some("beamline.worked.0".into());
    work.reason = Some("waiting for space in beamline.worked.0".into());
    let mut app = app_after(first, second);
    let buf = draw(&mut app, 170, 40);
    let lines = lines(&buf);
    let text = screen(&buf);
    assert_eq!(row(&lines, "store", 0)[4], "stalled");
    assert_eq!(row(&lines, "work", 0)[4], "blocked");
    assert_eq!(row(&lines, "work", 1)[4], "running");
    let (x, y) = find(&buf, "stalled ");
    assert_eq!(buf[(x, y)].fg, Color::Magenta, "stalled is in colour");
    let (x, y) = find(&buf, "blocked ");
    assert_eq!(buf[(x, y)].fg, Color::Yellow);
    assert!(text.contains("STALLED: store w0"), "{text}");
    assert!(
        text.contains(&format!("store w0 stalled: {why}")),
        "an event: {text}"
    );
    assert!(text.contains(why), "the reason column: {text}");
}

#[test]
fn a_source_below_its_rate_is_named_in_the_banner() {
    let first = snapshot(10);
    let mut second = snapshot(11);
    let source = &mut second.stages[0];
    source.requested_fps = Some(1000.0);
    source.achieved_fps = Some(500.0);
    source.below_rate = true;
    let mut app = app_after(first, second);
    let buf = draw(&mut app, 120, 40);
    let text = screen(&buf);
    assert!(
        text.contains("SOURCE below the rate asked for: 500.0 of 1000 frames/s"),
        "{text}"
    );
    assert!(
        text.contains("source below the rate asked for: 500.0 of 1000 frames/s"),
        "an event: {text}"
    );
    let lines = lines(&buf);
    let y = lines
        .iter()
        .position(|l| l.contains("source     0"))
        .unwrap() as u16;
    let x = lines[y as usize][..lines[y as usize].find("500.0").unwrap()]
        .chars()
        .count() as u16;
    assert_eq!(buf[(x, y)].fg, Color::Yellow, "the source's OUT/s");
}

#[test]
fn a_tiny_terminal_gets_a_note_and_a_small_one_keeps_the_essentials() {
    let mut app = app_after(snapshot(10), snapshot(11));
    let buf = draw(&mut app, 30, 6);
    assert!(
        screen(&buf).contains("terminal too small (30×6)"),
        "{}",
        screen(&buf)
    );

    let buf = draw(&mut app, 64, 12);
    let text = screen(&buf);
    let lines = lines(&buf);
    // Low-rank columns go first; loss columns stay.
    assert!(!text.contains("P99") && !text.contains("CORE"), "{text}");
    assert!(text.contains("MISSED") && text.contains("DROPPED") && text.contains("ERRORS"));
    for stage in ["source", "work", "store"] {
        row(&lines, stage, 0);
    }
    // No room for the panes below the table; the help line stays.
    assert!(!text.contains("events"), "{text}");
    assert!(lines.last().unwrap().starts_with("q quit"));
}

#[test]
fn the_overview_prints_as_plain_text() {
    let app = app_after(snapshot(10), snapshot(11));
    let text = streamd_tui::ui::overview_text(&app, 120);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert!(lines[0].contains("pipeline beamline  running"));
    assert_eq!(row(&lines, "work", 0)[5], "250.0");
    assert!(text.contains("work 5500 = 5460 + 0 + 40"));
    assert!(lines.iter().all(|l| l == l.trim_end()));
}

/// A source with canned answers.
#[derive(Default)]
struct Canned {
    running: Vec<String>,
    snapshot: Option<Snapshot>,
    frame: Option<LiveFrame>,
    asked_frame: Option<(String, usize, usize)>,
    sent: Vec<Command>,
}

impl Source for Canned {
    fn pipelines(&mut self) -> Vec<String> {
        self.running.clone()
    }
    fn snapshot(&mut self, pipeline: &str) -> Result<Snapshot, String> {
        self.snapshot
            .clone()
            .ok_or_else(|| format!("pipeline '{pipeline}' is not running"))
    }
    fn newest_frame(&mut self, ring: &str, width: usize, height: usize) -> Option<LiveFrame> {
        self.asked_frame = Some((ring.to_string(), width, height));
        self.frame.clone()
    }
    fn close_live(&mut self) {}
    fn command(&mut self, _pipeline: &str, command: Command) -> Result<String, String> {
        self.sent.push(command);
        Ok("done".into())
    }
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

#[test]
fn waits_for_a_pipeline_then_chooses_among_several() {
    let mut source = Canned::default();
    let mut app = App::new(None);
    app.refresh(&mut source, Instant::now());
    assert_eq!(app.screen, Screen::Waiting);
    assert!(screen(&draw(&mut app, 100, 20)).contains("No pipeline is running on this host"));

    source.running = vec!["a".into(), "b".into()];
    source.snapshot = Some(snapshot(1));
    app.refresh(&mut source, Instant::now());
    assert!(matches!(app.screen, Screen::Choose { .. }));
    assert!(screen(&draw(&mut app, 100, 20)).contains("choose a pipeline"));
    app.key(key(KeyCode::Down));
    app.key(key(KeyCode::Enter));
    assert_eq!(app.pipeline.as_deref(), Some("b"));
    app.refresh(&mut source, Instant::now());
    assert_eq!(app.screen, Screen::Overview);
    assert!(app.snapshot.is_some());

    // The pipeline goes away: its last counters stay, with the reason.
    source.snapshot = None;
    app.refresh(&mut source, Instant::now());
    assert!(screen(&draw(&mut app, 120, 40))
        .contains("pipeline 'b' is not running; showing its last counters"));
    // It starts again: a new run is noticed.
    let mut again = snapshot(1);
    again.started_unix_ns = 2;
    source.snapshot = Some(again);
    app.refresh(&mut source, Instant::now());
    assert!(screen(&draw(&mut app, 120, 40)).contains("pipeline beamline started again"));
}

#[test]
fn keys_quit_stop_after_confirmation_reset_and_freeze() {
    let mut app = app_after(snapshot(10), snapshot(11));
    assert_eq!(
        app.key(key(KeyCode::Char('r'))),
        Some(Action::Send(Command::ResetStats))
    );
    assert_eq!(app.key(key(KeyCode::Char('s'))), None);
    assert!(screen(&draw(&mut app, 120, 40)).contains("Stop pipeline 'beamline'?"));
    assert_eq!(
        app.key(key(KeyCode::Char('n'))),
        None,
        "anything but y cancels"
    );
    assert!(!app.confirm_stop);
    app.key(key(KeyCode::Char('s')));
    assert_eq!(
        app.key(key(KeyCode::Char('y'))),
        Some(Action::Send(Command::Stop))
    );

    app.key(key(KeyCode::Char('p')));
    let frozen = app.snapshot.as_ref().unwrap().uptime_s;
    let mut source = Canned {
        snapshot: Some(snapshot(20)),
        ..Canned::default()
    };
    app.refresh(&mut source, Instant::now());
    assert_eq!(app.snapshot.as_ref().unwrap().uptime_s, frozen, "frozen");
    assert!(screen(&draw(&mut app, 120, 40)).contains("FROZEN"));
    app.key(key(KeyCode::Char('p')));
    app.refresh(&mut source, Instant::now());
    assert_eq!(app.snapshot.as_ref().unwrap().uptime_s, 20.0);

    assert_eq!(app.key(key(KeyCode::Char('q'))), Some(Action::Quit));
    assert_eq!(
        app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Some(Action::Quit)
    );
}

#[test]
fn a_reset_is_one_event_and_rates_start_over() {
    let mut app = app_after(snapshot(10), snapshot(11));
    let t0 = Instant::now();
    // The workers follow a reset one refresh apart: the source first, then the rest.
    let mut partly = snapshot(11);
    partly.resets = 1;
    partly.stages[0].workers[0].frames_out = 0;
    app.update(partly, t0 + Duration::from_secs(2));
    let mut reset = snapshot(0);
    reset.resets = 1;
    app.update(reset, t0 + Duration::from_secs(3));
    assert_eq!(app.rates(1, 0).fps_in, 0.0);
    let resets = app
        .events
        .iter()
        .filter(|e| e.text == "statistics reset")
        .count();
    assert_eq!(resets, 1, "one key press, one event");
}

#[test]
fn the_detail_shows_the_processing_time_histogram_and_counters() {
    let mut app = app_after(snapshot(10), snapshot(11));
    for _ in 0..3 {
        app.key(key(KeyCode::Down));
    }
    app.key(key(KeyCode::Enter));
    let text = screen(&draw(&mut app, 120, 40));
    assert!(text.contains("store w0 · hdf5 · pid 1000"), "{text}");
    assert!(text.contains("processing time per frame"), "{text}");
    // Buckets 7 (128 µs) to 10 (1 ms) hold frames; one empty bucket each side.
    for label in ["64µs", "128µs", "256µs", "512µs", "1ms", "2ms"] {
        assert!(text.contains(label), "{label}: {text}");
    }
    assert!(text.contains("900"), "{text}");
    assert!(text.contains("frames_written"), "{text}");
    app.key(key(KeyCode::Esc));
    assert!(!app.detail);
}

#[test]
fn the_live_view_draws_the_newest_frame_in_half_blocks_with_auto_contrast() {
    let mut app = app_after(snapshot(10), snapshot(11));
    app.area = Rect::new(0, 0, 100, 40);
    app.key(key(KeyCode::Char('v')));
    // A 4×4 frame: rows 0 and 2 dark (0), rows 1 and 3 bright (100); one NaN.
    let mut values = Vec::new();
    for y in 0..4 {
        for _ in 0..4 {
            values.push(if y % 2 == 0 { 0.0 } else { 100.0 });
        }
    }
    values[0] = f32::NAN;
    let mut source = Canned {
        snapshot: Some(snapshot(12)),
        frame: Some(LiveFrame {
            ring: "beamline.raw".into(),
            frame_id: 6000,
            timestamp_ns: 3_723_004_000_000,
            ny: 2048,
            nx: 2048,
            dtype: "u16".into(),
            width: 4,
            height: 4,
            values,
        }),
        ..Canned::default()
    };
    app.refresh(&mut source, Instant::now());
    let (ring, width, height) = source.asked_frame.clone().expect("a frame was asked for");
    assert_eq!(ring, "beamline.raw");
    // The panel below the table: 98 columns inside its border, two pixels per line.
    assert_eq!(width, 98);
    assert_eq!(height % 2, 0);
    let buf = draw(&mut app, 100, 40);
    let text = screen(&buf);
    assert!(
        text.contains(
            "live · beamline.raw · frame 6000 · 01:02:03.004 · 2048×2048 u16 · contrast 0.000..100"
        ),
        "{text}"
    );
    let (x, y) = find(&buf, "▀▀▀▀");
    // Top pixel dark, bottom bright; the NaN pixel shows dark red.
    assert_eq!(buf[(x + 1, y)].fg, Color::Rgb(0, 0, 0));
    assert_eq!(buf[(x + 1, y)].bg, Color::Rgb(255, 255, 255));
    assert_eq!(buf[(x, y)].fg, Color::Rgb(120, 0, 0));
    // ← and → change the ring; v closes the view.
    app.key(key(KeyCode::Right));
    app.key(key(KeyCode::Char('v')));
    assert!(app.live.is_none());
}

#[test]
fn freeze_then_choose_then_enter_waits_for_the_list_instead_of_panicking() {
    let mut app = app_after(snapshot(10), snapshot(11));
    app.key(key(KeyCode::Char('p')));
    app.key(key(KeyCode::Char('c')));
    assert_eq!(app.key(key(KeyCode::Enter)), None);
    assert_eq!(
        app.screen,
        Screen::Choose {
            names: Vec::new(),
            selected: 0
        }
    );
    assert_eq!(app.pipeline.as_deref(), Some("beamline"), "nothing chosen");
    assert!(
        !app.frozen,
        "choosing watches live again, so the list can fill"
    );
    assert!(screen(&draw(&mut app, 100, 20)).contains("looking for running pipelines"));
    app.key(key(KeyCode::Down));
    app.key(key(KeyCode::Up));

    let mut source = Canned {
        running: vec!["a".into(), "b".into()],
        snapshot: Some(snapshot(12)),
        ..Canned::default()
    };
    app.refresh(&mut source, Instant::now());
    app.key(key(KeyCode::Enter));
    assert_eq!(app.pipeline.as_deref(), Some("a"));
    assert_eq!(app.screen, Screen::Overview);
}

/// Every key the dashboard answers to, and a refresh (`None`) between keys.
fn inputs() -> Vec<Option<KeyEvent>> {
    let codes = [
        KeyCode::Char('q'),
        KeyCode::Esc,
        KeyCode::Up,
        KeyCode::Down,
        KeyCode::Left,
        KeyCode::Right,
        KeyCode::Enter,
        KeyCode::Char('v'),
        KeyCode::Char('r'),
        KeyCode::Char('s'),
        KeyCode::Char('y'),
        KeyCode::Char('p'),
        KeyCode::Char('c'),
        KeyCode::Char('?'),
        KeyCode::Char('x'),
    ];
    codes
        .into_iter()
        .map(|c| Some(key(c)))
        .chain([
            Some(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            None,
        ])
        .collect()
}

/// Applies every sequence of up to three inputs to a fresh dashboard from `start`,
/// drawing after each sequence; checks what must hold whatever the operator typed.
fn survives_every_short_sequence(start: impl Fn() -> (App, Canned)) {
    let inputs = inputs();
    let mut sequences: Vec<Vec<usize>> = vec![Vec::new()];
    for _ in 0..3 {
        let longer: Vec<Vec<usize>> = sequences
            .iter()
            .filter(|s| s.len() == sequences.last().map_or(0, Vec::len))
            .flat_map(|s| {
                (0..inputs.len()).map(move |i| {
                    let mut s = s.clone();
                    s.push(i);
                    s
                })
            })
            .collect();
        sequences.extend(longer);
    }
    for sequence in &sequences {
        let (mut app, mut source) = start();
        for &i in sequence {
            match inputs[i] {
                Some(k) => {
                    app.key(k);
                }
                None => app.refresh(&mut source, Instant::now()),
            }
        }
        let typed: Vec<String> = sequence
            .iter()
            .map(|&i| format!("{:?}", inputs[i]))
            .collect();
        let rows = app.rows().len();
        assert!(app.selected <= rows.saturating_sub(1), "{typed:?}");
        assert!(!app.detail || rows > 0, "a detail of no worker: {typed:?}");
        assert!(!app.confirm_stop || app.snapshot.is_some(), "{typed:?}");
        if let Screen::Choose { names, selected } = &app.screen {
            assert!(*selected <= names.len().saturating_sub(1), "{typed:?}");
            assert!(!app.frozen, "a chooser that can never fill: {typed:?}");
        }
        draw(&mut app, 80, 24);
    }
}

#[test]
fn no_key_sequence_panics_without_a_pipeline() {
    survives_every_short_sequence(|| (App::new(None), Canned::default()));
}

#[test]
fn no_key_sequence_panics_over_an_empty_snapshot() {
    survives_every_short_sequence(|| {
        let empty = Snapshot {
            pipeline: "beamline".into(),
            ..Snapshot::default()
        };
        let mut app = App::new(Some("beamline".into()));
        app.screen = Screen::Overview;
        app.update(empty.clone(), Instant::now());
        let source = Canned {
            running: vec!["beamline".into(), "other".into()],
            snapshot: Some(empty),
            ..Canned::default()
        };
        (app, source)
    });
}

#[test]
fn no_key_sequence_panics_over_a_running_pipeline() {
    survives_every_short_sequence(|| {
        let source = Canned {
            running: vec!["beamline".into(), "other".into()],
            snapshot: Some(snapshot(12)),
            ..Canned::default()
        };
        (app_after(snapshot(10), snapshot(11)), source)
    });
}

#[test]
fn question_mark_lists_the_keys_and_any_key_closes_the_list() {
    let mut app = app_after(snapshot(10), snapshot(11));
    assert_eq!(app.key(key(KeyCode::Char('?'))), None);
    let text = screen(&draw(&mut app, 120, 40));
    assert!(text.contains("keys · any key closes"), "{text}");
    for line in [
        "freeze or resume the display",
        "choose another pipeline",
        "Ctrl-C",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    // The list fits the smallest terminal drawn: its title and first key show.
    let small = screen(&draw(&mut app, 40, 8));
    assert!(small.contains("keys · any"), "{small}");
    assert_eq!(app.key(key(KeyCode::Char('q'))), None, "q closes the list");
    assert!(!app.help);
    assert!(!screen(&draw(&mut app, 120, 40)).contains("any key closes"));
    // In the chooser too.
    app.key(key(KeyCode::Char('c')));
    app.key(key(KeyCode::Char('?')));
    assert!(screen(&draw(&mut app, 120, 40)).contains("keys · any key closes"));
}
