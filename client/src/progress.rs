//! Progress of a running operation on one terminal line, as lxc's ProgressRenderer draws it
//! (`Retrieving image: rootfs: 45% (12.34MB/s)`, redrawn with `\r`), with a bar and an
//! estimated time left added when the status carries a percentage. Nothing is drawn when
//! stdout is not a terminal or with `--quiet`.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Bar width in cells.
const BAR: usize = 20;

/// A progress line; clones draw on the same line.
#[derive(Clone)]
pub struct Progress {
    format: String,
    enabled: bool,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    done: bool,
    /// The longest line drawn so far (what a shorter one must blank out).
    max_len: usize,
    /// The stage being timed (`rootfs`), when it started and at what percentage.
    stage: Option<(String, Instant, u32)>,
}

impl Progress {
    /// A line whose text is `format` with `%s` replaced by the status.
    pub fn new(format: &str) -> Self {
        let enabled = !crate::output::quiet() && std::io::stdout().is_terminal();
        Self::with(format, enabled)
    }

    fn with(format: &str, enabled: bool) -> Self {
        Progress {
            format: format.to_string(),
            enabled,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Whether anything will be drawn.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn is_done(&self) -> bool {
        self.lock().done
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shows the first `*_progress` key of an operation's metadata, as lxc's UpdateOp.
    pub fn update_op(&self, metadata: &Value) {
        let Some(m) = metadata.as_object() else {
            return;
        };
        // lxc takes whichever its map yields first; a fixed order keeps the line steady.
        let mut keys: Vec<&String> = m.keys().filter(|k| k.ends_with("_progress")).collect();
        keys.sort();
        if let Some(status) = keys.first().and_then(|k| m[*k].as_str()) {
            self.update(status);
        }
    }

    /// Redraws the line with a new status.
    pub fn update(&self, status: &str) {
        if !self.enabled {
            return;
        }
        let mut st = self.lock();
        if st.done {
            return;
        }
        let line = self.line(&mut st, status, Instant::now());
        let line = truncate(&line, terminal_width());
        let mut out = std::io::stdout().lock();
        if line.len() < st.max_len {
            let _ = write!(out, "\r{}", " ".repeat(st.max_len));
        }
        st.max_len = st.max_len.max(line.len());
        let _ = write!(out, "\r{line}");
        let _ = out.flush();
    }

    /// The text for `status` at `now`: lxc's, then the bar and the time left.
    fn line(&self, st: &mut State, status: &str, now: Instant) -> String {
        let text = self.format.replacen("%s", status, 1);
        let Some((stage, percent)) = parse_status(status) else {
            return text;
        };
        let restart = st
            .stage
            .as_ref()
            .is_none_or(|(s, _, p)| *s != stage || percent < *p);
        if restart {
            st.stage = Some((stage, now, percent));
        }
        let filled = (percent.min(100) as usize * BAR) / 100;
        let mut bar = "=".repeat(filled);
        if filled < BAR {
            bar.push('>');
            bar.push_str(&" ".repeat(BAR - filled - 1));
        }
        let mut line = format!("{text} [{bar}]");
        if let Some((_, since, from)) = &st.stage {
            let elapsed = now.duration_since(*since);
            if percent > *from && percent < 100 && elapsed >= Duration::from_secs(1) {
                let left =
                    elapsed.as_secs_f64() * f64::from(100 - percent) / f64::from(percent - from);
                line.push_str(&format!(" ETA {}", eta(left)));
            }
        }
        line
    }

    /// Ends the line: blanks it, then prints `msg` (with a newline) if any. As lxc,
    /// nothing happens when nothing was drawn and there is no message.
    pub fn done(&self, msg: &str) {
        let mut st = self.lock();
        if st.done {
            return;
        }
        st.done = true;
        if st.max_len == 0 {
            if !msg.is_empty() && !crate::output::quiet() {
                println!("{msg}");
            }
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r{}\r", " ".repeat(st.max_len));
        if !msg.is_empty() {
            let _ = writeln!(out, "{msg}");
        }
        let _ = out.flush();
    }
}

/// `rootfs: 45% (12.34MB/s)` → (`rootfs`, 45); None without a percentage.
fn parse_status(status: &str) -> Option<(String, u32)> {
    let pct = status.find('%')?;
    let digits_start = status[..pct]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let percent = status[digits_start..pct].parse().ok()?;
    let stage = status
        .split(':')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    Some((stage, percent))
}

/// Seconds left as `42s`, `3m05s` or `1h02m`.
fn eta(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Cuts a line to fit the terminal, as lxc does.
fn truncate(line: &str, width: usize) -> String {
    if width == 0 || line.chars().count() < width {
        return line.to_string();
    }
    line.chars().take(width.saturating_sub(1)).collect()
}

/// The terminal's width in columns (0 when unknown).
fn terminal_width() -> usize {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass, which lives on our stack.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 {
        usize::from(ws.ws_col)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_into_stage_and_percent() {
        assert_eq!(
            parse_status("rootfs: 45% (12.34MB/s)"),
            Some(("rootfs".into(), 45))
        );
        assert_eq!(
            parse_status("metadata: 100% (1.00MB/s)"),
            Some(("metadata".into(), 100))
        );
        assert_eq!(parse_status("Unpacking image"), None);
    }

    #[test]
    fn the_line_has_lxc_text_a_bar_and_time_left() {
        let p = Progress::with("Retrieving image: %s", true);
        let mut st = State::default();
        let t0 = Instant::now();
        assert_eq!(
            p.line(&mut st, "rootfs: 10% (1.00MB/s)", t0),
            "Retrieving image: rootfs: 10% (1.00MB/s) [==>                 ]"
        );
        // 20 points in 10 s: the 50 left take 25 s.
        assert_eq!(
            p.line(
                &mut st,
                "rootfs: 50% (1.00MB/s)",
                t0 + Duration::from_secs(20)
            ),
            "Retrieving image: rootfs: 50% (1.00MB/s) [==========>         ] ETA 25s"
        );
        assert_eq!(
            p.line(&mut st, "Unpacking", t0),
            "Retrieving image: Unpacking"
        );
        assert_eq!(eta(185.0), "3m05s");
        assert_eq!(eta(3720.0), "1h02m");
        assert_eq!(truncate("abcdef", 4), "abc");
    }

    #[test]
    fn a_disabled_line_draws_nothing() {
        let p = Progress::with("x %s", false);
        p.update("rootfs: 5%");
        assert_eq!(p.lock().max_len, 0);
        p.update_op(&serde_json::json!({"download_progress": "rootfs: 5%"}));
        assert_eq!(p.lock().max_len, 0);
    }
}
