//! `FileStream` sessions: a stream over one of the actor's open files, with
//! reads, writes, seeks and flushes in random order, some raced against a
//! timer and dropped, and the stream itself dropped at any point (a write
//! accepted and not flushed, a read in flight).
//!
//! What it checks: every read sees each byte as 0 or its pattern, and its
//! pattern where a kept write or a flush of this session said so; a read
//! that ends early ends at or past the known end; the position moves by what
//! each call reports; seeks land where they should; errors come only from a
//! shutdown. A write the stream accepted is in the file once a flush after it
//! completes, and the round reads it back then; a write dropped unflushed
//! lands when its task runs, which the round does not wait for (and a
//! shutdown may cancel), so nothing is asserted of it: it writes the
//! pattern, so the file agrees either way.
//! (`tests/fs_stream_write_behind.rs` asserts that such writes land.)

use std::io::{self, SeekFrom};
use std::pin::pin;
use std::task::Poll;

use aioctx::fs::FileStream;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{Actor, Fate, bump};
use crate::bufs::CANARY;
use crate::model::{FileModel, pattern_bytes};
use crate::watchdog::set_doing;

/// The most calls one session makes.
const MAX_CALLS: u64 = 10;

/// A session's view of its file.
struct Session {
    stream: FileStream,
    /// Model index.
    m: usize,
    /// What any read in the session sees at least: the file as known when
    /// the session began, plus what its flushes made sure of.
    known: FileModel,
    /// Writes the stream accepted since its last completed flush.
    unflushed: Vec<(u64, usize)>,
    /// Where the stream says it is, as this session expects it.
    pos: u64,
    /// The range of the file this actor may write.
    writable: (u64, u64),
}

/// How a call went.
enum Call {
    Done,
    /// The stream failed (a shutdown) or was given up: the session ends.
    End,
}

impl Actor {
    /// A stream over an open file, a few calls on it, then dropped (flushed
    /// first or not).
    pub(crate) async fn stream_session(&mut self, started_after: bool) {
        let at = self.dice.below(self.open.len() as u64) as usize;
        let m = self.open[at].model;
        bump(&self.round.stats.stream_sessions, 1);
        let mut s = Session {
            stream: self.open[at].file.stream(),
            m,
            known: self.lock(m).copy(),
            unflushed: Vec::new(),
            pos: 0,
            writable: self.writable[m],
        };
        for _ in 0..self.dice.range(1, MAX_CALLS) {
            self.spend(1);
            bump(&self.round.stats.stream_ops, 1);
            let call = match self.dice.weighted(&[3, 5, 5, 2, 1, 1]) {
                0 => self.stream_seek(&mut s, started_after).await,
                1 => self.stream_write(&mut s, started_after).await,
                2 => self.stream_read(&mut s, started_after).await,
                3 => {
                    let fate = self.draw_fate();
                    self.stream_flush(&mut s, fate, started_after).await
                }
                4 => {
                    // A read polled once, then the stream dropped with it
                    // (flushed first, or not, below).
                    let what = self.what(&("stream: read polled once", m, s.pos));
                    set_doing(self.id, what.clone());
                    let mut buf = vec![0; self.dice.len()];
                    let read = pin!(s.stream.read(&mut buf));
                    match futures::poll!(read) {
                        // Perhaps the error of the write before it.
                        Poll::Ready(Err(e)) => self.stream_failed(&mut s, &e, started_after, &what),
                        Poll::Ready(Ok(_)) | Poll::Pending => Call::End,
                    }
                }
                _ => Call::End,
            };
            if let Call::End = call {
                break;
            }
        }
        if self.dice.chance(50) {
            self.spend(1);
            bump(&self.round.stats.stream_ops, 1);
            self.stream_flush(&mut s, Fate::Keep, started_after).await;
        }
        if !s.unflushed.is_empty() {
            bump(&self.round.stats.stream_drops, 1);
        }
        self.keep(super::Done::default());
    }

    async fn stream_seek(&mut self, s: &mut Session, started_after: bool) -> Call {
        let size = s.known.must.len() as u64;
        let target = match self.dice.below(3) {
            0 => SeekFrom::Start(self.dice.range(0, size)),
            1 => SeekFrom::Current(self.dice.range(0, s.pos + 4096) as i64 - s.pos as i64),
            _ => SeekFrom::End(
                self.dice.range(0, s.known.extent + 4096) as i64 - s.known.extent as i64,
            ),
        };
        self.stream_seek_to(s, target, started_after).await
    }

    /// Seeks (always kept: a seek given up midway leaves the stream unusable
    /// until one completes) and checks where it landed.
    async fn stream_seek_to(
        &mut self,
        s: &mut Session,
        target: SeekFrom,
        started_after: bool,
    ) -> Call {
        let what = self.what(&("stream: seek", s.m, s.pos, target));
        set_doing(self.id, what.clone());
        match s.stream.seek(target).await {
            Ok(at) => {
                let at_least = match target {
                    SeekFrom::Start(x) => Some(x),
                    SeekFrom::Current(d) => Some(s.pos.checked_add_signed(d).unwrap()),
                    SeekFrom::End(_) => None,
                };
                match (target, at_least) {
                    (_, Some(want)) => assert_eq!(at, want, "{what}: landed at {at}"),
                    // The file is at least as long as known.
                    (SeekFrom::End(d), None) => assert!(
                        at >= s.known.extent.saturating_add_signed(d),
                        "{what}: landed at {at}, before the known end {} {d:+}",
                        s.known.extent
                    ),
                    _ => unreachable!(),
                }
                assert_eq!(s.stream.position(), at, "{what}: position after the seek");
                s.pos = at;
                Call::Done
            }
            Err(e) => self.stream_failed(s, &e, started_after, &what),
        }
    }

    async fn stream_write(&mut self, s: &mut Session, started_after: bool) -> Call {
        let (lo, hi) = s.writable;
        if s.pos < lo || s.pos >= hi {
            let to = self.dice.range(lo, hi - 1);
            if let Call::End = self
                .stream_seek_to(s, SeekFrom::Start(to), started_after)
                .await
            {
                return Call::End;
            }
        }
        let len = (self.dice.len() as u64).min(hi - s.pos) as usize;
        let (at, id) = (s.pos, s.known.id);
        let data = pattern_bytes(id, at, len);
        let fate = self.draw_fate();
        let what = self.what(&("stream: write", s.m, at, len, fate));
        set_doing(self.id, what.clone());
        match self.fate(fate, s.stream.write_all(&data)).await {
            // Accepted (the write may still be running): the session
            // counts it in the file only once a flush completes.
            Some(Ok(())) => {
                s.unflushed.push((at, len));
                s.pos = at + len as u64;
                assert_eq!(
                    s.stream.position(),
                    s.pos,
                    "{what}: position after the write"
                );
                Call::Done
            }
            Some(Err(e)) => self.stream_failed(s, &e, started_after, &what),
            None => {
                // Given up (waiting for the write before it): what the
                // stream accepted, if anything, is what it moved over.
                let now = s.stream.position();
                assert!(
                    now >= at && now <= at + len as u64,
                    "{what}: moved to {now}"
                );
                if now > at {
                    s.unflushed.push((at, (now - at) as usize));
                }
                s.pos = now;
                Call::Done
            }
        }
    }

    async fn stream_read(&mut self, s: &mut Session, started_after: bool) -> Call {
        let len = self.dice.len();
        let exact = self.dice.chance(20);
        let fate = self.draw_fate();
        let at = s.pos;
        let what = self.what(&("stream: read", s.m, at, len, exact, fate));
        set_doing(self.id, what.clone());
        let mut buf = vec![CANARY; len];
        let out = if exact {
            self.fate(fate, s.stream.read_exact(&mut buf)).await
        } else {
            self.fate(fate, s.stream.read(&mut buf)).await
        };
        // What the stream handed over: from its position before and after
        // (a read_exact cut short by the end of the file, or dropped midway,
        // keeps what it took).
        let now = s.stream.position();
        assert!(now >= at, "{what}: the stream went back to {now}");
        let got = (now - at) as usize;
        assert!(got <= len, "{what}: moved {got} for a read of {len}");
        // Memcheck cannot see the kernel's writes into the stream's own
        // read-ahead buffer (`AIOCTX_STRESS_INIT_BUFS` is set under it): the
        // bytes are then checked by the other runs, the moves by all.
        if !self.round.init_bufs {
            s.known.snapshot(at, got).check(&buf[..got], &what);
        }
        if let Some(i) = buf[got..].iter().position(|&b| b != CANARY) {
            panic!("{what}: byte {} past the {got} read was written", got + i);
        }
        bump(&self.round.stats.bytes_read, got as u64);
        s.pos = now;
        match out {
            Some(Ok(n)) => {
                assert_eq!(n, got, "{what}: returned {n}, moved {got}");
                if n == 0 && len > 0 {
                    s.known.snapshot(now, 0).check_eof(now, &what);
                }
                Call::Done
            }
            Some(Err(e)) if exact && e.kind() == io::ErrorKind::UnexpectedEof => {
                s.known.snapshot(now, 0).check_eof(now, &what);
                Call::Done
            }
            Some(Err(e)) => self.stream_failed(s, &e, started_after, &what),
            None => Call::Done,
        }
    }

    /// A call failed: a shutdown, and the error may be an earlier write's,
    /// reported by this call, so which accepted writes landed is unknown
    /// (a flush after it has nothing left to wait for, and says `Ok`).
    fn stream_failed(
        &self,
        s: &mut Session,
        e: &io::Error,
        started_after: bool,
        what: &str,
    ) -> Call {
        self.expect_shutdown_error(e, started_after, what);
        s.unflushed.clear();
        Call::End
    }

    async fn stream_flush(&mut self, s: &mut Session, fate: Fate, started_after: bool) -> Call {
        let what = self.what(&("stream: flush", s.m, s.unflushed.len(), fate));
        set_doing(self.id, what.clone());
        match self.fate(fate, s.stream.flush()).await {
            Some(Ok(())) => {
                // Every accepted write is in the file now.
                let mut model = self.lock(s.m);
                for (at, len) in s.unflushed.drain(..) {
                    model.written(at, len);
                    s.known.written(at, len);
                    bump(&self.round.stats.stream_flushed_bytes, len as u64);
                }
                Call::Done
            }
            Some(Err(e)) => self.stream_failed(s, &e, started_after, &what),
            None => Call::Done,
        }
    }
}
