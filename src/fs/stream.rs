//! [`FileStream`]: a [`File`] with a position, implementing Tokio's
//! `AsyncRead`, `AsyncWrite` and `AsyncSeek`, so `tokio::io::copy`,
//! `BufReader` and codecs work on the crate's files.
//!
//! Underneath every call is a positional op on buffers the stream owns: a
//! read fills the stream's buffer and copies out of it (keeping what the
//! caller had no room for as read-ahead), a write copies the caller's bytes
//! into a buffer and returns at once while the write runs (write-behind, as
//! `tokio::fs::File` does; its error comes back from the next call or from
//! `flush`).

use std::future::Future;
use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::op::Op;
use crate::ops::{ReadAt, Statx};

use super::File;

/// Reads ask the kernel for at least this much, so small reads (a
/// `BufReader`'s, a codec's) do not cost an op each.
const MIN_READ: usize = 64 * 1024;
/// The most one read or write moves.
const MAX_CHUNK: usize = 4 * 1024 * 1024;

type WriteAll = Pin<Box<dyn Future<Output = io::Result<Vec<u8>>> + Send>>;

/// A cursor over a [`File`] with a position, implementing Tokio's
/// `AsyncRead`, `AsyncWrite` and `AsyncSeek`. From [`File::stream`].
///
/// Underneath every call is a positional op on buffers the stream owns: a
/// read fills the stream's buffer and copies out of it (keeping what the
/// caller had no room for as read-ahead); a write copies the caller's bytes
/// into a buffer and returns at once while the write runs (write-behind, as
/// `tokio::fs::File` does; its error comes back from the next call or from
/// `flush`).
///
/// # Cancel safety
///
/// Dropping the stream with an op in flight is safe, as for every op; a
/// write it accepted may or may not reach the file (call `flush` first to
/// know).
pub struct FileStream {
    file: File,
    /// Where the next byte read or written goes, as the caller sees it.
    pos: u64,
    /// Read-ahead: `ahead[taken..]` are the bytes at `pos` onwards.
    ahead: Vec<u8>,
    taken: usize,
    state: State,
    /// A seek started and not yet completed.
    seek: Option<SeekFrom>,
}

enum State {
    Idle,
    /// A read at the stream's position.
    Reading(Op<ReadAt<Vec<u8>>>),
    /// An accepted write, running.
    Writing(WriteAll),
    /// `SeekFrom::End(offset)`: waiting for the file's size.
    SeekingEnd(Op<Statx>, i64),
}

impl FileStream {
    pub(super) fn new(file: File) -> FileStream {
        FileStream {
            file,
            pos: 0,
            ahead: Vec::new(),
            taken: 0,
            state: State::Idle,
            seek: None,
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

    fn drop_read_ahead(&mut self) {
        self.ahead.clear();
        self.taken = 0;
    }

    /// Waits for an accepted write, so what follows sees it (and its error).
    fn poll_write_done(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        if let State::Writing(write) = &mut self.state {
            let result = ready!(write.as_mut().poll(cx));
            self.state = State::Idle;
            let buf = result?;
            // Keep the allocation for the next read.
            if self.ahead.capacity() < buf.capacity() {
                self.ahead = buf;
                self.ahead.clear();
            }
        }
        Poll::Ready(Ok(()))
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
        ready!(this.poll_write_done(cx))?;
        loop {
            if this.taken < this.ahead.len() {
                let n = out.remaining().min(this.ahead.len() - this.taken);
                out.put_slice(&this.ahead[this.taken..this.taken + n]);
                this.taken += n;
                this.pos += n as u64;
                return Poll::Ready(Ok(()));
            }
            match &mut this.state {
                State::Reading(read) => {
                    let (result, buf) = ready!(Pin::new(read).poll(cx));
                    this.state = State::Idle;
                    this.ahead = buf;
                    this.taken = 0;
                    if result? == 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
                State::Idle => {
                    if out.remaining() == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    let want = out.remaining().clamp(MIN_READ, MAX_CHUNK);
                    let mut buf = std::mem::take(&mut this.ahead);
                    buf.clear();
                    buf.reserve_exact(want);
                    this.state = State::Reading(this.file.read_at(buf, this.pos));
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
        match this.state {
            State::Idle => {}
            State::Reading(_) => {
                // A read the caller gave up on: its bytes are not the
                // caller's; start the write where the caller is.
                this.state = State::Idle;
            }
            State::SeekingEnd(..) => return Poll::Ready(Err(unfinished_seek())),
            State::Writing(_) => unreachable!("waited for above"),
        }
        this.drop_read_ahead();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let len = data.len().min(MAX_CHUNK);
        let mut buf = std::mem::take(&mut this.ahead);
        buf.clear();
        buf.extend_from_slice(&data[..len]);
        let (file, at) = (this.file.clone(), this.pos);
        this.state = State::Writing(Box::pin(async move {
            let (result, buf) = file.write_all_at(buf, at).await;
            result.map(|()| buf)
        }));
        this.pos += len as u64;
        Poll::Ready(Ok(len))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_write_done(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_write_done(cx)
    }
}

impl AsyncSeek for FileStream {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        if this.seek.is_some() || matches!(this.state, State::SeekingEnd(..)) {
            return Err(unfinished_seek());
        }
        this.seek = Some(position);
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<u64>> {
        let this = self.get_mut();
        // An accepted write lands first: the target may be relative to the
        // end it moves.
        ready!(this.poll_write_done(cx))?;
        if let State::Reading(_) = this.state {
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
            .finish_non_exhaustive()
    }
}
