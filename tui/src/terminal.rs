//! The dashboard's loop on a real terminal: draw, wait for a key until the next tick,
//! handle it, refresh about ten times a second. The terminal is restored on every way
//! out: a key, an error, the `stop` flag (SIGINT, SIGTERM), a panic (ratatui's hook).

use crate::app::{Action, App};
use crate::model::Source;
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the counters are read.
pub const TICK: Duration = Duration::from_millis(100);

/// Runs the dashboard until the operator quits or `stop` is set.
pub fn run(source: &mut dyn Source, pipeline: Option<String>, stop: &AtomicBool) -> io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = event_loop(&mut terminal, source, App::new(pipeline), stop);
    ratatui::restore();
    source.close_live();
    result
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    source: &mut dyn Source,
    mut app: App,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut next_tick = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + TICK;
            let size = terminal.size()?;
            app.area = ratatui::layout::Rect::new(0, 0, size.width, size.height);
            app.refresh(source, Instant::now());
            if app.live.is_none() {
                source.close_live();
            }
        }
        terminal.draw(|frame| frame.render_widget(&app, frame.area()))?;
        if !event::poll(next_tick.saturating_duration_since(Instant::now()))? {
            continue;
        }
        let Event::Key(key) = event::read()? else {
            // A resize or anything else: drawn again at once.
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match app.key(key) {
            Some(Action::Quit) => break,
            Some(Action::Send(command)) => {
                let Some(pipeline) = app.pipeline.clone() else {
                    continue;
                };
                let reply = source.command(&pipeline, command).unwrap_or_else(|e| e);
                app.say(reply);
            }
            None => {}
        }
    }
    Ok(())
}
