//! An actor's data ops (reads, writes, vectored, batches, sync, fallocate,
//! metadata, timeout, nop) and the checks on what each returns; the fixed
//! reads and writes are `registered.rs`'s.

use std::future::Future;
use std::io;
use std::time::Duration;

use aioctx::buf::{AlignedBuf, IoBuf, IoBufMut};
use aioctx::fs::File;

use super::{Actor, Done, Fate, Plan, bump};
use crate::bufs::{
    BufKind, CANARY, ReadTarget, TrackedBuf, WriteSource, all_bytes, fully_initialised, hold,
    init_bytes, vec_target,
};
use crate::model::pattern_bytes;

impl Actor {
    pub(super) async fn run(&self, plan: Plan, fate: Fate, started_after: bool) -> Done {
        if let Some(file) = plan.file()
            && self.open[file].file.is_registered()
        {
            bump(&self.round.stats.registered_ops, 1);
        }
        if matches!(plan, Plan::ReadFixed { .. } | Plan::WriteFixed { .. }) {
            return self.run_fixed(plan, fate, started_after).await;
        }
        let what = self.what(&(&plan, fate));
        let live = &self.round.live;
        match plan {
            Plan::Read {
                file,
                offset,
                len,
                exact,
                buf,
                prefill,
            } => {
                let prefill = prefill || self.round.init_bufs;
                let held_ok = fully_initialised(buf, prefill);
                let f = &self.open[file].file;
                macro_rules! read {
                    ($t:ty) => {
                        self.read(
                            self.open[file].model,
                            offset,
                            <$t>::target(len, prefill, live),
                            exact,
                            fate,
                            held_ok,
                            started_after,
                            &what,
                            |buf| read_file(f, buf, offset, exact),
                        )
                        .await
                    };
                }
                match buf {
                    BufKind::Vec => read!(Vec<u8>),
                    BufKind::Bytes => read!(bytes::BytesMut),
                    BufKind::Boxed => read!(Box<[u8]>),
                    BufKind::Aligned => read!(AlignedBuf),
                    BufKind::Tracked => read!(TrackedBuf),
                }
            }
            Plan::Write {
                file,
                offset,
                len,
                all,
                buf,
            } => {
                let data = pattern_bytes(self.file_id(file), offset, len);
                let f = &self.open[file].file;
                macro_rules! write {
                    ($t:ty) => {
                        self.write(
                            self.open[file].model,
                            offset,
                            <$t>::source(&data, live),
                            &data,
                            fate,
                            started_after,
                            &what,
                            |buf| write_file(f, buf, offset, all),
                        )
                        .await
                    };
                }
                match buf {
                    BufKind::Vec => write!(Vec<u8>),
                    BufKind::Bytes => write!(bytes::BytesMut),
                    BufKind::Boxed => write!(Box<[u8]>),
                    BufKind::Aligned => write!(AlignedBuf),
                    BufKind::Tracked => write!(TrackedBuf),
                }
            }
            Plan::Batch {
                file,
                write,
                ranges,
            } => {
                self.batch(file, write, ranges, fate, started_after, &what)
                    .await
            }
            Plan::Readv {
                file,
                offset,
                lens,
                tracked,
                prefill,
            } => {
                let prefill = prefill || self.round.init_bufs;
                if tracked {
                    let bufs = lens
                        .iter()
                        .map(|&l| TrackedBuf::target(l, prefill, live))
                        .collect();
                    self.readv(file, offset, bufs, fate, prefill, started_after, &what)
                        .await
                } else {
                    let bufs = lens.iter().map(|&l| vec_target(l, prefill)).collect();
                    self.readv(file, offset, bufs, fate, prefill, started_after, &what)
                        .await
                }
            }
            Plan::Writev {
                file,
                offset,
                lens,
                tracked,
            } => {
                let id = self.file_id(file);
                let mut at = offset;
                let parts: Vec<Vec<u8>> = lens
                    .iter()
                    .map(|&l| {
                        let part = pattern_bytes(id, at, l);
                        at += l as u64;
                        part
                    })
                    .collect();
                if tracked {
                    let bufs = parts
                        .iter()
                        .map(|p| TrackedBuf::new(p.clone(), live))
                        .collect();
                    self.writev(file, offset, bufs, &parts, fate, started_after, &what)
                        .await
                } else {
                    self.writev(
                        file,
                        offset,
                        parts.clone(),
                        &parts,
                        fate,
                        started_after,
                        &what,
                    )
                    .await
                }
            }
            Plan::Sync { file, data_only } => {
                let f = &self.open[file].file;
                let op = if data_only {
                    f.sync_data()
                } else {
                    f.sync_all()
                };
                self.unit(self.fate(fate, op).await, started_after, &what);
                Done::default()
            }
            Plan::Fallocate {
                file,
                offset,
                len,
                keep_size,
            } => {
                let mode = if keep_size {
                    libc::FALLOC_FL_KEEP_SIZE
                } else {
                    0
                };
                let op = self.open[file].file.fallocate(offset, len, mode);
                self.unit(self.fate(fate, op).await, started_after, &what);
                Done::default()
            }
            Plan::Metadata { file } => {
                let extent = self.lock(self.open[file].model).extent;
                match self.fate(fate, self.open[file].file.metadata()).await {
                    Some(Ok(meta)) => {
                        self.expect_not_after_shutdown(started_after, &what);
                        assert!(meta.is_file(), "{what}: not a regular file");
                        assert!(
                            meta.len() >= extent,
                            "{what}: size {} below the {extent} bytes written",
                            meta.len()
                        );
                    }
                    Some(Err(e)) => self.expect_shutdown_error(&e, started_after, &what),
                    None => {}
                }
                Done::default()
            }
            Plan::Timeout { micros } => {
                let ctx = self.context();
                let op = ctx.timeout(Duration::from_micros(micros));
                self.unit(self.fate(fate, op).await, started_after, &what);
                Done::default()
            }
            Plan::Nop => {
                let ctx = self.context();
                self.unit(self.fate(fate, ctx.nop()).await, started_after, &what);
                Done::default()
            }
            Plan::ReadFixed { .. } | Plan::WriteFixed { .. } => unreachable!("run_fixed's"),
        }
    }

    fn file_id(&self, file: usize) -> u64 {
        self.lock(self.open[file].model).id
    }

    pub(super) fn unit(&self, out: Option<io::Result<()>>, started_after: bool, what: &str) {
        match out {
            Some(Ok(())) => self.expect_not_after_shutdown(started_after, what),
            Some(Err(e)) => self.expect_shutdown_error(&e, started_after, what),
            None => {}
        }
    }

    /// Reads into `buf` at `offset` of model `m`'s file through `start`
    /// (called once the model's snapshot is taken), and checks what comes
    /// back; `exact`: `start` is a `read_exact_at`, which may end with
    /// `UnexpectedEof`, having read what the file held.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn read<B, F>(
        &self,
        m: usize,
        offset: u64,
        buf: B,
        exact: bool,
        fate: Fate,
        held_ok: bool,
        started_after: bool,
        what: &str,
        start: impl FnOnce(B) -> F,
    ) -> Done
    where
        B: ReadTarget,
        F: Future<Output = (io::Result<usize>, B)>,
    {
        // Addresses as numbers: compared, never followed, and a raw pointer
        // held across an await would make the future `!Send`.
        let (ptr, total) = (buf.stable_ptr() as usize, buf.bytes_total());
        let snapshot = self.lock(m).snapshot(offset, total);
        let Some((result, buf)) = self.fate(fate, start(buf)).await else {
            return Done::default();
        };
        assert_eq!(
            buf.stable_ptr() as usize,
            ptr,
            "{what}: a different buffer came back"
        );
        assert_eq!(buf.bytes_total(), total, "{what}: the buffer changed size");
        let init = buf.bytes_init();
        // How many bytes the read put at the buffer's start, where known.
        let count = match result {
            Ok(count) => {
                self.expect_not_after_shutdown(started_after, what);
                assert!(count <= total, "{what}: read {count} into {total}");
                if B::TRACKS_INIT {
                    assert_eq!(init, count, "{what}: initialised length");
                }
                if count < total && !self.may_be_cut_short() {
                    snapshot.check_eof(offset + count as u64, what);
                }
                Some(count)
            }
            Err(e) if exact && e.kind() == io::ErrorKind::UnexpectedEof => {
                self.expect_not_after_shutdown(started_after, what);
                B::TRACKS_INIT.then(|| {
                    snapshot.check_eof(offset + init as u64, what);
                    init
                })
            }
            Err(e) => {
                self.expect_shutdown_error(&e, started_after, what);
                // A read_exact_at cut short keeps what it read.
                B::TRACKS_INIT.then_some(init)
            }
        };
        let Some(count) = count else {
            return Done::default();
        };
        snapshot.check(&init_bytes(&buf)[..count], what);
        bump(&self.round.stats.bytes_read, count as u64);
        if !held_ok {
            return Done::default();
        }
        // SAFETY: pre-filled, so every byte is initialised.
        let all = unsafe { all_bytes(&buf) };
        if let Some(i) = all[count..].iter().position(|&b| b != CANARY) {
            panic!(
                "{what}: byte {} past the {count} read was written",
                count + i
            );
        }
        Done {
            held: vec![hold(buf, what.to_owned())],
        }
    }

    /// Writes `buf` (holding `data`) at `offset` of model `m`'s file,
    /// through `start`, and checks what comes back.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn write<B, F>(
        &self,
        m: usize,
        offset: u64,
        buf: B,
        data: &[u8],
        fate: Fate,
        started_after: bool,
        what: &str,
        start: impl FnOnce(B) -> F,
    ) -> Done
    where
        B: WriteSource,
        F: Future<Output = (io::Result<usize>, B)>,
    {
        let ptr = buf.stable_ptr() as usize;
        let Some((result, buf)) = self.fate(fate, start(buf)).await else {
            return Done::default();
        };
        assert_eq!(
            buf.stable_ptr() as usize,
            ptr,
            "{what}: a different buffer came back"
        );
        assert!(
            init_bytes(&buf) == data,
            "{what}: the written buffer changed"
        );
        match result {
            Ok(n) => {
                self.expect_not_after_shutdown(started_after, what);
                assert!(n <= data.len(), "{what}: wrote {n} of {}", data.len());
                self.lock(m).written(offset, n);
                bump(&self.round.stats.bytes_written, n as u64);
            }
            Err(e) => self.expect_shutdown_error(&e, started_after, what),
        }
        Done::default()
    }

    /// Reads or writes `ranges` of `file` as one batch op; each member is
    /// checked as the single read or write would be.
    async fn batch(
        &self,
        file: usize,
        write: bool,
        ranges: Vec<(u64, usize)>,
        fate: Fate,
        started_after: bool,
        what: &str,
    ) -> Done {
        let m = self.open[file].model;
        let f = &self.open[file].file;
        if write {
            let data: Vec<Vec<u8>> = ranges
                .iter()
                .map(|&(offset, len)| pattern_bytes(self.file_id(file), offset, len))
                .collect();
            let writes = data
                .iter()
                .zip(&ranges)
                .map(|(d, &(at, _))| (d.clone(), at));
            let Some(results) = self.fate(fate, f.write_batch(writes)).await else {
                return Done::default();
            };
            assert_eq!(results.len(), ranges.len(), "{what}: members back");
            for ((result, buf), (data, &(offset, _))) in
                results.into_iter().zip(data.iter().zip(&ranges))
            {
                assert!(buf == *data, "{what}: a written buffer changed");
                match result {
                    Ok(n) => {
                        self.expect_not_after_shutdown(started_after, what);
                        assert!(n <= data.len(), "{what}: wrote {n} of {}", data.len());
                        self.lock(m).written(offset, n);
                        bump(&self.round.stats.bytes_written, n as u64);
                    }
                    Err(e) => self.expect_shutdown_error(&e, started_after, what),
                }
            }
        } else {
            let snapshots: Vec<_> = ranges
                .iter()
                .map(|&(offset, len)| self.lock(m).snapshot(offset, len))
                .collect();
            // Pre-filled under memcheck (`init_bufs`), which cannot see what
            // the kernel writes through io_uring.
            let prefill = self.round.init_bufs;
            let reads = ranges
                .iter()
                .map(|&(at, len)| (vec_target(len, prefill), at));
            let Some(results) = self.fate(fate, f.read_batch(reads)).await else {
                return Done::default();
            };
            assert_eq!(results.len(), ranges.len(), "{what}: members back");
            for ((result, buf), (snapshot, &(offset, len))) in
                results.into_iter().zip(snapshots.iter().zip(&ranges))
            {
                match result {
                    Ok(n) => {
                        self.expect_not_after_shutdown(started_after, what);
                        assert_eq!(buf.len(), n, "{what}: initialised length");
                        assert!(n <= len, "{what}: read {n} into {len}");
                        if n < len && !self.may_be_cut_short() {
                            snapshot.check_eof(offset + n as u64, what);
                        }
                        snapshot.check(&buf, what);
                        bump(&self.round.stats.bytes_read, n as u64);
                    }
                    Err(e) => {
                        self.expect_shutdown_error(&e, started_after, what);
                        assert!(buf.is_empty(), "{what}: a failed read filled its buffer");
                    }
                }
            }
        }
        bump(&self.round.stats.batches, 1);
        bump(&self.round.stats.batch_members, ranges.len() as u64);
        Done::default()
    }

    #[allow(clippy::too_many_arguments)]
    async fn readv<B: ReadTarget>(
        &self,
        file: usize,
        offset: u64,
        bufs: Vec<B>,
        fate: Fate,
        prefill: bool,
        started_after: bool,
        what: &str,
    ) -> Done {
        let m = self.open[file].model;
        let shape: Vec<(usize, usize)> = bufs
            .iter()
            .map(|b| (b.stable_ptr() as usize, b.bytes_total()))
            .collect();
        let total: usize = shape.iter().map(|s| s.1).sum();
        let snapshot = self.lock(m).snapshot(offset, total);
        let Some((result, bufs)) = self
            .fate(fate, self.open[file].file.readv_at(bufs, offset))
            .await
        else {
            return Done::default();
        };
        let got_shape: Vec<(usize, usize)> = bufs
            .iter()
            .map(|b| (b.stable_ptr() as usize, b.bytes_total()))
            .collect();
        assert_eq!(got_shape, shape, "{what}: different buffers came back");
        let data: Vec<u8> = bufs.iter().flat_map(|b| init_bytes(b).to_vec()).collect();
        match result {
            Ok(n) => {
                self.expect_not_after_shutdown(started_after, what);
                assert_eq!(data.len(), n, "{what}: initialised lengths");
                if n < total && !self.may_be_cut_short() {
                    snapshot.check_eof(offset + n as u64, what);
                }
            }
            Err(e) => {
                self.expect_shutdown_error(&e, started_after, what);
                assert!(data.is_empty(), "{what}: a failed read filled its buffers");
            }
        }
        snapshot.check(&data, what);
        bump(&self.round.stats.bytes_read, data.len() as u64);
        if !prefill {
            return Done::default();
        }
        let held = bufs
            .into_iter()
            .map(|b| {
                let n = b.bytes_init();
                // SAFETY: pre-filled, so every byte is initialised.
                let all = unsafe { all_bytes(&b) };
                assert!(
                    all[n..].iter().all(|&x| x == CANARY),
                    "{what}: written past its count"
                );
                hold(b, what.to_owned())
            })
            .collect();
        Done { held }
    }

    #[allow(clippy::too_many_arguments)]
    async fn writev<B: IoBuf + Sync>(
        &self,
        file: usize,
        offset: u64,
        bufs: Vec<B>,
        parts: &[Vec<u8>],
        fate: Fate,
        started_after: bool,
        what: &str,
    ) -> Done {
        let m = self.open[file].model;
        let ptrs: Vec<usize> = bufs.iter().map(|b| b.stable_ptr() as usize).collect();
        let Some((result, bufs)) = self
            .fate(fate, self.open[file].file.writev_at(bufs, offset))
            .await
        else {
            return Done::default();
        };
        let got: Vec<usize> = bufs.iter().map(|b| b.stable_ptr() as usize).collect();
        assert_eq!(got, ptrs, "{what}: different buffers came back");
        for (buf, part) in bufs.iter().zip(parts) {
            assert!(
                init_bytes(buf) == &part[..],
                "{what}: a written buffer changed"
            );
        }
        match result {
            Ok(n) => {
                self.expect_not_after_shutdown(started_after, what);
                let total: usize = parts.iter().map(Vec::len).sum();
                assert!(n <= total, "{what}: wrote {n} of {total}");
                self.lock(m).written(offset, n);
                bump(&self.round.stats.bytes_written, n as u64);
            }
            Err(e) => self.expect_shutdown_error(&e, started_after, what),
        }
        Done::default()
    }
}

/// `read_exact_at` (its count: the whole buffer) or `read_at` on `f`.
async fn read_file<B: IoBufMut>(
    f: &File,
    buf: B,
    offset: u64,
    exact: bool,
) -> (io::Result<usize>, B) {
    if !exact {
        return f.read_at(buf, offset).await;
    }
    let total = buf.bytes_total();
    let (result, buf) = f.read_exact_at(buf, offset).await;
    (result.map(|()| total), buf)
}

/// `write_all_at` (its count: the whole buffer) or `write_at` on `f`.
async fn write_file<B: IoBuf>(f: &File, buf: B, offset: u64, all: bool) -> (io::Result<usize>, B) {
    if !all {
        return f.write_at(buf, offset).await;
    }
    let total = buf.bytes_init();
    let (result, buf) = f.write_all_at(buf, offset).await;
    (result.map(|()| total), buf)
}
