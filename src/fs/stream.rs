//! [`FileStream`]: a [`File`] with a position, implementing Tokio's
//! `AsyncRead`, `AsyncWrite` and `AsyncSeek`, so `tokio::io::copy`,
//! `BufReader` and codecs work on the crate's files.
//!
//! Underneath every call is a positional op on buffers the stream owns: a
//! read fills the stream's buffer and copies out of it (keeping what the
//! caller had no room for as read-ahead); a write copies the caller's bytes
//! into a buffer and hands it to a task on the file's context, which writes
//! all of it (write-behind). The task, not the stream, owns the write: it
//! runs to the end whether the stream is polled again, left idle or dropped.
//! On an `O_DIRECT` file the buffers are aligned and the ops shaped to the
//! file's direct-I/O alignment (see the type's docs).
//!
//! ```text
//!   poll_write ──copy──► buffer ──spawn──► write task on the file's context
//!        │                                   (write_all_at: every byte, or an error)
//!        └── Ok(n) at once                              │
//!   next call / flush / shutdown ◄──oneshot: result, buffer back
//! ```
//!
//! A spawned task rather than an op polled from the stream: an op runs only
//! while its future is polled or, dropped, is cancelled; and a write cut
//! short needs someone to submit its remainder when nobody polls the
//! stream. A task of the context's runtime is that someone on every
//! backend, and it lives as long as the context.

use std::future::Future;
use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::buf::AlignedBuf;
use crate::error::{DirectAlignment, shutdown_error};
use crate::op::Op;
use crate::ops::{ReadAt, Statx};

use super::File;

/// Reads ask the kernel for at least this much, so small reads (a
/// `BufReader`'s, a codec's) do not cost an op each.
const MIN_READ: usize = 64 * 1024;
/// The most one read or write moves.
const MAX_CHUNK: usize = 4 * 1024 * 1024;

/// A cursor over a [`File`] with a position, implementing Tokio's
/// `AsyncRead`, `AsyncWrite` and `AsyncSeek`. From [`File::stream`].
///
/// Underneath every call is a positional op on buffers the stream owns: a
/// read fills the stream's buffer and copies out of it (keeping what the
/// caller had no room for as read-ahead).
///
/// # Writes run behind
///
/// A write copies the caller's bytes (up to 4 MiB) into a buffer, hands it
/// to a task spawned on the file's context (its home runtime; a worker
/// ring's runtime), and returns `Ok(n)` at once, as `tokio::fs::File` does.
/// That task writes every byte, resubmitting the remainder of a short write,
/// whatever the stream does next: a write the stream acknowledged reaches
/// the file though the stream is left idle or dropped without a flush. Its
/// error, if any, comes back from the stream's next call (read, write, seek,
/// `flush` or `shutdown`); if the stream is gone by then, it is logged at
/// `warn`. One write runs at a time: the next call waits for it, so a read
/// or a seek after a write sees the written bytes, and `flush` and
/// `shutdown` return once it is in the file (in the page cache: they do not
/// fsync; [`File::sync_all`] does).
///
/// The task lives as long as the file's context: shutting the context down
/// (or, for a [`LocalContext`](crate::LocalContext), no longer driving it)
/// before the write ran cancels it, as it does every op. `flush` first to
/// know it landed.
///
/// # O_DIRECT
///
/// On a file opened with [`OpenOptions::direct`](super::OpenOptions::direct),
/// the stream's buffers are aligned to what the file requires (its
/// direct-I/O alignment from `statx`; 4096 bytes where the kernel does not
/// say; 512 on the simulator), and its ops are shaped to it, so
/// `tokio::io::copy` into and out of the file works:
///
/// - A read reads whole blocks, from the block holding the position, and
///   copies out from the position: reads may start anywhere.
/// - Writes go to the file in whole blocks. A write must start at a block
///   boundary (else it fails with `InvalidInput`). What is short of a whole
///   block stays in the stream until later writes complete the block, and
///   then is written with it. No read-modify-write is done: a partial last
///   block cannot be written with `O_DIRECT`, so `flush`, `shutdown`, a read
///   or a seek fails with `InvalidInput` ("... bytes short of a whole block
///   ...") while one is held, and keeps it (a write that completes the block
///   clears the error). Dropping the stream then loses those bytes, with a
///   `warn` event. Write whole blocks (a file whose length is a multiple of
///   the block), or open the file without `direct`.
///
/// # Cancel safety
///
/// Dropping the stream is safe at any moment, with any call in flight, and
/// loses no write it acknowledged: the write task runs on (the partial block
/// of an `O_DIRECT` stream aside, see above). A read in flight is cancelled
/// as any op is. A write the stream did not acknowledge (its `poll_write`
/// returned `Pending`) was not taken.
pub struct FileStream {
    file: File,
    /// Where the next byte read or written goes, as the caller sees it.
    pos: u64,
    /// Read-ahead: `ahead[taken..]` are the bytes at `pos` onwards.
    ahead: Option<AlignedBuf>,
    taken: usize,
    /// A buffer kept for the next read or write.
    spare: Option<AlignedBuf>,
    state: State,
    /// A seek started and not yet completed.
    seek: Option<SeekFrom>,
    /// What the file's `O_DIRECT` asks of ops, if it was opened with it.
    direct: Option<DirectAlignment>,
    /// `O_DIRECT` only: acknowledged bytes short of a whole block, at
    /// `tail_at`, written with the rest of their block. Never a whole block
    /// between calls; when not empty, `tail_at + tail.len() == pos`.
    tail: Vec<u8>,
    tail_at: u64,
}

enum State {
    Idle,
    /// A read of whole blocks, `skip` bytes before the stream's position.
    Reading {
        read: Op<ReadAt<AlignedBuf>>,
        skip: usize,
    },
    /// An acknowledged write, run by its task.
    Writing(oneshot::Receiver<Written>),
    /// `SeekFrom::End(offset)`: waiting for the file's size.
    SeekingEnd(Op<Statx>, i64),
}

/// What a write task sends back: how the write went, and its buffer.
struct Written {
    result: io::Result<()>,
    buf: AlignedBuf,
}

impl FileStream {
    pub(super) fn new(file: File) -> FileStream {
        let open = file.handles().file();
        let direct = open.state.backend.direct_alignment(open.raw());
        FileStream {
            file,
            pos: 0,
            ahead: None,
            taken: 0,
            spare: None,
            state: State::Idle,
            seek: None,
            direct,
            tail: Vec::new(),
            tail_at: 0,
        }
    }

    /// The position the next read or write starts at.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The file underneath.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// What offsets and lengths of the stream's ops are multiples of: the
    /// file's `O_DIRECT` block, or 1.
    fn block(&self) -> u64 {
        self.direct.map_or(1, |direct| direct.offset.max(1))
    }

    /// What the stream's buffers are aligned to.
    fn memory(&self) -> usize {
        self.direct.map_or(1, |direct| {
            (direct.memory.max(1) as usize)
                .checked_next_power_of_two()
                .unwrap_or(AlignedBuf::DEFAULT_ALIGNMENT)
        })
    }

    /// An empty buffer of at least `len` bytes, a whole number of blocks:
    /// the kept one if it is large enough.
    fn buffer(&mut self, len: usize) -> AlignedBuf {
        let block = self.block() as usize;
        let capacity = len.max(MIN_READ).div_ceil(block) * block;
        match self.spare.take() {
            Some(mut buf) if buf.capacity() >= capacity => {
                buf.clear();
                buf
            }
            _ => AlignedBuf::with_alignment(capacity, self.memory()),
        }
    }

    /// Keeps `buf` for the next op, if it is larger than the one kept.
    fn keep(&mut self, buf: AlignedBuf) {
        if self
            .spare
            .as_ref()
            .is_none_or(|spare| spare.capacity() < buf.capacity())
        {
            self.spare = Some(buf);
        }
    }

    fn drop_read_ahead(&mut self) {
        if let Some(buf) = self.ahead.take() {
            self.keep(buf);
        }
        self.taken = 0;
    }

    /// Waits for the acknowledged write, so what follows sees it (and its
    /// error).
    fn poll_write_done(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        if let State::Writing(written) = &mut self.state {
            let done = ready!(Pin::new(written).poll(cx));
            self.state = State::Idle;
            // The task is gone without a word only if the context's runtime
            // dropped it: the context shut down.
            let Written { result, buf } = done.map_err(|_| shutdown_error())?;
            self.keep(buf);
            result?;
        }
        Poll::Ready(Ok(()))
    }

    /// Hands `buf` to a task of the file's context that writes all of it at
    /// `at`, whatever becomes of the stream.
    fn start_write(&mut self, buf: AlignedBuf, at: u64) {
        let (done, written) = oneshot::channel();
        let file = self.file.clone();
        let write = async move {
            let (result, buf) = file.write_all_at(buf, at).await;
            if let Err(Written { result: Err(e), .. }) = done.send(Written { result, buf }) {
                tracing::warn!(
                    error = %e,
                    offset = at,
                    "a write a dropped FileStream acknowledged failed"
                );
            }
        };
        // Detached: the task owns the write. A runtime that has shut down
        // drops it unrun, which the receiver reports as a shutdown.
        drop(self.file.handles().file().state.runtime().spawn(write));
        self.state = State::Writing(written);
    }

    /// `O_DIRECT`'s refusal of a partial block held by the stream.
    fn partial_block(&self) -> io::Result<()> {
        if self.tail.is_empty() {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "FileStream over an O_DIRECT file holds {} bytes at offset {}, short of a \
                 whole block of {} ({}): O_DIRECT writes whole blocks only, so they cannot be \
                 written until later writes complete the block",
                self.tail.len(),
                self.tail_at,
                self.block(),
                self.direct.map_or("", |direct| direct.basis),
            ),
        ))
    }

    /// Takes `data` as a write at the position of an `O_DIRECT` stream: the
    /// whole blocks it completes go to a write task, the rest stays in
    /// `tail`. Returns how much was taken.
    fn write_direct(&mut self, data: &[u8]) -> io::Result<usize> {
        let block = self.block() as usize;
        if self.tail.is_empty() {
            if !self.pos.is_multiple_of(block as u64) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "FileStream over an O_DIRECT file: a write must start at a multiple of \
                         {block} ({}), not at {}",
                        self.direct.map_or("", |direct| direct.basis),
                        self.pos
                    ),
                ));
            }
            self.tail_at = self.pos;
        }
        let len = data.len().min(MAX_CHUNK - self.tail.len());
        let whole = (self.tail.len() + len) / block * block;
        if whole == 0 {
            self.tail.extend_from_slice(&data[..len]);
        } else {
            let from_data = whole - self.tail.len();
            let mut buf = self.buffer(whole);
            buf.extend_from_slice(&self.tail);
            buf.extend_from_slice(&data[..from_data]);
            self.tail.clear();
            self.tail.extend_from_slice(&data[from_data..len]);
            let at = self.tail_at;
            self.tail_at += whole as u64;
            self.start_write(buf, at);
        }
        self.pos += len as u64;
        Ok(len)
    }
}

impl Drop for FileStream {
    fn drop(&mut self) {
        // An acknowledged write in flight runs on in its task; only a partial
        // block of an `O_DIRECT` stream is left, which nothing can write.
        if !self.tail.is_empty() {
            tracing::warn!(
                bytes = self.tail.len(),
                offset = self.tail_at,
                block = self.block(),
                "a FileStream over an O_DIRECT file was dropped holding bytes short of a whole \
                 block; they are lost (flush reports this while the stream lives)"
            );
        }
    }
}

impl AsyncRead for FileStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.seek.is_some() {
            return Poll::Ready(Err(unfinished_seek()));
        }
        this.partial_block()?;
        ready!(this.poll_write_done(cx))?;
        loop {
            let unread = this
                .ahead
                .as_deref()
                .map_or(&[][..], |ahead| ahead.get(this.taken..).unwrap_or_default());
            if !unread.is_empty() {
                let n = out.remaining().min(unread.len());
                out.put_slice(&unread[..n]);
                this.taken += n;
                this.pos += n as u64;
                return Poll::Ready(Ok(()));
            }
            match &mut this.state {
                State::Reading { read, skip } => {
                    let skip = *skip;
                    let (result, buf) = ready!(Pin::new(read).poll(cx));
                    this.state = State::Idle;
                    this.drop_read_ahead();
                    let n = match result {
                        Ok(n) => n,
                        Err(e) => {
                            this.keep(buf);
                            return Poll::Ready(Err(e));
                        }
                    };
                    if n <= skip {
                        // The file ends at or before the position.
                        this.keep(buf);
                        return Poll::Ready(Ok(()));
                    }
                    this.ahead = Some(buf);
                    this.taken = skip;
                }
                State::Idle => {
                    if out.remaining() == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    this.drop_read_ahead();
                    // Whole blocks, from the one holding the position.
                    let block = this.block();
                    let skip = (this.pos % block) as usize;
                    let want = (out.remaining() + skip).min(MAX_CHUNK);
                    let buf = this.buffer(want);
                    let read = this.file.read_at(buf, this.pos - skip as u64);
                    this.state = State::Reading { read, skip };
                }
                State::Writing(_) | State::SeekingEnd(..) => {
                    return Poll::Ready(Err(unfinished_seek()));
                }
            }
        }
    }
}

impl AsyncWrite for FileStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.seek.is_some() {
            return Poll::Ready(Err(unfinished_seek()));
        }
        ready!(this.poll_write_done(cx))?;
        if let State::SeekingEnd(..) = this.state {
            return Poll::Ready(Err(unfinished_seek()));
        }
        // Idle (`poll_write_done` leaves no write running), or a read the
        // caller gave up on: its bytes are not the caller's, and the write
        // starts where the caller is.
        this.state = State::Idle;
        this.drop_read_ahead();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.direct.is_some() {
            return Poll::Ready(this.write_direct(data));
        }
        let len = data.len().min(MAX_CHUNK);
        let mut buf = this.buffer(len);
        buf.extend_from_slice(&data[..len]);
        this.start_write(buf, this.pos);
        this.pos += len as u64;
        Poll::Ready(Ok(len))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_done(cx))?;
        Poll::Ready(this.partial_block())
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl AsyncSeek for FileStream {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        if this.seek.is_some() || matches!(this.state, State::SeekingEnd(..)) {
            return Err(unfinished_seek());
        }
        this.partial_block()?;
        this.seek = Some(position);
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<u64>> {
        let this = self.get_mut();
        // An acknowledged write lands first: the target may be relative to
        // the end it moves.
        ready!(this.poll_write_done(cx))?;
        if let State::Reading { .. } = this.state {
            this.state = State::Idle;
        }
        if let Some(seek) = this.seek.take() {
            this.drop_read_ahead();
            let moved = |base: u64, offset: i64| {
                base.checked_add_signed(offset)
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
            };
            match seek {
                SeekFrom::Start(at) => this.pos = at,
                SeekFrom::Current(offset) => this.pos = moved(this.pos, offset)?,
                SeekFrom::End(offset) => {
                    this.state = State::SeekingEnd(this.file.metadata(), offset);
                }
            }
        }
        if let State::SeekingEnd(metadata, offset) = &mut this.state {
            let size = ready!(Pin::new(metadata).poll(cx));
            let offset = *offset;
            this.state = State::Idle;
            this.pos = size?
                .len()
                .checked_add_signed(offset)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        }
        Poll::Ready(Ok(this.pos))
    }
}

fn unfinished_seek() -> io::Error {
    io::Error::other("FileStream: a seek was started and not completed")
}

impl std::fmt::Debug for FileStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStream")
            .field("file", &self.file)
            .field("position", &self.pos)
            .field("direct", &self.direct.map(|direct| direct.offset))
            .finish_non_exhaustive()
    }
}
