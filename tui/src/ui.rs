//! Drawing the dashboard: `impl Widget for &App`, one function per panel. No I/O here;
//! everything shown comes from the [`App`].

use crate::app::{group_stage, take, App, Screen, HISTORY_SECONDS};
use crate::model::{LiveFrame, Ring, Snapshot};
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Bar, BarChart, BarGroup, Block, Cell, Clear, Paragraph, Row, Sparkline, StatefulWidget, Table,
    TableState, Widget, Wrap,
};

/// Below this size only a note is drawn.
pub const MIN_WIDTH: u16 = 40;
pub const MIN_HEIGHT: u16 = 8;

const LOSS: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
const WARN: Style = Style::new().fg(Color::Yellow);
const STALLED: Style = Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD);
const DIM: Style = Style::new().fg(Color::DarkGray);
const HEADER: Style = Style::new().add_modifier(Modifier::BOLD);

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            Paragraph::new(format!(
                "terminal too small ({}×{}); streamd top needs {MIN_WIDTH}×{MIN_HEIGHT}. q quits",
                area.width, area.height
            ))
            .wrap(Wrap { trim: true })
            .render(area, buf);
            return;
        }
        match &self.screen {
            Screen::Waiting if self.snapshot.is_none() => waiting(self, area, buf),
            Screen::Choose { names, selected } => chooser(names, *selected, area, buf),
            _ => overview(self, area, buf),
        }
        if self.help {
            help(area, buf);
        }
    }
}

/// The keys `top` answers to, with what each does.
const KEYS: [(&str, &str); 11] = [
    ("q", "quit"),
    ("Esc", "close the detail or the live view; else quit"),
    ("↑ ↓", "select a worker (a pipeline in the chooser)"),
    (
        "Enter",
        "the selected worker's detail (watch, in the chooser)",
    ),
    ("v", "live view of the newest frame of a ring"),
    ("← →", "the live view's previous or next ring"),
    ("r", "reset the pipeline's statistics"),
    ("s", "stop the pipeline (asks first)"),
    ("p", "freeze or resume the display"),
    ("c", "choose another pipeline"),
    ("Ctrl-C", "quit"),
];

/// The list of keys over the screen (`?`).
fn help(area: Rect, buf: &mut Buffer) {
    let popup = area.centered(
        Constraint::Length(64.min(area.width)),
        Constraint::Length((KEYS.len() as u16 + 2).min(area.height)),
    );
    Clear.render(popup, buf);
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::styled(format!(" {key:<7}"), HEADER),
                Span::raw(*what),
            ])
        })
        .collect();
    Paragraph::new(lines)
        .block(Block::bordered().title(" keys · any key closes "))
        .render(popup, buf);
}

fn waiting(app: &App, area: Rect, buf: &mut Buffer) {
    let what = match (&app.pipeline, &app.problem) {
        (Some(name), Some(why)) => format!("{why}.\nWaiting for pipeline '{name}' to start…"),
        (Some(name), None) => format!("Waiting for pipeline '{name}' to start…"),
        (None, _) => "No pipeline is running on this host.\nWaiting for one: start it with `streamd run PIPELINE.toml` (or `streamd demo`)…".into(),
    };
    let body = Rect {
        height: area.height - 1,
        ..area
    };
    Paragraph::new(what)
        .block(Block::bordered().title(" streamd top "))
        .wrap(Wrap { trim: true })
        .render(body, buf);
    help_line(
        app,
        Rect {
            y: area.bottom() - 1,
            height: 1,
            ..area
        },
        buf,
    );
}

fn chooser(names: &[String], selected: usize, area: Rect, buf: &mut Buffer) {
    let lines: Vec<Line> = if names.is_empty() {
        vec![Line::from("looking for running pipelines…")]
    } else {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let line = Line::from(format!("  {n}"));
                if i == selected {
                    line.reversed()
                } else {
                    line
                }
            })
            .collect()
    };
    let body = Rect {
        height: area.height - 1,
        ..area
    };
    Paragraph::new(lines)
        .block(Block::bordered().title(" streamd top · choose a pipeline "))
        .render(body, buf);
    Line::from("↑↓ select  Enter watch  q quit  ? keys")
        .style(DIM)
        .render(
            Rect {
                y: area.bottom() - 1,
                height: 1,
                ..area
            },
            buf,
        );
}

fn overview(app: &App, area: Rect, buf: &mut Buffer) {
    let areas = app.layout(area);
    title(app, areas.title, buf);
    if let Some(banner) = areas.banner {
        banner_line(app).render(banner, buf);
    }
    if let Some(snapshot) = &app.snapshot {
        stage_table(app, snapshot, areas.table, buf);
        if let Some(r) = areas.throughput {
            throughput(app, snapshot, r, buf);
        }
        if let Some(r) = areas.rings {
            rings(snapshot, r, buf);
        }
    }
    if let Some(r) = areas.live {
        live(app, r, buf);
    }
    if let Some(r) = areas.events {
        events(app, r, buf);
    }
    help_line(app, areas.help, buf);
    if app.detail {
        if let Some(&(s, w)) = app.rows().get(app.selected) {
            detail(app, s, w, area, buf);
        }
    }
    if app.confirm_stop {
        confirm(app, area, buf);
    }
}

fn title(app: &App, area: Rect, buf: &mut Buffer) {
    let mut spans = vec![Span::styled(" streamd top ", HEADER.reversed())];
    if let Some(s) = &app.snapshot {
        spans.push(Span::raw(format!(
            " pipeline {}  {}  up {}  supervisor pid {}",
            s.pipeline,
            s.state,
            duration(s.uptime_s),
            s.supervisor_pid
        )));
    }
    if app.frozen {
        spans.push(Span::styled(
            "  FROZEN (p resumes)",
            WARN.add_modifier(Modifier::BOLD),
        ));
    }
    Line::from(spans).render(area, buf);
}

fn banner_line(app: &App) -> Line<'static> {
    let loss = app.loss_summary();
    let mut spans = Vec::new();
    if !loss.is_empty() {
        spans.push(Span::styled(
            format!(" LOSS  {} ", loss.join(" · ")),
            Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD),
        ));
    }
    if let Some(problem) = &app.problem {
        spans.push(Span::styled(
            format!(" {problem}; showing its last counters "),
            WARN.reversed(),
        ));
    }
    Line::from(spans)
}

struct Column {
    title: &'static str,
    width: u16,
    /// Columns of higher rank go first when the terminal is narrow.
    rank: u8,
}

const COLUMNS: [Column; 16] = [
    Column {
        title: "STAGE",
        width: 10,
        rank: 0,
    },
    Column {
        title: "W",
        width: 2,
        rank: 1,
    },
    Column {
        title: "PID",
        width: 7,
        rank: 4,
    },
    Column {
        title: "CORE",
        width: 4,
        rank: 5,
    },
    Column {
        title: "STATE",
        width: 10,
        rank: 0,
    },
    Column {
        title: "IN/s",
        width: 8,
        rank: 0,
    },
    Column {
        title: "OUT/s",
        width: 8,
        rank: 1,
    },
    Column {
        title: "MB/s",
        width: 7,
        rank: 2,
    },
    Column {
        title: "LAG",
        width: 5,
        rank: 2,
    },
    Column {
        title: "MISSED",
        width: 7,
        rank: 0,
    },
    Column {
        title: "DROPPED",
        width: 7,
        rank: 0,
    },
    Column {
        title: "ERRORS",
        width: 6,
        rank: 0,
    },
    Column {
        title: "RESTARTS",
        width: 8,
        rank: 1,
    },
    Column {
        title: "P50",
        width: 7,
        rank: 3,
    },
    Column {
        title: "P99",
        width: 7,
        rank: 3,
    },
    // Why a worker is not running as it should: the width left over, when at least
    // this much is (the banner names failed workers in any case).
    Column {
        title: "REASON",
        width: 16,
        rank: 6,
    },
];

/// The columns that fit in `width`, dropping the lowest-ranked first.
fn visible_columns(width: u16) -> Vec<usize> {
    let mut shown: Vec<usize> = (0..COLUMNS.len()).collect();
    let needed = |shown: &[usize]| -> u16 { shown.iter().map(|&c| COLUMNS[c].width + 1).sum() };
    while needed(&shown) > width {
        let Some(drop) = shown.iter().copied().max_by_key(|&c| (COLUMNS[c].rank, c)) else {
            break;
        };
        if COLUMNS[drop].rank == 0 {
            break;
        }
        shown.retain(|&c| c != drop);
    }
    shown
}

fn stage_table(app: &App, snapshot: &Snapshot, area: Rect, buf: &mut Buffer) {
    let columns = visible_columns(area.width.saturating_sub(2));
    let header = Row::new(columns.iter().map(|&c| Cell::from(COLUMNS[c].title))).style(HEADER);
    let mut rows = Vec::new();
    for (s, stage) in snapshot.stages.iter().enumerate() {
        for (w, worker) in stage.workers.iter().enumerate() {
            let rates = app.rates(s, w);
            let mb = if s == 0 { rates.mb_out } else { rates.mb_in };
            let cells = columns.iter().map(|&c| match COLUMNS[c].title {
                "STAGE" => Cell::from(stage.name.clone()),
                "W" => Cell::from(worker.worker.to_string()),
                "PID" => Cell::from(worker.pid.to_string()),
                "CORE" => Cell::from(worker.core.map_or("-".into(), |c| c.to_string())),
                "STATE" => Cell::from(worker.shown_state().to_string())
                    .style(state_style(worker.shown_state())),
                "IN/s" => number(rate(rates.fps_in)),
                // A source short of the rate it is asked for.
                "OUT/s" if stage.below_rate => number(rate(rates.fps_out)).style(WARN.bold()),
                "OUT/s" => number(rate(rates.fps_out)),
                "MB/s" => number(rate(mb)),
                "LAG" => number(count(worker.lag)),
                "MISSED" => loss_cell(worker.missed),
                "DROPPED" => loss_cell(worker.dropped),
                "ERRORS" => loss_cell(worker.errors),
                "RESTARTS" => {
                    let cell = number(count(worker.restarts));
                    if worker.restarts > 0 {
                        cell.style(WARN)
                    } else {
                        cell
                    }
                }
                "P50" => number(micros(worker.proc_us_p50)),
                "P99" => number(micros(worker.proc_us_p99)),
                _ => Cell::from(worker.reason.clone().unwrap_or_default())
                    .style(state_style(worker.shown_state())),
            });
            rows.push(Row::new(cells.collect::<Vec<_>>()));
        }
    }
    let widths = columns.iter().map(|&c| match COLUMNS[c].title {
        "REASON" => Constraint::Min(COLUMNS[c].width),
        _ => Constraint::Length(COLUMNS[c].width),
    });
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(Block::bordered().title(" stages · workers "));
    let mut state = TableState::default().with_selected(Some(app.selected));
    StatefulWidget::render(table, area, buf, &mut state);
}

fn state_style(state: &str) -> Style {
    match state {
        "failed" | "error" => LOSS,
        "stalled" => STALLED,
        "restarting" | "starting" | "pending" | "blocked" => WARN,
        "finished" => DIM,
        _ => Style::new().fg(Color::Green),
    }
}

fn number(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).right_aligned())
}

fn loss_cell(n: u64) -> Cell<'static> {
    let cell = number(count(n));
    if n > 0 {
        cell.style(LOSS.reversed())
    } else {
        cell
    }
}

/// A count that fits 7 columns: 1234567 → 1.23M.
pub fn count(n: u64) -> String {
    match n {
        0..=999_999 => n.to_string(),
        1_000_000..=999_999_999 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}

/// A rate that fits 8 columns.
pub fn rate(x: f64) -> String {
    if x < 100_000.0 {
        format!("{x:.1}")
    } else {
        format!("{:.1}k", x / 1e3)
    }
}

/// A duration in µs, in the unit that suits it.
pub fn micros(us: f64) -> String {
    if us <= 0.0 {
        "-".into()
    } else if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1e6 {
        format!("{:.1}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds as u64;
    if s < 60 {
        format!("{seconds:.1} s")
    } else {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }
}

fn throughput(app: &App, snapshot: &Snapshot, area: Rect, buf: &mut Buffer) {
    let block = Block::bordered().title(format!(" frames/s, last {HISTORY_SECONDS} s "));
    let inner = block.inner(area);
    block.render(area, buf);
    let label_width = 10u16.min(inner.width / 3);
    let value_width = 9u16.min(inner.width / 4);
    for (s, stage) in snapshot
        .stages
        .iter()
        .enumerate()
        .take(inner.height as usize)
    {
        let y = inner.y + s as u16;
        let row = Rect {
            y,
            height: 1,
            ..inner
        };
        buf.set_stringn(row.x, y, &stage.name, label_width as usize, Style::new());
        let history: Vec<u64> = app
            .history
            .get(s)
            .map_or_else(Vec::new, |h| h.iter().copied().collect());
        let spark_width = row.width.saturating_sub(label_width + value_width + 2);
        let shown = &history[history.len().saturating_sub(spark_width as usize)..];
        Sparkline::default()
            .data(shown)
            .style(Style::new().fg(Color::Cyan))
            .render(
                Rect {
                    x: row.x + label_width + 1,
                    width: spark_width,
                    ..row
                },
                buf,
            );
        let now = rate(app.stage_fps(s));
        Line::from(now).right_aligned().render(
            Rect {
                x: row.right() - value_width,
                width: value_width,
                ..row
            },
            buf,
        );
    }
}

/// The rings pane's lines: per ring its fill and slowest reader, then each group's
/// accounting `published = delivered + missed + in flight`.
fn ring_lines(snapshot: &Snapshot) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let prefix = format!("{}.", snapshot.pipeline);
    for ring in &snapshot.rings {
        let name = ring
            .name
            .strip_prefix(&prefix)
            .unwrap_or(&ring.name)
            .to_string();
        lines.push(ring_gauge(&name, ring));
        for g in &ring.groups {
            let missed = Span::styled(
                count(g.missed),
                if g.missed > 0 { LOSS } else { Style::new() },
            );
            // A set's share of the stream: `rr 1/3` is worker 1's of three turns.
            let set = g
                .set
                .map_or(String::new(), |s| format!(" {}/{}", s.index, s.sets));
            lines.push(Line::from(vec![
                Span::styled(format!("  {}{set} ", g.name), DIM),
                Span::raw(format!(
                    "{} = {} + ",
                    count(g.published),
                    count(g.delivered)
                )),
                missed,
                Span::raw(format!(" + {}", count(g.in_flight))),
                Span::styled(if g.is_lossy() { "  lossy" } else { "" }, DIM),
            ]));
        }
    }
    lines
}

fn ring_gauge(name: &str, ring: &Ring) -> Line<'static> {
    // The ring is as full as its slowest lossless group lets it be.
    let slowest = ring
        .groups
        .iter()
        .filter(|g| !g.is_lossy())
        .max_by_key(|g| g.in_flight);
    let fill = slowest
        .map_or(0, |g| g.in_flight)
        .min(u64::from(ring.slots));
    let fraction = if ring.slots == 0 {
        0.0
    } else {
        fill as f64 / f64::from(ring.slots)
    };
    const BAR: usize = 10;
    let full = (fraction * BAR as f64).round() as usize;
    let colour = if fraction >= 0.9 {
        Color::Red
    } else if fraction >= 0.5 {
        Color::Yellow
    } else {
        Color::Green
    };
    let mut spans = vec![
        Span::styled(format!("{name:<10} "), HEADER),
        Span::styled("█".repeat(full), Style::new().fg(colour)),
        Span::styled("░".repeat(BAR - full), DIM),
        Span::raw(format!(" {fill}/{} ", ring.slots)),
    ];
    if let Some(g) = slowest.filter(|_| fill > 0) {
        spans.push(Span::styled(
            format!("slowest {}", group_stage(&g.name)),
            DIM,
        ));
    }
    if ring.dropped > 0 {
        spans.push(Span::styled(
            format!("  not published {}", count(ring.dropped)),
            LOSS,
        ));
    }
    if ring.producer == "dead" {
        spans.push(Span::styled("  producer dead", LOSS));
    }
    Line::from(spans)
}

fn rings(snapshot: &Snapshot, area: Rect, buf: &mut Buffer) {
    Paragraph::new(ring_lines(snapshot))
        .block(Block::bordered().title(" rings · published = delivered + missed + in flight "))
        .render(area, buf);
}

fn events(app: &App, area: Rect, buf: &mut Buffer) {
    let lines: Vec<Line> = app
        .events
        .iter()
        .map(|e| {
            Line::from(vec![
                Span::styled(format!("{} ", e.at), DIM),
                Span::styled(e.text.clone(), if e.alarm { LOSS } else { Style::new() }),
            ])
        })
        .collect();
    Paragraph::new(lines)
        .block(Block::bordered().title(" events (UTC, newest first) "))
        .render(area, buf);
}

fn help_line(app: &App, area: Rect, buf: &mut Buffer) {
    let keys = if app.live.is_some() {
        "q quit  ↑↓ select  ←→ ring  v close view  Enter detail  r reset  s stop  p freeze  ? keys"
    } else {
        "q quit  ↑↓ select  Enter detail  v live view  r reset stats  s stop  p freeze  c choose  ? keys"
    };
    let mut spans = vec![Span::styled(keys, DIM)];
    if let Some(message) = app.message() {
        spans.push(Span::styled(format!("  {message}"), WARN));
    }
    Line::from(spans).render(area, buf);
}

fn live(app: &App, area: Rect, buf: &mut Buffer) {
    let ring = app.live_ring().unwrap_or_else(|| "-".into());
    let frame = app
        .live
        .as_ref()
        .and_then(|l| l.frame.as_ref())
        .filter(|f| f.ring == ring);
    let title = match frame {
        Some(f) => format!(
            " live · {ring} · frame {} · {} · {}×{} {} · contrast {} ",
            f.frame_id,
            timestamp(f.timestamp_ns),
            f.nx,
            f.ny,
            f.dtype,
            contrast_text(f)
        ),
        None => format!(" live · {ring} · waiting for a frame "),
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    block.render(area, buf);
    if let Some(frame) = frame {
        half_blocks(frame, inner, buf);
    }
}

fn contrast_text(frame: &LiveFrame) -> String {
    let show = |v: f32| {
        if v.abs() >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.3}")
        }
    };
    match contrast(&frame.values) {
        Some((lo, hi)) => format!("{}..{}", show(lo), show(hi)),
        None => "no finite pixel".into(),
    }
}

/// `HH:MM:SS.mmm` UTC of a frame timestamp.
fn timestamp(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        ns / 1_000_000 % 1000
    )
}

/// Auto-contrast: the 1st and 99th percentiles of the finite values.
pub fn contrast(values: &[f32]) -> Option<(f32, f32)> {
    let mut finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return None;
    }
    finite.sort_by(f32::total_cmp);
    let at = |q: f64| finite[((finite.len() - 1) as f64 * q).round() as usize];
    Some((at(0.01), at(0.99)))
}

/// The frame in half blocks: each cell shows two pixel rows, the upper as the
/// foreground of `▀`, the lower as its background. Centred in `area`.
fn half_blocks(frame: &LiveFrame, area: Rect, buf: &mut Buffer) {
    let (lo, hi) = contrast(&frame.values).unwrap_or((0.0, 1.0));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let grey = |v: f32| -> Color {
        if !v.is_finite() {
            return Color::Rgb(120, 0, 0);
        }
        let g = (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8;
        Color::Rgb(g, g, g)
    };
    let cols = (frame.width as u16).min(area.width);
    let lines = (frame.height.div_ceil(2) as u16).min(area.height);
    let x0 = area.x + (area.width - cols) / 2;
    let y0 = area.y + (area.height - lines) / 2;
    for row in 0..lines {
        for col in 0..cols {
            let at = |r: usize| frame.values.get(r * frame.width + col as usize).copied();
            let top = at(2 * row as usize).unwrap_or(f32::NAN);
            let bottom = at(2 * row as usize + 1);
            let cell = &mut buf[(x0 + col, y0 + row)];
            cell.set_symbol("▀").set_fg(grey(top));
            cell.set_bg(bottom.map_or(Color::Reset, grey));
        }
    }
}

/// Labels of the processing-time buckets (`<2µs`, `2µs`, `4µs`, … `1ms`, … `1s`, …).
fn bucket_label(b: usize) -> String {
    if b == 0 {
        return "<2µs".into();
    }
    let us = 1u64 << b;
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{}ms", us / 1000)
    } else {
        format!("{}s", us / 1_000_000)
    }
}

fn detail(app: &App, stage: usize, worker: usize, area: Rect, buf: &mut Buffer) {
    let Some(s) = app.snapshot.as_ref().and_then(|s| s.stages.get(stage)) else {
        return;
    };
    let Some(w) = s.workers.get(worker) else {
        return;
    };
    let popup = area.centered(Constraint::Percentage(90), Constraint::Percentage(80));
    Clear.render(popup, buf);
    let block = Block::bordered().title(format!(
        " {} w{} · {} · pid {} · core {} · {} (Enter or Esc closes) ",
        s.name,
        w.worker,
        s.processor,
        w.pid,
        w.core.map_or("-".into(), |c| c.to_string()),
        w.shown_state()
    ));
    let inner = block.inner(popup);
    block.render(popup, buf);
    let mut rest = inner;
    let rates = app.rates(stage, worker);
    let mut info = vec![
        Line::from(format!(
            "frames in {} ({}/s), out {} ({}/s); last frame {}; lag {}; p50 {} p99 {}",
            count(w.frames_in),
            rate(rates.fps_in),
            count(w.frames_out),
            rate(rates.fps_out),
            w.last_frame_id.map_or("-".into(), |f| f.to_string()),
            count(w.lag),
            micros(w.proc_us_p50),
            micros(w.proc_us_p99)
        )),
        Line::from(vec![
            Span::raw("missed "),
            Span::styled(
                count(w.missed),
                if w.missed > 0 { LOSS } else { Style::new() },
            ),
            Span::raw("  dropped "),
            Span::styled(
                count(w.dropped),
                if w.dropped > 0 { LOSS } else { Style::new() },
            ),
            Span::raw("  errors "),
            Span::styled(
                count(w.errors),
                if w.errors > 0 { LOSS } else { Style::new() },
            ),
            Span::raw(format!("  restarts {}", w.restarts)),
        ]),
    ];
    if w.stalled || w.waiting_for.is_some() {
        let why = w.reason.as_deref().unwrap_or_default();
        info.push(Line::styled(
            format!("{}: {why}", w.shown_state()),
            state_style(w.shown_state()),
        ));
    }
    for (what, text) in [
        ("last error", &w.last_error),
        ("last exit", &w.last_exit),
        ("last stderr line", &w.last_stderr),
    ] {
        if let Some(text) = text {
            info.push(Line::styled(format!("{what}: {text}"), LOSS));
        }
    }
    let info_height = info.len() as u16;
    Paragraph::new(info)
        .wrap(Wrap { trim: true })
        .render(take(&mut rest, info_height + 1), buf);
    let counter_lines: Vec<Line> = w
        .counters
        .iter()
        .map(|(k, v)| Line::from(format!("{k:<28} {v}")))
        .collect();
    let counters_height = (counter_lines.len() as u16 + 2).min(rest.height / 2);
    let chart_area = Rect {
        height: rest.height - counters_height,
        ..rest
    };
    let counters_area = Rect {
        y: chart_area.bottom(),
        height: counters_height,
        ..rest
    };
    let first = w.proc_histogram.iter().position(|&c| c > 0).unwrap_or(0);
    let last = w.proc_histogram.iter().rposition(|&c| c > 0).unwrap_or(0);
    let (first, last) = (
        first.saturating_sub(1),
        (last + 1).min(w.proc_histogram.len().saturating_sub(1)),
    );
    let bars: Vec<Bar> = (first..=last)
        .filter_map(|b| w.proc_histogram.get(b).map(|&c| (b, c)))
        .map(|(b, c)| {
            Bar::default()
                .value(c)
                .label(Line::from(bucket_label(b)))
                .text_value(count(c))
        })
        .collect();
    BarChart::default()
        .block(Block::bordered().title(" processing time per frame (frames per bucket) "))
        .data(BarGroup::default().bars(&bars))
        .bar_width(5)
        .bar_gap(1)
        .bar_style(Style::new().fg(Color::Cyan))
        .render(chart_area, buf);
    Paragraph::new(counter_lines)
        .block(Block::bordered().title(format!(" {} counters ", s.processor)))
        .render(counters_area, buf);
}

fn confirm(app: &App, area: Rect, buf: &mut Buffer) {
    let name = app.pipeline.as_deref().unwrap_or("?");
    let popup = area.centered(
        Constraint::Length(60.min(area.width)),
        Constraint::Length(5),
    );
    Clear.render(popup, buf);
    Paragraph::new(vec![
        Line::from(format!("Stop pipeline '{name}'?")).bold(),
        Line::from("It drains what is in flight, then ends. y stops; any other key cancels."),
    ])
    .wrap(Wrap { trim: true })
    .block(Block::bordered().title(" stop ").border_style(WARN))
    .render(popup, buf);
}

/// The overview as plain text (`streamd top --once`): title, loss, the stage table and
/// the rings, `width` columns wide, trailing spaces trimmed.
pub fn overview_text(app: &App, width: u16) -> String {
    let rows = app.rows().len() as u16;
    let ring_count = app.snapshot.as_ref().map_or(0, Snapshot::ring_lines) as u16;
    let height = 2 + rows + 3 + ring_count + 2;
    let area = Rect::new(0, 0, width, height);
    let mut buf = Buffer::empty(area);
    let mut rest = area;
    title(app, take(&mut rest, 1), &mut buf);
    banner_line(app).render(take(&mut rest, 1), &mut buf);
    if let Some(snapshot) = &app.snapshot {
        stage_table(app, snapshot, take(&mut rest, rows + 3), &mut buf);
        rings(snapshot, rest, &mut buf);
    }
    let mut text = String::new();
    for y in 0..height {
        let line: String = (0..width)
            .map(|x| buf[(x, y)].symbol().to_string())
            .collect();
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}
