//! The liveness guard: a watchdog that ends the process, saying where it
//! stuck, when no op completes for a while; and the replay line printed with
//! any failure.

use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::Config;

/// Written straight to fd 2, past the test harness's capture: the watchdog
/// ends the process, so captured output would be lost.
pub(crate) fn say(line: &str) {
    let _ = writeln!(io::stderr(), "{line}");
}

/// What every actor is doing, for the watchdog's report.
pub(crate) struct Status {
    pub(crate) progress: AtomicU64,
    pub(crate) doing: Mutex<Vec<String>>,
}

pub(crate) fn status() -> &'static Status {
    static STATUS: OnceLock<Status> = OnceLock::new();
    STATUS.get_or_init(|| Status {
        progress: AtomicU64::new(0),
        doing: Mutex::new(Vec::new()),
    })
}

pub(crate) fn set_doing(actor: usize, what: String) {
    let mut doing = status().doing.lock().unwrap_or_else(|p| p.into_inner());
    if doing.len() <= actor {
        doing.resize(actor + 1, String::new());
    }
    doing[actor] = what;
}

/// Ends the process if no op completes for `config.stall`: a kept future that
/// never resolves would otherwise hang the suite without saying where.
pub(crate) fn start_watchdog(config: &Config) {
    let config = config.clone();
    std::thread::spawn(move || {
        let mut last = status().progress.load(SeqCst);
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = status().progress.load(SeqCst);
            if now != last {
                last = now;
                since = Instant::now();
                continue;
            }
            if since.elapsed() >= config.stall {
                say(&format!(
                    "stress: no progress for {:?}: a future never resolved.\nreplay: {}",
                    config.stall,
                    config.replay_line()
                ));
                let doing = status().doing.lock().unwrap_or_else(|p| p.into_inner());
                for (actor, what) in doing.iter().enumerate() {
                    say(&format!("  actor {actor}: {what}"));
                }
                std::process::exit(101);
            }
        }
    });
}

/// Prints the replay line with any panic, on whichever thread it happens.
pub(crate) fn report_seed_on_panic(config: &Config) {
    let replay = config.replay_line();
    let default = std::panic::take_hook();
    let said = AtomicBool::new(false);
    std::panic::set_hook(Box::new(move |info| {
        if !said.swap(true, SeqCst) {
            say(&format!("stress failed; replay: {replay}"));
        }
        default(info);
    }));
}
