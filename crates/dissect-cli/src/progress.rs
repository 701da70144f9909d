//! Progress with an ETA on stderr: one rewritten line on a terminal, a line per tenth in a log.

use std::io::IsTerminal;
use std::time::Instant;

pub struct Progress {
    label: &'static str,
    unit: &'static str,
    started: Instant,
    tty: bool,
    last_tenth: usize,
}

impl Progress {
    pub fn new(label: &'static str, unit: &'static str) -> Self {
        Progress { label, unit, started: Instant::now(), tty: std::io::stderr().is_terminal(), last_tenth: usize::MAX }
    }

    pub fn update(&mut self, done: usize, total: usize) {
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        if !self.tty && tenth == self.last_tenth {
            return;
        }
        self.last_tenth = tenth;
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = if done == 0 { 0.0 } else { elapsed / done as f64 * (total - done) as f64 };
        let line = format!("{}: {done}/{total} {}, {elapsed:.0}s elapsed, ETA {eta:.0}s", self.label, self.unit);
        if self.tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }

    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
