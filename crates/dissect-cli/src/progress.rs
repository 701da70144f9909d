//! Progress on stderr, through indicatif: on a terminal one redrawn line with the rate and an
//! h:m:s ETA; in a log (stderr not a terminal) one plain line per tenth of the work, so CI logs
//! and `nohup` files stay readable.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    label: &'static str,
    unit: &'static str,
    bar: ProgressBar,
    tty: bool,
    last_tenth: Option<u64>,
}

impl Progress {
    pub fn new(label: &'static str, unit: &'static str) -> Self {
        let tty = std::io::stderr().is_terminal();
        // Off a terminal the bar draws nothing; it still keeps the count, rate and ETA.
        let target = if tty { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(None, target);
        let template = format!("{label}: {{pos}}/{{len}} {unit} [{{elapsed_precise}}, {{per_sec}}, ETA {{eta_precise}}] {{wide_bar}}");
        bar.set_style(ProgressStyle::with_template(&template).expect("a valid template"));
        Progress { label, unit, bar, tty, last_tenth: None }
    }

    pub fn update(&mut self, done: usize, total: usize) {
        let (done, total) = (done as u64, total as u64);
        self.bar.set_length(total);
        self.bar.set_position(done);
        if self.tty {
            return;
        }
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        if self.last_tenth == Some(tenth) {
            return;
        }
        self.last_tenth = Some(tenth);
        let elapsed = self.bar.elapsed();
        let rate = if elapsed.as_secs_f64() > 0.0 { done as f64 / elapsed.as_secs_f64() } else { 0.0 };
        let eta = if done == 0 { None } else { Some(self.bar.eta()) };
        eprintln!(
            "{}: {done}/{total} {}, {} elapsed, {rate:.2} {}/s, ETA {}",
            self.label,
            self.unit,
            hms(elapsed),
            self.unit,
            eta.map_or_else(|| "unknown".to_string(), hms)
        );
    }

    pub fn finish(&self) {
        self.bar.finish();
    }
}

/// `h:mm:ss`, as indicatif's `elapsed_precise` writes it on a terminal.
fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::hms;
    use std::time::Duration;

    #[test]
    fn durations_read_as_hours_minutes_seconds() {
        assert_eq!(hms(Duration::from_secs(0)), "0:00:00");
        assert_eq!(hms(Duration::from_secs(3 * 3600 + 7 * 60 + 9)), "3:07:09");
        assert_eq!(hms(Duration::from_secs(59 * 60 + 60)), "1:00:00");
    }
}
