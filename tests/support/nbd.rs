//! Helpers for the `nbd_*` tests: the `nbd-server` example started as a
//! child process (killed when its guard drops), scratch images under the
//! target dir (never tmpfs, so O_DIRECT works), client tools found on PATH
//! or skipped with a printed reason, commands bounded in time, and a small
//! raw-socket NBD client written from the protocol text, independent of the
//! server's own code.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The example binary `cargo test` built next to this test's executable
/// (`target/<profile>/examples/nbd-server`).
pub fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let binary = profile_dir.join("examples").join("nbd-server");
    assert!(
        binary.exists(),
        "{} is missing: `cargo test` builds it; with `--test NAME` run \
         `cargo build --example nbd-server` (same profile) first",
        binary.display()
    );
    warn_if_stale(&binary);
    binary
}

/// `cargo test --test NAME` does not rebuild examples: say so when the
/// binary is older than its sources, since a failure may come from that.
fn warn_if_stale(binary: &Path) {
    let built = std::fs::metadata(binary).and_then(|m| m.modified());
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nbd-server");
    let newest = std::fs::read_dir(sources)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.metadata().and_then(|m| m.modified()).ok())
        .max();
    if let (Ok(built), Some(newest)) = (built, newest)
        && newest > built
    {
        eprintln!(
            "warning: {} is older than examples/nbd-server/: rebuild it with \
             `cargo build --example nbd-server` (plain `cargo test` does)",
            binary.display()
        );
    }
}

/// Extra server arguments the suite's environment asks for: with
/// `AIOCTX_BACKEND=fallback` the server runs on the thread-pool fallback.
fn backend_args() -> Vec<String> {
    match std::env::var("AIOCTX_BACKEND").as_deref() {
        Ok(backend @ ("fallback" | "uring" | "auto")) => vec!["--backend".into(), backend.into()],
        _ => Vec::new(),
    }
}

/// A scratch directory under the target dir, removed when dropped (kept
/// when the test fails, for a look at the images and the server's log).
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("nbd-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch dir");
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A file of `data`.
    pub fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, data).expect("write a scratch file");
        path
    }

    /// A file of `size` random bytes from `seed`.
    pub fn random_image(&self, name: &str, size: usize, seed: u64) -> PathBuf {
        self.file(name, &random_bytes(seed, size))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("scratch files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `len` bytes of a xorshift stream: the same for the same seed.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.max(1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The first offset where `a` and `b` differ, for assertion messages.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Asserts two byte strings are equal without printing megabytes.
#[track_caller]
pub fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if let Some(at) = first_difference(actual, expected) {
        panic!(
            "{what}: differs at byte {at} (lengths {} and {}): {:?} vs {:?}",
            actual.len(),
            expected.len(),
            actual.get(at..at + 16),
            expected.get(at..at + 16)
        );
    }
}

/// A running `nbd-server`; dropping it kills it.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
}

impl Server {
    /// Starts the server on `image` with `args`, on a free port.
    ///
    /// # Panics
    ///
    /// If it does not start; the message carries its log.
    pub fn start(image: &Path, args: &[&str]) -> Server {
        match Server::try_start(image, args) {
            Ok(server) => server,
            Err((status, log)) => panic!("nbd-server did not start ({status:?}):\n{log}"),
        }
    }

    /// Starts the server; on failure its exit status (if it exited) and its
    /// log.
    pub fn try_start(image: &Path, args: &[&str]) -> Result<Server, (Option<ExitStatus>, String)> {
        Server::try_start_on_port(image, args, 0)
    }

    pub fn try_start_on_port(
        image: &Path,
        args: &[&str],
        port: u16,
    ) -> Result<Server, (Option<ExitStatus>, String)> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let log = image.with_file_name(format!(
            "server-{}.log",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let log_file = std::fs::File::create(&log).expect("create the server log");
        let mut child = Command::new(server_binary())
            .args(args)
            .args(backend_args())
            .args(["--port", &port.to_string()])
            .arg(image)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn nbd-server");
        // The server prints "listening on ADDR" once it accepts connections.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|port| port.parse().ok());
        match port {
            Some(port) => Ok(Server {
                child: Some(child),
                port,
                log,
            }),
            None => {
                let status = wait_timeout(&mut child, Duration::from_secs(10));
                if status.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                Err((status, std::fs::read_to_string(&log).unwrap_or_default()))
            }
        }
    }

    pub fn uri(&self) -> String {
        format!("nbd://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` and waits (bounded) for the exit.
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped.
        unsafe { libc::kill(self.pid(), signal) };
        let mut child = self.child.take().expect("running");
        let status = match wait_timeout(&mut child, Duration::from_secs(60)) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nbd-server ignored signal {signal}:\n{}", self.log());
            }
        };
        let log = self.log();
        assert!(
            !log.contains("panicked"),
            "a task of the server panicked:\n{log}"
        );
        status
    }

    /// Kills the server with SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Whether the server is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- nbd-server log ---\n{}", self.log());
        }
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether every tool is on PATH; prints why the test skips if not.
pub fn have_tools(tools: &[&str]) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in tools {
        if !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()) {
            eprintln!(
                "skipping: `{tool}` is not installed (apt-get install qemu-utils libnbd-bin nbdkit fio)"
            );
            return false;
        }
    }
    true
}

/// Runs `command` to completion, killing it after `limit`.
///
/// # Panics
///
/// On a timeout.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let status = match wait_timeout(&mut child, limit) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {limit:?}");
        }
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Runs `command`; panics with its output unless it succeeds. Returns stdout.
#[track_caller]
pub fn run_ok(command: &mut Command) -> String {
    let output = run_bounded(command, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

// The protocol's numbers, written out again from doc/proto.md so that the
// client does not share a mistake with the server.
pub const NBDMAGIC: u64 = 0x4e42444d41474943;
pub const IHAVEOPT: u64 = 0x49484156454F5054;
pub const REPLY_MAGIC: u64 = 0x3e889045565a9;
pub const REQUEST_MAGIC: u32 = 0x25609513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x67446698;
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_EXTENDED_HEADERS: u32 = 11;
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
pub const REP_ERR_INVALID: u32 = 0x8000_0003;
pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const FLAG_FUA: u16 = 1;
pub const FLAG_NO_HOLE: u16 = 2;
pub const EPERM: u32 = 1;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;

/// One option reply.
#[derive(Debug)]
pub struct OptionReply {
    pub option: u32,
    pub kind: u32,
    pub data: Vec<u8>,
}

/// A raw NBD client over a blocking socket, for the cases real clients
/// never produce.
pub struct Client {
    pub stream: TcpStream,
    pub size: u64,
    pub flags: u16,
}

impl Client {
    /// Connects and reads the greeting; returns the socket before the client
    /// flags are sent.
    pub fn greet(port: u16) -> TcpStream {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut greeting = [0u8; 18];
        stream.read_exact(&mut greeting).expect("greeting");
        assert_eq!(
            u64::from_be_bytes(greeting[0..8].try_into().unwrap()),
            NBDMAGIC
        );
        assert_eq!(
            u64::from_be_bytes(greeting[8..16].try_into().unwrap()),
            IHAVEOPT
        );
        let handshake_flags = u16::from_be_bytes(greeting[16..18].try_into().unwrap());
        assert_eq!(handshake_flags, 0b11, "FIXED_NEWSTYLE | NO_ZEROES");
        stream
    }

    /// Sends an option.
    pub fn send_option(stream: &mut TcpStream, option: u32, data: &[u8]) {
        let mut out = IHAVEOPT.to_be_bytes().to_vec();
        out.extend_from_slice(&option.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
        stream.write_all(&out).expect("send option");
    }

    /// Reads one option reply.
    pub fn option_reply(stream: &mut TcpStream) -> OptionReply {
        let mut header = [0u8; 20];
        stream.read_exact(&mut header).expect("option reply header");
        assert_eq!(
            u64::from_be_bytes(header[0..8].try_into().unwrap()),
            REPLY_MAGIC
        );
        let option = u32::from_be_bytes(header[8..12].try_into().unwrap());
        let kind = u32::from_be_bytes(header[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(header[16..20].try_into().unwrap());
        let mut data = vec![0u8; len as usize];
        stream.read_exact(&mut data).expect("option reply data");
        OptionReply { option, kind, data }
    }

    /// The data of `NBD_OPT_GO`/`INFO` for `name`, asking for block sizes.
    pub fn go_data(name: &str) -> Vec<u8> {
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&3u16.to_be_bytes());
        data
    }

    /// Connects with `NBD_OPT_GO` on the default export.
    pub fn connect(port: u16) -> Client {
        let mut stream = Client::greet(port);
        stream.write_all(&3u32.to_be_bytes()).unwrap();
        Client::send_option(&mut stream, OPT_GO, &Client::go_data(""));
        Client::finish_go(stream)
    }

    /// Reads the replies to a GO until its ACK.
    pub fn finish_go(mut stream: TcpStream) -> Client {
        let (mut size, mut flags) = (None, 0);
        loop {
            let reply = Client::option_reply(&mut stream);
            assert_eq!(reply.option, OPT_GO);
            match reply.kind {
                REP_INFO if reply.data[0..2] == [0, 0] => {
                    size = Some(u64::from_be_bytes(reply.data[2..10].try_into().unwrap()));
                    flags = u16::from_be_bytes(reply.data[10..12].try_into().unwrap());
                }
                REP_INFO => {}
                REP_ACK => break,
                other => panic!("GO failed with reply {other:#x}"),
            }
        }
        Client {
            stream,
            size: size.expect("GO succeeded without NBD_INFO_EXPORT"),
            flags,
        }
    }

    /// Sends one request (and its payload) without waiting.
    pub fn send(
        &mut self,
        flags: u16,
        kind: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) {
        let mut out = Vec::with_capacity(28 + payload.len());
        out.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&cookie.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        self.stream.write_all(&out).expect("send request");
    }

    /// Reads one simple reply header: (cookie, error).
    pub fn reply(&mut self) -> (u64, u32) {
        let mut header = [0u8; 16];
        self.stream.read_exact(&mut header).expect("reply header");
        assert_eq!(
            u32::from_be_bytes(header[0..4].try_into().unwrap()),
            SIMPLE_REPLY_MAGIC,
            "simple reply magic"
        );
        (
            u64::from_be_bytes(header[8..16].try_into().unwrap()),
            u32::from_be_bytes(header[4..8].try_into().unwrap()),
        )
    }

    /// Reads `len` bytes of reply data.
    pub fn data(&mut self, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        self.stream.read_exact(&mut data).expect("reply data");
        data
    }

    /// One request, its reply's error (and data for a successful read).
    pub fn call(
        &mut self,
        flags: u16,
        kind: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) -> (u32, Vec<u8>) {
        let cookie = 0x5eed_0000 ^ offset ^ u64::from(kind) << 48;
        self.send(flags, kind, cookie, offset, len, payload);
        let (got, error) = self.reply();
        assert_eq!(got, cookie, "reply for another request");
        let data = if kind == CMD_READ && error == 0 {
            self.data(len as usize)
        } else {
            Vec::new()
        };
        (error, data)
    }

    #[track_caller]
    pub fn read(&mut self, offset: u64, len: u32) -> Vec<u8> {
        let (error, data) = self.call(0, CMD_READ, offset, len, &[]);
        assert_eq!(error, 0, "read {len} at {offset}");
        data
    }

    #[track_caller]
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let (error, _) = self.call(0, CMD_WRITE, offset, data.len() as u32, data);
        assert_eq!(error, 0, "write {} at {offset}", data.len());
    }

    #[track_caller]
    pub fn flush(&mut self) {
        let (error, _) = self.call(0, CMD_FLUSH, 0, 0, &[]);
        assert_eq!(error, 0, "flush");
    }

    /// `NBD_CMD_DISC`, then waits for the server to close.
    pub fn disconnect(mut self) {
        self.send(0, CMD_DISC, 0, 0, 0, &[]);
        let mut rest = Vec::new();
        let _ = self.stream.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "the server sent {} bytes after DISC",
            rest.len()
        );
    }

    /// Whether the server has closed the connection (reads EOF or a reset
    /// within the read timeout).
    pub fn closed_by_server(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        loop {
            match stream.read(&mut byte) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}
