//! NBD servers as subprocesses, for the `nbd` benchmark: qemu-nbd, nbdkit (its file and null
//! plugins) and any other program given by path (this crate's `nbd-server` example). Each is
//! started on a free loopback port and waited for until it accepts a connection; the guard it
//! returns reads the server's CPU time (utime + stime of all its threads, io_uring workers
//! included, from `/proc/<pid>/stat`) and stops it (SIGTERM, then SIGKILL) when dropped.

use std::fs;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::group::RunError;

/// How long a server may take to accept its first connection.
const START_LIMIT: Duration = Duration::from_secs(20);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// What `args` says where the port goes.
const PORT: &str = "{port}";

/// How to start one server: a program and its arguments, `{port}` standing for the port.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
}

/// qemu-nbd's `--cache` mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuCache {
    /// `--cache=writeback`: the page cache.
    Writeback,
    /// `--cache=none`: O_DIRECT.
    None,
}

impl ServerSpec {
    /// `program args...`, its stderr written to `log`.
    pub fn new(program: impl Into<PathBuf>, args: &[&str], log: &Path) -> ServerSpec {
        ServerSpec {
            program: program.into(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
            envs: Vec::new(),
            log: log.to_owned(),
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> ServerSpec {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    /// `qemu-nbd -f raw --aio=io_uring --cache=MODE` serving `image`, persistent (`-t`), up to
    /// 8 clients at once.
    pub fn qemu_nbd(image: &Path, cache: QemuCache, log: &Path) -> ServerSpec {
        let cache = match cache {
            QemuCache::Writeback => "--cache=writeback",
            QemuCache::None => "--cache=none",
        };
        let image = image.to_string_lossy();
        let args = ["-f", "raw", "--aio=io_uring", cache, "-t", "-e", "8"];
        let address = ["-b", "127.0.0.1", "-p", PORT, &image];
        ServerSpec::new("qemu-nbd", &[&args[..], &address[..]].concat(), log)
    }

    /// `nbdkit PLUGIN ARGS...` in the foreground, exiting with the harness.
    pub fn nbdkit(plugin_args: &[&str], log: &Path) -> ServerSpec {
        let args = ["-f", "--exit-with-parent", "-i", "127.0.0.1", "-p", PORT];
        ServerSpec::new("nbdkit", &[&args[..], plugin_args].concat(), log)
    }

    /// Starts the server and waits until it accepts a connection.
    ///
    /// # Errors
    ///
    /// A failure (with the end of its log) if it cannot be spawned, exits, or does not accept in
    /// time.
    pub fn start(&self) -> Result<Running, RunError> {
        let port = free_port()?;
        let log = fs::File::create(&self.log)?;
        let args = self
            .args
            .iter()
            .map(|arg| arg.replace(PORT, &port.to_string()));
        let child = Command::new(&self.program)
            .args(args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|error| {
                RunError::Fail(format!("cannot start {}: {error}", self.program.display()))
            })?;
        let mut running = Running {
            child,
            port,
            log: self.log.clone(),
        };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(running);
            }
            if let Ok(Some(status)) = running.child.try_wait() {
                return Err(RunError::Fail(format!(
                    "{} exited ({status}) before accepting: {}",
                    self.program.display(),
                    running.log_tail()
                )));
            }
            if Instant::now() > deadline {
                return Err(RunError::Fail(format!(
                    "{} did not accept within {START_LIMIT:?}: {}",
                    self.program.display(),
                    running.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A running server; dropping it stops it.
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// The loopback port it serves on.
    pub port: u16,
    log: PathBuf,
}

impl Running {
    /// `nbd://127.0.0.1:PORT`.
    pub fn uri(&self) -> String {
        format!("nbd://127.0.0.1:{}", self.port)
    }

    /// CPU seconds the server's threads have used so far (user + system).
    pub fn cpu_seconds(&self) -> Result<f64, RunError> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name, which is in parentheses and may hold spaces: state is
        // field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |index: usize| -> Result<f64, RunError> {
            let field = fields.get(index).ok_or_else(|| {
                RunError::Fail(format!("/proc/{}/stat: too few fields", self.child.id()))
            })?;
            field
                .parse::<f64>()
                .map_err(|e| RunError::Fail(format!("/proc/.../stat: {e}")))
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok((ticks(11)? + ticks(12)?) / hz)
    }

    /// Stops the server (SIGTERM, so it shuts down cleanly) and returns its stderr.
    pub fn stop(self) -> String {
        let log = self.log.clone();
        drop(self);
        fs::read_to_string(log).unwrap_or_default()
    }

    /// The last lines of the server's stderr.
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped (so its pid is still ours).
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16, RunError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// `program --version`'s first line, or why the program cannot run.
pub fn version(program: &str, package: &str) -> Result<String, String> {
    match Command::new(program).arg("--version").output() {
        Ok(output) if output.status.success() => Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or(program)
            .trim()
            .to_owned()),
        Ok(output) => Err(format!("`{program} --version` failed: {}", output.status)),
        Err(error) => Err(format!(
            "{program} not installed ({error}); install it with `apt-get install {package}`"
        )),
    }
}
