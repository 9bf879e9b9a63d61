//! The listener and the life of each connection: bind (with
//! `SO_REUSEADDR` and a deep backlog), accept, hand the socket to a pool
//! member, and there run the handshake and the transmission phase; and the
//! shutdown that stops accepting and waits for every connection to finish.
//!
//! The accept loop only accepts: each socket leaves it at once for the
//! home thread of the member [`context_for_connection`] picks, where its
//! handshake, requests and disk ops all run.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::connection::{Closing, Connection, Summary};
use crate::handshake::{self, Outcome};
use crate::member::Member;
use crate::request;

/// Pending connections the kernel queues for us.
const BACKLOG: u32 = 1024;

/// Binds the listening socket.
///
/// # Errors
///
/// The socket calls' errors (`EADDRINUSE` for a port in use).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Which pool member serves connection number `connection` (counted from
/// 0), given how many connections each serves now (`live`): the one with
/// the fewest, ties going round robin. A connection stays on its member
/// for its whole life, so placing by what is open now keeps long-lived
/// connections spread even after others have come and gone.
///
/// # Panics
///
/// If `live` is empty.
pub fn context_for_connection(live: &[usize], connection: u64) -> usize {
    let members = live.len();
    let first = (connection % members as u64) as usize;
    (0..members)
        .map(|i| (first + i) % members)
        .min_by_key(|&i| live[i])
        .expect("a pool has at least one member")
}

/// How each connection is run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub handshake_timeout: Duration,
}

/// Accepts connections until `stop` resolves, then signals every
/// connection to shut down and waits (at most `grace`) for them to finish.
/// Returns how many were still running when the wait gave up.
pub async fn run(
    listener: TcpListener,
    members: &[Arc<Member>],
    limits: Limits,
    grace: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> usize {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Every connection holds a sender; when all are dropped, all are done.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    // Connections still running, for the log and the exit status (a count
    // read for reporting only, so Relaxed is enough).
    let running = Arc::new(AtomicUsize::new(0));
    let mut accepted = 0u64;
    tokio::pin!(stop);
    loop {
        let accept = tokio::select! {
            () = &mut stop => break,
            accept = listener.accept() => accept,
        };
        let (stream, peer) = match accept {
            Ok(pair) => pair,
            Err(error) => {
                // Out of fds or a connection reset before we took it: keep
                // serving the others, and do not spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let live: Vec<usize> = members.iter().map(|member| member.live()).collect();
        let member = members[context_for_connection(&live, accepted)].clone();
        accepted += 1;
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%peer, %error, "cannot hand the connection to a context");
                continue;
            }
        };
        let shutdown = shutdown_rx.clone();
        let alive = Alive::new(&running, &alive_tx, &member);
        let context = member.context.clone();
        drop(context.spawn(async move {
            let _alive = alive;
            serve_client(stream, peer, &member, limits, shutdown).await;
        }));
    }
    drop(listener);
    tracing::info!(
        running = running.load(Ordering::Relaxed),
        "shutting down: no longer accepting, finishing in-flight requests"
    );
    let _ = shutdown_tx.send(true);
    drop(alive_tx);
    if tokio::time::timeout(grace, alive_rx.recv()).await.is_err() {
        return running.load(Ordering::Relaxed);
    }
    0
}

/// A running connection's mark: counted (in all and on its member) while
/// it lives, and released however its task ends (done, panicked, or
/// dropped with its context).
struct Alive {
    running: Arc<AtomicUsize>,
    member: Arc<Member>,
    _sender: mpsc::Sender<()>,
}

impl Alive {
    fn new(running: &Arc<AtomicUsize>, sender: &mpsc::Sender<()>, member: &Arc<Member>) -> Alive {
        running.fetch_add(1, Ordering::Relaxed);
        member.join();
        Alive {
            running: running.clone(),
            member: member.clone(),
            _sender: sender.clone(),
        }
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.member.leave();
        self.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection, on its member's home thread: handshake, then requests.
async fn serve_client(
    stream: std::net::TcpStream,
    peer: SocketAddr,
    member: &Member,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut stream = match TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%peer, %error, "cannot register the connection");
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    tracing::info!(%peer, context = member.index, "connection opened");
    let disk = member.disk.clone();

    let outcome = tokio::select! {
        outcome = tokio::time::timeout(limits.handshake_timeout, handshake::negotiate(&mut stream, &disk.export)) => outcome,
        _ = shutdown.wait_for(|down| *down) => {
            tracing::info!(%peer, "connection closed during the handshake: shutting down");
            return;
        }
    };
    match outcome {
        Ok(Ok(Outcome::Transmission)) => {}
        Ok(Ok(Outcome::Closed)) => {
            tracing::info!(%peer, "connection closed during the handshake");
            return;
        }
        Ok(Ok(Outcome::Refused(reason))) => {
            tracing::warn!(%peer, %reason, "handshake refused");
            return;
        }
        Ok(Err(error)) => {
            tracing::warn!(%peer, %error, "handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, timeout = ?limits.handshake_timeout, "handshake timed out");
            return;
        }
    }
    tracing::debug!(%peer, size = disk.export.size, "transmission begins");

    let summary = Connection::new(stream, peer, disk, member.buffers.clone(), request::execute)
        .serve(shutdown)
        .await;
    let why = match &summary.closing {
        Some(Closing::Eof) => "client closed".to_owned(),
        Some(Closing::Disconnect) => "client disconnected".to_owned(),
        Some(Closing::Shutdown) => "server shutdown".to_owned(),
        Some(Closing::Violation(what)) => format!("protocol violation: {what}"),
        Some(Closing::Error(error)) => format!("socket error: {error}"),
        None => "unknown".to_owned(),
    };
    let broken = matches!(
        summary.closing,
        Some(Closing::Violation(_)) | Some(Closing::Error(_))
    ) || summary.write_error.is_some();
    let Summary {
        requests,
        refused,
        fixed,
        io_errors,
        ..
    } = summary;
    if broken {
        tracing::warn!(%peer, why, requests, refused, fixed, io_errors, "connection closed");
    } else {
        tracing::info!(%peer, why, requests, refused, fixed, io_errors, "connection closed");
    }
}
