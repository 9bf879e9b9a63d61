//! The transmission phase of one connection: receiving requests, running
//! them concurrently, and sending replies as they complete, out of order,
//! each with its request's cookie.
//!
//! One task does all three, in turns, on the home thread of the context the
//! connection was given (so every disk op is a local submission):
//!
//! ```text
//!            ┌──────────── one poll of the connection task ───────────────┐
//!  socket ──►│ receive: read into `input`, parse every whole request,     │
//!            │   plan it; a job goes into `in_flight`, a refusal straight  │
//!            │   to the outbox. A WRITE's payload is read straight into    │
//!            │   its op buffer once the header is parsed.                  │
//!            │ complete: collect finished jobs (any order) into the outbox │
//!            │ send: one writev of every queued reply (headers + read data)│──► socket
//!            └─ repeat while any step made progress, then wait for the     ┘
//!               socket, a completion, or shutdown
//! ```
//!
//! Batching falls out of the turns: one `read` takes every request the
//! client has sent, their ops reach the ring together at the driver's next
//! `io_uring_enter`, and every reply finished meanwhile goes out in one
//! `writev`. Buffers come from a per-connection pool (registered ones from
//! the member's set, see `bufpool.rs`) and go back when their reply is on
//! the wire; the per-request allocations left are the job's slot in
//! `FuturesUnordered` and the crate's cell for each op.
//!
//! The receive side stops at the client's EOF, `NBD_CMD_DISC`, a protocol
//! violation, a socket error, or shutdown; jobs already running always
//! finish (a write that was received is written, and its buffer stays with
//! the op until the kernel is done), their replies are sent if the socket
//! still works, and then the connection closes.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::bufpool::{BufPool, Buffer, FixedClasses};
use crate::disk::Disk;
use crate::outbox::Outbox;
use crate::proto::{self, Request};
use crate::request::{self, Done, Job, Plan};

/// Requests one connection may have running at once; past it the server
/// stops reading until some finish.
const MAX_IN_FLIGHT: usize = 256;
/// Buffer bytes one connection's running requests may hold.
const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;
/// Reply bytes queued for a client that does not read them, before the
/// server stops reading its requests.
const MAX_OUTBOX_BYTES: usize = 64 << 20;
/// How much `input` grows by when it runs out of room.
const INPUT_CHUNK: usize = 256 << 10;
/// Rounds of one poll before the task yields to others on the thread.
const MAX_ROUNDS: usize = 64;
/// How long a closing connection reads and drops what the client still
/// sends, so the kernel does not reset the connection over unread data
/// before the client has read the last replies.
const LINGER: Duration = Duration::from_secs(2);

/// Why the receive side stopped.
#[derive(Debug)]
pub enum Closing {
    /// The client closed its side.
    Eof,
    /// `NBD_CMD_DISC`.
    Disconnect,
    /// The server is shutting down.
    Shutdown,
    /// The client broke the protocol.
    Violation(String),
    /// The socket failed.
    Error(io::Error),
}

/// What a connection did, for the log line at its close.
#[derive(Debug, Default)]
pub struct Summary {
    pub requests: u64,
    pub refused: u64,
    /// Requests whose disk I/O used a registered buffer.
    pub fixed: u64,
    pub io_errors: u64,
    pub closing: Option<Closing>,
    pub write_error: Option<io::Error>,
}

/// What woke [`Connection::serve`].
enum Event {
    Signalled,
    ServerGone,
    Finished,
}

/// A write whose header is parsed and whose payload is still arriving,
/// straight into the buffer its op will take.
struct PendingWrite {
    request: Request,
    buf: Buffer,
    head: usize,
    filled: usize,
}

/// The transmission phase of one connection. `Fut` is the type of
/// [`request::execute`]'s future, named through the function pointer.
pub struct Connection<Fut> {
    stream: TcpStream,
    peer: SocketAddr,
    disk: Arc<Disk>,
    execute: fn(Arc<Disk>, Job) -> Fut,
    input: BytesMut,
    pending_write: Option<PendingWrite>,
    in_flight: FuturesUnordered<Fut>,
    in_flight_bytes: usize,
    outbox: Outbox,
    pool: BufPool,
    reading: bool,
    write_failed: bool,
    summary: Summary,
}

impl<Fut: Future<Output = Done>> Connection<Fut> {
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        disk: Arc<Disk>,
        fixed: Option<Arc<FixedClasses>>,
        execute: fn(Arc<Disk>, Job) -> Fut,
    ) -> Self {
        let pool = BufPool::new(disk.export.buffer_alignment(), fixed);
        Connection {
            stream,
            peer,
            disk,
            execute,
            input: BytesMut::with_capacity(INPUT_CHUNK),
            pending_write: None,
            in_flight: FuturesUnordered::new(),
            in_flight_bytes: 0,
            outbox: Outbox::default(),
            pool,
            reading: true,
            write_failed: false,
            summary: Summary::default(),
        }
    }

    /// Serves requests until the connection is done; `shutdown` turning
    /// `true` stops the receive side (requests already received but not
    /// started are answered `NBD_ESHUTDOWN`).
    pub async fn serve(mut self, mut shutdown: watch::Receiver<bool>) -> Summary {
        let mut shutting = false;
        loop {
            if !shutting && *shutdown.borrow_and_update() {
                shutting = true;
                self.begin_shutdown();
            }
            let event = tokio::select! {
                biased;
                changed = shutdown.changed(), if !shutting => match changed {
                    Ok(()) => Event::Signalled,
                    // The server is gone: shut down as for a signal.
                    Err(_) => Event::ServerGone,
                },
                () = poll_fn(|cx| self.poll_turn(cx)) => Event::Finished,
            };
            match event {
                Event::Signalled => {}
                Event::ServerGone => {
                    shutting = true;
                    self.begin_shutdown();
                }
                Event::Finished => break,
            }
        }
        self.close().await;
        self.summary
    }

    /// One poll: turns until nothing makes progress (then `Pending`, with a
    /// waker registered on whatever can), or the connection is done.
    fn poll_turn(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        for _ in 0..MAX_ROUNDS {
            let completed = self.poll_complete(cx);
            let received = self.poll_receive(cx);
            let sent = self.poll_send(cx);
            if self.is_done() {
                return Poll::Ready(());
            }
            if !(completed || received || sent) {
                return Poll::Pending;
            }
        }
        // Busy: let the other connections on this thread (and the driver) run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn is_done(&self) -> bool {
        !self.reading
            && self.pending_write.is_none()
            && self.in_flight.is_empty()
            && (self.outbox.is_empty() || self.write_failed)
    }

    fn has_room(&self) -> bool {
        self.in_flight.len() < MAX_IN_FLIGHT
            && self.in_flight_bytes < MAX_IN_FLIGHT_BYTES
            && self.outbox.bytes < MAX_OUTBOX_BYTES
    }

    /// Collects finished jobs; whether any finished. An empty set returns
    /// `Ready(None)`, registering nothing: a push is always followed by
    /// another round.
    fn poll_complete(&mut self, cx: &mut TaskContext<'_>) -> bool {
        let mut progress = false;
        while let Poll::Ready(Some(done)) = self.in_flight.poll_next_unpin(cx) {
            self.finish(done);
            progress = true;
        }
        progress
    }

    fn finish(&mut self, done: Done) {
        self.in_flight_bytes -= done.charge;
        let buf = done
            .recycle
            .as_ref()
            .or(done.data.as_ref().map(|(buf, _, _)| buf));
        if matches!(buf, Some(Buffer::Fixed(_))) {
            self.summary.fixed += 1;
        }
        if let Some(buf) = done.recycle {
            self.pool.give(buf);
        }
        if let Some(error) = done.io_error {
            self.summary.io_errors += 1;
            if self.summary.io_errors == 1 {
                tracing::warn!(peer = %self.peer, %error, "disk I/O failed (further errors on this connection are counted)");
            }
        }
        let header = proto::simple_reply(done.cookie, done.error);
        if self.write_failed {
            if let Some((buf, _, _)) = done.data {
                self.pool.give(buf);
            }
            return;
        }
        self.outbox.push(header, done.data);
    }

    /// Receives and plans what it can; whether it made progress. When it
    /// returns `false` either a read waker is registered, or there is no
    /// room (a running job or a queued reply will wake the task), or the
    /// receive side is closed.
    fn poll_receive(&mut self, cx: &mut TaskContext<'_>) -> bool {
        if !self.reading {
            return false;
        }
        if self.pending_write.is_some() {
            return self.poll_payload(cx);
        }
        if !self.has_room() {
            return false;
        }
        if self.parse_input() {
            return true;
        }
        if self.pending_write.is_some() || !self.reading {
            return true;
        }
        self.poll_fill_input(cx)
    }

    /// Plans every whole request in `input`, as far as there is room;
    /// whether it planned any.
    fn parse_input(&mut self) -> bool {
        let mut progress = false;
        while self.reading && self.pending_write.is_none() && self.has_room() {
            let Some(header) = self.input.get(..proto::REQUEST_LEN) else {
                break;
            };
            let header: &[u8; proto::REQUEST_LEN] = header.try_into().expect("sliced to length");
            let Some(request) = Request::decode(header) else {
                self.stop_reading(Closing::Violation("bad request magic".into()));
                break;
            };
            self.input.advance(proto::REQUEST_LEN);
            progress = true;
            if !request.has_payload() {
                self.dispatch(request, None);
                continue;
            }
            if request.length > proto::MAX_PAYLOAD {
                // Its payload cannot be drained at a bearable cost: refuse
                // it, never run it, and hang up.
                self.outbox
                    .push(proto::simple_reply(request.cookie, proto::EINVAL), None);
                self.summary.refused += 1;
                self.stop_reading(Closing::Violation(format!(
                    "write of {} bytes, more than the {} served",
                    request.length,
                    proto::MAX_PAYLOAD
                )));
                break;
            }
            let len = request.length as usize;
            let (head, covering) = self.disk.export.layout(request.offset, len);
            let mut buf = self.pool.take(covering);
            buf.set_len(covering);
            let here = len.min(self.input.len());
            buf[head..head + here].copy_from_slice(&self.input[..here]);
            self.input.advance(here);
            if here == len {
                self.dispatch(request, Some(buf));
            } else {
                self.pending_write = Some(PendingWrite {
                    request,
                    buf,
                    head,
                    filled: here,
                });
            }
        }
        progress
    }

    /// Reads the rest of a write's payload straight into its buffer.
    fn poll_payload(&mut self, cx: &mut TaskContext<'_>) -> bool {
        loop {
            match self.stream.poll_read_ready(cx) {
                Poll::Pending => return false,
                Poll::Ready(Err(e)) => {
                    self.drop_pending_write();
                    self.stop_reading(Closing::Error(e));
                    return true;
                }
                Poll::Ready(Ok(())) => {}
            }
            let pending = self
                .pending_write
                .as_mut()
                .expect("called with a pending write");
            let len = pending.request.length as usize;
            let start = pending.head + pending.filled;
            let end = pending.head + len;
            match self.stream.try_read(&mut pending.buf[start..end]) {
                Ok(0) => {
                    // The client left mid-payload: the write is never run.
                    self.drop_pending_write();
                    self.stop_reading(Closing::Eof);
                    return true;
                }
                Ok(n) => {
                    pending.filled += n;
                    if pending.filled == len {
                        let PendingWrite { request, buf, .. } =
                            self.pending_write.take().expect("checked above");
                        self.dispatch(request, Some(buf));
                    }
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    self.drop_pending_write();
                    self.stop_reading(Closing::Error(e));
                    return true;
                }
            }
        }
    }

    /// Reads more requests into `input`; whether it read anything (or the
    /// receive side closed).
    fn poll_fill_input(&mut self, cx: &mut TaskContext<'_>) -> bool {
        loop {
            match self.stream.poll_read_ready(cx) {
                Poll::Pending => return false,
                Poll::Ready(Err(e)) => {
                    self.stop_reading(Closing::Error(e));
                    return true;
                }
                Poll::Ready(Ok(())) => {}
            }
            if self.input.capacity() - self.input.len() < proto::REQUEST_LEN * 64 {
                self.input.reserve(INPUT_CHUNK);
            }
            match self.stream.try_read_buf(&mut self.input) {
                Ok(0) => {
                    self.stop_reading(Closing::Eof);
                    return true;
                }
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    self.stop_reading(Closing::Error(e));
                    return true;
                }
            }
        }
    }

    fn dispatch(&mut self, request: Request, payload: Option<Buffer>) {
        self.summary.requests += 1;
        match request::plan(&request, &self.disk.export, payload, &mut self.pool) {
            Plan::Reply { error, recycle } => {
                if let Some(buf) = recycle {
                    self.pool.give(buf);
                }
                if error != 0 {
                    self.summary.refused += 1;
                }
                if !self.write_failed {
                    self.outbox
                        .push(proto::simple_reply(request.cookie, error), None);
                }
            }
            Plan::Job(job) => {
                self.in_flight_bytes += job.charge;
                self.in_flight.push((self.execute)(self.disk.clone(), job));
            }
            Plan::Disconnect => self.stop_reading(Closing::Disconnect),
        }
    }

    fn drop_pending_write(&mut self) {
        if let Some(pending) = self.pending_write.take() {
            self.pool.give(pending.buf);
        }
    }

    fn stop_reading(&mut self, why: Closing) {
        if self.reading {
            self.reading = false;
            self.summary.closing = Some(why);
        }
    }

    /// Stops the receive side for shutdown: every request already whole in
    /// `input` is answered `NBD_ESHUTDOWN` without being run.
    fn begin_shutdown(&mut self) {
        if !self.reading {
            return;
        }
        self.drop_pending_write();
        while let Some(header) = self.input.get(..proto::REQUEST_LEN) {
            let header: &[u8; proto::REQUEST_LEN] = header.try_into().expect("sliced to length");
            let Some(request) = Request::decode(header) else {
                break;
            };
            let payload = if request.has_payload() {
                request.length as usize
            } else {
                0
            };
            if request.kind == proto::CMD_DISC || self.input.len() - proto::REQUEST_LEN < payload {
                break;
            }
            self.input.advance(proto::REQUEST_LEN + payload);
            self.summary.requests += 1;
            self.outbox
                .push(proto::simple_reply(request.cookie, proto::ESHUTDOWN), None);
        }
        self.stop_reading(Closing::Shutdown);
    }

    /// Sends queued replies; whether it wrote anything (or failed).
    fn poll_send(&mut self, cx: &mut TaskContext<'_>) -> bool {
        if self.outbox.is_empty() || self.write_failed {
            return false;
        }
        loop {
            match self.stream.poll_write_ready(cx) {
                Poll::Pending => return false,
                Poll::Ready(Err(e)) => {
                    self.fail_writes(e);
                    return true;
                }
                Poll::Ready(Ok(())) => {}
            }
            match self.outbox.write_to(&self.stream, &mut self.pool) {
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    self.fail_writes(e);
                    return true;
                }
            }
        }
    }

    /// The client cannot be answered any more: drop queued replies, stop
    /// reading, and let running jobs finish on their own.
    fn fail_writes(&mut self, error: io::Error) {
        self.write_failed = true;
        self.outbox.clear(&mut self.pool);
        self.drop_pending_write();
        let kind = error.kind();
        self.summary.write_error = Some(error);
        self.stop_reading(Closing::Error(io::Error::new(
            kind,
            "replies could not be sent",
        )));
    }

    /// Closes the connection: our side first, then (unless the client has
    /// already closed) read and drop what it still sends until it closes
    /// too, for at most [`LINGER`].
    async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
        if matches!(
            self.summary.closing,
            Some(Closing::Eof) | Some(Closing::Error(_))
        ) {
            return;
        }
        let mut sink = [0u8; 16 << 10];
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(n) = self.stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}
