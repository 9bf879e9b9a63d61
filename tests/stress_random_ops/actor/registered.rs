//! Registered resources under stress: an actor's fixed-buffer pool (made,
//! with the registration itself sometimes dropped midway, and dropped while
//! its buffers are in ops), fixed reads and writes and their checks, and the
//! last handle of a file (registered or not) dropped from whatever thread the
//! actor runs on while ops on it are in flight, those ops then kept or
//! dropped too. What must hold: data reads back as for every op, a buffer
//! comes back unchanged and is not written after, and (checked by the round)
//! every pool's buffers come back, and every table slot is free again once
//! the last handle is gone. On worker rings a pool is never registered, and
//! its buffers' ops go to the ring it was made on, from whichever worker
//! polls them: once that ring has closed, they fail with the shutdown error.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;

use aioctx::FixedBuf;
use aioctx::fs::File;

use super::{Actor, Done, Fate, OpenFile, Plan, bump};
use crate::bufs::{CANARY, hold, vec_target};
use crate::model::{Snapshot, pattern_bytes};
use crate::watchdog::set_doing;

/// Sizes of a pool's buffers: a page, two, three (the largest write).
const FIXED_SIZES: [usize; 3] = [4096, 8192, 12288];

/// What an op on a file dropped mid-flight gave back, to check; `fixed`:
/// with a buffer of the actor's pool.
enum Landed {
    Read {
        fixed: bool,
        offset: u64,
        result: io::Result<usize>,
        data: Vec<u8>,
        total: usize,
        /// What was known of the range when the read started.
        snapshot: Snapshot,
    },
    Write {
        fixed: bool,
        offset: u64,
        result: io::Result<usize>,
        len: usize,
    },
}

type InFlight = Pin<Box<dyn Future<Output = Landed> + Send>>;

impl Actor {
    /// A fixed read or write on open file `file`, with a buffer of the
    /// actor's pool; `None` if it has no pool or no buffer is free.
    pub(crate) fn fixed_plan(&mut self, file: usize, read: bool) -> Option<Plan> {
        let mut buf = self.fixed.as_ref()?.try_get()?;
        let m = self.open[file].model;
        if read {
            let (offset, _) = self.read_range(m, 0);
            prefill(&mut buf);
            // Half are held after they return, like other read buffers
            // (held ones are not free for the pool's next op).
            let hold = self.dice.chance(50);
            return Some(Plan::ReadFixed {
                file,
                offset,
                buf,
                hold,
            });
        }
        let len = self.dice.len().min(buf.capacity());
        let (offset, len) = self.write_range(m, len);
        let id = self.lock(m).id;
        buf.extend_from_slice(&pattern_bytes(id, offset, len));
        Some(Plan::WriteFixed { file, offset, buf })
    }

    /// Makes a registered-buffer pool (replacing the one held, whose buffers
    /// may still be in ops), or drops the one held.
    pub(crate) async fn fixed_pool(&mut self, started_after: bool) {
        self.spend(1);
        if self.fixed.is_some() && self.dice.chance(40) {
            set_doing(self.id, self.what(&"drop the buffer pool"));
            bump(&self.round.stats.fixed_pools_dropped, 1);
            self.fixed = None;
            return;
        }
        let count = self.dice.range(1, 4) as usize;
        let size = FIXED_SIZES[self.dice.below(3) as usize];
        let fate = self.draw_fate();
        let what = self.what(&("register_buffers", count, size, fate));
        set_doing(self.id, what.clone());
        bump(&self.round.stats.fixed_pools, 1);
        let closes = self.worker_rings().map_or(0, |w| w.closes.load(SeqCst));
        let ctx = self.context();
        match self.fate(fate, ctx.register_buffers(count, size)).await {
            Some(Ok(pool)) => {
                // Ok after shutdown is allowed: a pool the ring cannot take is
                // used unregistered, and its ops fail with the shutdown error.
                assert_eq!(pool.count(), count, "{what}: buffer count");
                assert_eq!(pool.buf_size(), size, "{what}: buffer size");
                assert_eq!(pool.available(), count, "{what}: a new pool's buffers");
                self.fixed_closes_seen = closes;
                if let Some(old) = self.fixed.replace(pool) {
                    bump(&self.round.stats.fixed_pools_dropped, 1);
                    drop(old);
                }
            }
            Some(Err(e)) => self.expect_shutdown_error(&e, started_after, &what),
            // Dropped midway, perhaps after the home thread registered it:
            // the round's check finds the slots free again.
            None => {}
        }
    }

    /// The error of an op on a buffer of the actor's pool, which goes to
    /// the ring the pool was made on.
    fn expect_fixed_error(&self, e: &io::Error, started_after: bool, what: &str) {
        self.expect_pinned_error(e, self.fixed_closes_seen, started_after, what);
    }

    /// Runs a fixed read or write planned by [`fixed_plan`](Actor::fixed_plan).
    pub(crate) async fn run_fixed(&self, plan: Plan, fate: Fate, started_after: bool) -> Done {
        let what = self.what(&(&plan, fate));
        bump(&self.round.stats.fixed_ops, 1);
        match plan {
            Plan::ReadFixed {
                file,
                offset,
                buf,
                hold: held,
            } => {
                let m = self.open[file].model;
                let total = buf.capacity();
                let ptr = buf.as_ptr() as usize;
                let snapshot = self.lock(m).snapshot(offset, total);
                let op = self.open[file].file.read_fixed_at(buf, offset);
                let Some((result, mut buf)) = self.fate(fate, op).await else {
                    return Done::default();
                };
                assert_eq!(buf.as_ptr() as usize, ptr, "{what}: a different buffer");
                let count = match result {
                    Ok(n) => {
                        self.expect_not_after_shutdown(started_after, &what);
                        assert!(n <= total, "{what}: read {n} into {total}");
                        assert_eq!(buf.len(), n, "{what}: the buffer's length");
                        if n < total && !self.may_be_cut_short() {
                            snapshot.check_eof(offset + n as u64, &what);
                        }
                        n
                    }
                    Err(e) => {
                        self.expect_fixed_error(&e, started_after, &what);
                        assert_eq!(buf.len(), 0, "{what}: a failed read filled its buffer");
                        0
                    }
                };
                snapshot.check(&buf, &what);
                bump(&self.round.stats.bytes_read, count as u64);
                buf.set_len(total);
                if let Some(i) = buf[count..].iter().position(|&b| b != CANARY) {
                    panic!(
                        "{what}: byte {} past the {count} read was written",
                        count + i
                    );
                }
                if !held {
                    return Done::default();
                }
                Done {
                    held: vec![hold(buf, what)],
                }
            }
            Plan::WriteFixed { file, offset, buf } => {
                let m = self.open[file].model;
                let data = buf.to_vec();
                let ptr = buf.as_ptr() as usize;
                let op = self.open[file].file.write_fixed_at(buf, offset);
                let Some((result, buf)) = self.fate(fate, op).await else {
                    return Done::default();
                };
                assert_eq!(buf.as_ptr() as usize, ptr, "{what}: a different buffer");
                assert!(*buf == data[..], "{what}: the written buffer changed");
                match result {
                    Ok(n) => {
                        self.expect_not_after_shutdown(started_after, &what);
                        assert!(n <= data.len(), "{what}: wrote {n} of {}", data.len());
                        self.lock(m).written(offset, n);
                        bump(&self.round.stats.bytes_written, n as u64);
                    }
                    Err(e) => self.expect_fixed_error(&e, started_after, &what),
                }
                Done::default()
            }
            other => unreachable!("run_fixed given {other:?}"),
        }
    }

    /// Takes a file out of the actor's hands, starts one to three ops on it
    /// (fixed ones where the actor has buffers), polls each once, drops the
    /// file's last handle (and sometimes the buffer pool's) while they are
    /// in flight, then keeps or drops each op.
    pub(crate) async fn drop_in_flight(&mut self, started_after: bool) {
        let at = self.dice.below(self.open.len() as u64) as usize;
        let OpenFile { model: m, file, .. } = self.open.swap_remove(at);
        let count = self.dice.range(1, 3);
        self.spend(count + 1);
        let what = self.what(&("drop in flight", m, file.is_registered(), count));
        set_doing(self.id, what.clone());
        bump(&self.round.stats.in_flight_drops, 1);
        bump(&self.round.stats.in_flight_ops, count);
        if file.is_registered() {
            bump(&self.round.stats.registered_ops, count);
        }
        let mut ops: Vec<InFlight> = Vec::new();
        for _ in 0..count {
            let read = self.dice.chance(50);
            let fixed = self.fixed.as_ref().and_then(|p| p.try_get());
            if fixed.is_some() {
                bump(&self.round.stats.fixed_ops, 1);
            }
            ops.push(self.start_on(&file, m, read, fixed));
        }
        for op in &mut ops {
            if let std::task::Poll::Ready(landed) = futures::poll!(op.as_mut()) {
                // Done already: keep it as it is, to check below.
                let done: InFlight = Box::pin(async move { landed });
                *op = done;
            }
        }
        // The last handle goes while the ops hold the file.
        drop(file);
        if self.dice.chance(30) && self.fixed.take().is_some() {
            bump(&self.round.stats.fixed_pools_dropped, 1);
        }
        for op in ops {
            if self.dice.chance(50) {
                bump(&self.round.stats.dropped, 1);
                drop(op);
                continue;
            }
            bump(&self.round.stats.kept, 1);
            match op.await {
                Landed::Read {
                    fixed,
                    offset,
                    result,
                    data,
                    total,
                    snapshot,
                } => {
                    match result {
                        Ok(n) => {
                            self.expect_not_after_shutdown(started_after, &what);
                            assert!(n <= total && n == data.len(), "{what}: read {n} of {total}");
                            if n < total && !self.may_be_cut_short() {
                                snapshot.check_eof(offset + n as u64, &what);
                            }
                            bump(&self.round.stats.bytes_read, n as u64);
                        }
                        Err(e) if fixed => self.expect_fixed_error(&e, started_after, &what),
                        Err(e) => self.expect_shutdown_error(&e, started_after, &what),
                    }
                    snapshot.check(&data, &what);
                }
                Landed::Write {
                    fixed,
                    offset,
                    result,
                    len,
                } => match result {
                    Ok(n) => {
                        self.expect_not_after_shutdown(started_after, &what);
                        assert!(n <= len, "{what}: wrote {n} of {len}");
                        self.lock(m).written(offset, n);
                        bump(&self.round.stats.bytes_written, n as u64);
                    }
                    Err(e) if fixed => self.expect_fixed_error(&e, started_after, &what),
                    Err(e) => self.expect_shutdown_error(&e, started_after, &what),
                },
            }
        }
        self.keep(Done::default());
    }

    /// One op on `file` (model `m`), owning everything it uses.
    fn start_on(&mut self, file: &File, m: usize, read: bool, fixed: Option<FixedBuf>) -> InFlight {
        let id = self.lock(m).id;
        if read {
            let len = fixed
                .as_ref()
                .map_or_else(|| self.dice.len(), FixedBuf::capacity);
            let (offset, len) = self.read_range(m, len);
            let snapshot = self.lock(m).snapshot(offset, len);
            let op: InFlight = match fixed {
                Some(mut buf) => {
                    prefill(&mut buf);
                    let op = file.read_fixed_at(buf, offset);
                    Box::pin(async move {
                        let (result, buf) = op.await;
                        Landed::Read {
                            fixed: true,
                            offset,
                            data: buf.to_vec(),
                            result,
                            total: len,
                            snapshot,
                        }
                    })
                }
                None => {
                    let buf = vec_target(len, self.round.init_bufs || self.dice.chance(50));
                    let op = file.read_at(buf, offset);
                    Box::pin(async move {
                        let (result, buf) = op.await;
                        Landed::Read {
                            fixed: false,
                            offset,
                            result,
                            data: buf,
                            total: len,
                            snapshot,
                        }
                    })
                }
            };
            return op;
        }
        let cap = fixed.as_ref().map_or(usize::MAX, FixedBuf::capacity);
        let len = self.dice.len().min(cap);
        let (offset, len) = self.write_range(m, len);
        let data = pattern_bytes(id, offset, len);
        match fixed {
            Some(mut buf) => {
                buf.extend_from_slice(&data);
                let op = file.write_fixed_at(buf, offset);
                Box::pin(async move {
                    let (result, buf) = op.await;
                    assert!(*buf == data[..], "a fixed write's buffer changed");
                    Landed::Write {
                        fixed: true,
                        offset,
                        result,
                        len,
                    }
                })
            }
            None => {
                let op = file.write_at(data, offset);
                Box::pin(async move {
                    let (result, _) = op.await;
                    Landed::Write {
                        fixed: false,
                        offset,
                        result,
                        len,
                    }
                })
            }
        }
    }
}

/// Fills all of a fixed buffer with the canary and empties it, so bytes a
/// read did not report are seen if written.
fn prefill(buf: &mut FixedBuf) {
    buf.set_len(buf.capacity());
    buf.fill(CANARY);
    buf.clear();
}
