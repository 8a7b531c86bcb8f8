//! `supervisor top`: a live table of one running supervisor's workers,
//! refreshed each second, sorted by CPU, with keys to act on a worker.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use multiloop_supervisor::control::{self, ControlAnswer, ControlRequest, StatusAnswer};
use multiloop_supervisor::{WorkerRow, WorkerState};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use crate::ctl::find_socket;
use crate::exit::ExitCode;

const REFRESH: Duration = Duration::from_secs(1);

/// `supervisor top [--pid PID]`
#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// The supervisor to watch; optional when only one is running.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// What the screen shows.
#[derive(Debug, Default)]
pub struct View {
    pub pid: u32,
    pub summary: String,
    /// Sorted by CPU, busiest first.
    pub rows: Vec<WorkerRow>,
    pub selected: usize,
    /// The answer to the last key, or an error.
    pub message: String,
}

impl View {
    /// Fills the view from a `status` answer.
    pub fn update(&mut self, status: StatusAnswer) {
        let mut rows = status.workers;
        rows.sort_by(|a, b| {
            b.cpu_percent
                .total_cmp(&a.cpu_percent)
                .then(a.index.cmp(&b.index))
        });
        let selected_index = self.rows.get(self.selected).map(|r| r.index);
        self.selected = selected_index
            .and_then(|index| rows.iter().position(|r| r.index == index))
            .unwrap_or(0);
        self.rows = rows;
        self.pid = status.pid;
        let p = &status.progress;
        self.summary = format!(
            "{} done  {} failed  {} read  {} restarts  {} workers alive",
            p.done, p.failed, p.read, p.restarts, p.alive
        );
    }

    fn selected_worker(&self) -> Option<usize> {
        self.rows.get(self.selected).map(|r| r.index)
    }

    fn active_workers(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.state != WorkerState::Retired)
            .count()
    }
}

/// Draws the whole screen.
pub fn render(frame: &mut Frame, view: &View) {
    let [title, table, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(2),
    ])
    .areas(frame.area());
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(format!("multiloop supervisor {}", view.pid))
                .style(Style::new().add_modifier(Modifier::BOLD)),
            Line::from(view.summary.clone()),
        ]),
        title,
    );
    let header = Row::new([
        "worker",
        "pid",
        "state",
        "in flight",
        "done",
        "failed",
        "restarts",
        "cpu %",
        "cpu s",
        "rss MiB",
        "lag ms",
        "max lag",
        "blocked",
        "loop",
    ])
    .style(Style::new().add_modifier(Modifier::REVERSED));
    let rows = view.rows.iter().map(|r| {
        Row::new([
            format!("w{}", r.index),
            r.pid.map_or("-".into(), |p| p.to_string()),
            r.state.to_string(),
            r.in_flight.to_string(),
            r.done.to_string(),
            r.failed.to_string(),
            r.restarts.to_string(),
            format!("{:.1}", r.cpu_percent),
            format!("{:.2}", r.cpu_us as f64 / 1e6),
            format!("{:.1}", r.rss_bytes as f64 / 1048576.0),
            format!("{:.1}", r.lag_us as f64 / 1e3),
            format!("{:.1}", r.max_lag_us as f64 / 1e3),
            format!("{:.0} %", r.blocked_share * 100.0),
            r.held.clone(),
        ])
    });
    let mut widths = [Constraint::Length(9); 14];
    widths[13] = Constraint::Min(24);
    let table_widget = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(" workers (busiest first) "))
        .row_highlight_style(
            Style::new()
                .add_modifier(Modifier::BOLD)
                .add_modifier(Modifier::UNDERLINED),
        )
        .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(Some(view.selected));
    frame.render_stateful_widget(table_widget, table, &mut state);
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(
                "↑/↓ select   r restart   k kill   + more workers   - fewer workers   q quit",
            ),
            Line::from(view.message.clone()),
        ]),
        footer,
    );
}

pub async fn main(args: &TopArgs) -> i32 {
    let path = match find_socket(args.pid) {
        Ok(path) => path,
        Err(error) => {
            eprintln!("supervisor top: {error:#}");
            return ExitCode::SomeFailed.into();
        }
    };
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        let mut terminal = ratatui::init();
        let result = run(&mut terminal, &handle, &path);
        ratatui::restore();
        result
    })
    .await;
    match result {
        Ok(Ok(())) => ExitCode::AllOk.into(),
        Ok(Err(error)) => {
            eprintln!("supervisor top: {error:#}");
            ExitCode::SomeFailed.into()
        }
        Err(error) => {
            eprintln!("supervisor top: {error}");
            ExitCode::SomeFailed.into()
        }
    }
}

fn run(
    terminal: &mut ratatui::DefaultTerminal,
    runtime: &tokio::runtime::Handle,
    path: &std::path::Path,
) -> Result<()> {
    let call = |request: ControlRequest| runtime.block_on(control::call(path, &request));
    let mut view = View::default();
    let mut next_refresh = Instant::now();
    loop {
        if Instant::now() >= next_refresh {
            match call(ControlRequest::Status).context("the supervisor is gone")? {
                ControlAnswer::Status(status) => view.update(status),
                ControlAnswer::Refused(error) => anyhow::bail!("{error}"),
                ControlAnswer::Ok => anyhow::bail!("malformed status answer"),
            }
            next_refresh = Instant::now() + REFRESH;
        }
        terminal.draw(|frame| render(frame, &view))?;
        if !event::poll(next_refresh.saturating_duration_since(Instant::now()))? {
            continue;
        }
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        let request = match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
            KeyCode::Up => {
                view.selected = view.selected.saturating_sub(1);
                None
            }
            KeyCode::Down => {
                view.selected = (view.selected + 1).min(view.rows.len().saturating_sub(1));
                None
            }
            KeyCode::Char('r') => view
                .selected_worker()
                .map(|worker| ControlRequest::Restart { worker }),
            KeyCode::Char('k') => view
                .selected_worker()
                .map(|worker| ControlRequest::Kill { worker }),
            KeyCode::Char('+') => Some(ControlRequest::Scale {
                workers: view.active_workers() + 1,
            }),
            KeyCode::Char('-') => Some(ControlRequest::Scale {
                workers: view.active_workers().saturating_sub(1).max(1),
            }),
            _ => None,
        };
        if let Some(request) = request {
            view.message = match call(request.clone()) {
                Ok(ControlAnswer::Refused(error)) => format!("{request:?}: {error}"),
                Ok(_) => format!("{request:?}: ok"),
                Err(error) => format!("{request:?}: {error}"),
            };
            next_refresh = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn answer() -> StatusAnswer {
        let value = serde_json::json!({
            "ok": true,
            "pid": 4242,
            "progress": {"done": 10, "failed": 1, "read": 20, "restarts": 2, "alive": 2},
            "workers": [
                {"index": 0, "pid": 100, "state": "running", "in_flight": 3, "done": 4, "failed": 0, "restarts": 1,
                 "cpu_percent": 12.5, "cpu_us": 1500000, "rss_bytes": 10485760, "peak_rss_bytes": 10485760, "lag_us": 800, "max_lag_us": 900},
                {"index": 1, "pid": 101, "state": "running", "in_flight": 5, "done": 6, "failed": 1, "restarts": 1,
                 "cpu_percent": 97.0, "cpu_us": 2500000, "rss_bytes": 20971520, "peak_rss_bytes": 20971520, "lag_us": 1200, "max_lag_us": 3000}
            ]
        });
        match serde_json::from_value(value).unwrap() {
            ControlAnswer::Status(status) => status,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn renders_the_table_busiest_first() {
        let mut view = View::default();
        view.update(answer());
        let mut terminal = Terminal::new(TestBackend::new(110, 12)).unwrap();
        terminal.draw(|frame| render(frame, &view)).unwrap();
        let screen: Vec<String> = {
            let buffer = terminal.backend().buffer();
            (0..buffer.area.height)
                .map(|y| {
                    (0..buffer.area.width)
                        .map(|x| buffer[(x, y)].symbol())
                        .collect()
                })
                .collect()
        };
        let text = screen.join("\n");
        assert!(text.contains("multiloop supervisor 4242"), "{text}");
        assert!(text.contains("10 done"), "{text}");
        let w1 = screen
            .iter()
            .position(|l| l.contains("w1"))
            .expect("w1 row");
        let w0 = screen
            .iter()
            .position(|l| l.contains("w0"))
            .expect("w0 row");
        assert!(w1 < w0, "sorted by CPU, busiest first:\n{text}");
        assert!(
            screen[w1].contains("> "),
            "the busiest is selected:\n{text}"
        );
        assert!(
            screen[w1].contains("97.0") && screen[w1].contains("101"),
            "{text}"
        );
    }

    #[test]
    fn selection_follows_the_worker_when_the_order_changes() {
        let mut view = View::default();
        view.update(answer());
        view.selected = 1; // w0
        let mut next = answer();
        next.workers[0].cpu_percent = 99.0;
        view.update(next);
        assert_eq!(view.selected_worker(), Some(0));
        assert_eq!(view.selected, 0);
    }
}
