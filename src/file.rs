//! A file as the crate owns it: its fd and registered slot ([`OpenFile`]),
//! and the handles every [`File`](crate::fs::File) clone shares, with one
//! view of the file per pool member ([`FileHandles`], [`MemberFile`]) or per
//! worker ring ([`RingFile`]). What keeps an fd open while the kernel uses
//! it, and what closes it, lives here; where a file's op goes is
//! `pool/placement.rs`'s job. Imports the context's shared state, the
//! pool's membership and the slot record.
//!
//! ```text
//!   File ──► FileHandles ──► OpenFile (fd)
//!                 ├─ views[i] ──► MemberFile { file ─► OpenFile, on ─► member i }
//!                 └─ ring_views[j] ──► RingFile { file ─► OpenFile, slot in ring j's table }
//!   op made on member i's thread ──anchor──► views[i]
//!   op made on the thread of worker ring j ──anchor──► ring_views[j] (and ring j)
//! ```
//!
//! # A file in the tables of worker rings
//!
//! A worker ring ([`WorkerRings`](crate::runtime::WorkerRings)) registers each file
//! its ops use in its own file table, so that its ops name the file by slot
//! and the kernel skips the fd's lookup and the shared open file's
//! reference count on each. The slot belongs to the ring's view of the file
//! ([`RingFile`]): the first op the ring's thread makes on the file
//! registers it ([`RingFile::fd_on`]), and every later one reads the slot
//! from the view's [`SlotRecord`] without a lock. The anchor of the op holds
//! the same view, and the op names the slot only while its anchor leads to
//! that ring (`pool/placement.rs`). The rules:
//!
//! - A slot is one ring's: the record says which ring (by its context id,
//!   never reused) the slot is in, and an op of another ring (a ring that
//!   took over the view's index when the thread of the first exited) finds
//!   no slot for itself and registers the file anew. A ring's record is
//!   replaced only once that ring has shut down (its table goes with it, and
//!   no op names the slot there after its close); while it is open, the
//!   other ring's ops name the file by fd.
//! - The table entry never outlives the view on a running ring: the view's
//!   drop takes the file out of the table ([`Release::File`], done at once
//!   under the ring's lock), before the view lets go of the open file. (A
//!   ring that is shutting down keeps the entry until its close, which
//!   takes the table and the kernel's reference with it.) An op holds the view,
//!   so nothing names the slot any more by then; and the open file's fd (its
//!   `flock`s, a deleted file's space) goes with the last view or handle, as
//!   for a file no table ever held.
//! - Where registration fails (the table full, refused by an old kernel,
//!   turned off with `registered_file_slots(0)`), the view records that its
//!   ring names the file by fd, and does not try again on that ring.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use crate::backend::Release;
use crate::context::state::ContextState;
use crate::ops::FileFd;
use crate::pool::membership::{Membership, thread_ring_views};
use crate::slot_record::SlotRecord;

/// An open file: its fd, its slot in the ring's file table if it is
/// registered, the context its ops go to, and that context's pool.
///
/// A registered file leaves the table before its fd is closed, so the file
/// (its `flock`s, the disk space of a deleted file) is released at close as
/// for any file: [`File::close`](crate::fs::File::close) unregisters and
/// then closes; a drop hands both to the backend, which does them in that
/// order, from any thread and at any moment.
pub(crate) struct OpenFile {
    /// `Some` until taken to be closed.
    fd: Option<OwnedFd>,
    raw: RawFd,
    slot: Option<u32>,
    pub(crate) state: Arc<ContextState>,
    /// The pool of the context the file was opened on, if any.
    pub(crate) pool: Option<Arc<Membership>>,
}

impl OpenFile {
    pub(crate) fn new(
        fd: OwnedFd,
        state: Arc<ContextState>,
        pool: Option<Arc<Membership>>,
        slot: Option<u32>,
    ) -> OpenFile {
        OpenFile {
            raw: fd.as_raw_fd(),
            fd: Some(fd),
            slot,
            state,
            pool,
        }
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.raw
    }

    /// Whether the file is in its ring's file table.
    pub(crate) fn is_registered(&self) -> bool {
        self.slot.is_some()
    }

    /// The fd for an op on the file's own context: its slot where it has one.
    pub(crate) fn fd(&self) -> FileFd {
        match self.slot {
            Some(slot) => FileFd::registered(self.raw, slot),
            None => FileFd::new(self.raw),
        }
    }

    /// Takes the file out of the ring's file table, and waits until it is
    /// out.
    pub(crate) async fn unregister(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        let (done, out) = tokio::sync::oneshot::channel();
        self.state.backend.release(Release::File {
            slot,
            _fd: None,
            _done: Some(done),
        });
        // Out of the table (or the ring is gone, which is out too).
        let _out = out.await;
    }

    /// The fd, to close: after [`unregister`](OpenFile::unregister).
    pub(crate) fn take_fd(&mut self) -> OwnedFd {
        debug_assert!(self.slot.is_none(), "closing a file still in the table");
        self.fd
            .take()
            .expect("an open file has its fd until closed")
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        // Out of the table first, then closed, by the backend: right away on
        // the home thread outside the driver's turn, otherwise at its next.
        self.state.backend.release(Release::File {
            slot,
            _fd: self.fd.take(),
            _done: None,
        });
    }
}

/// A file as its handles ([`File`](crate::fs::File) clones) hold it: the open
/// file, and for a file whose ops follow the calling thread around a pool,
/// one view of it per member, made the first time that member uses it.
///
/// An op holds its member's view rather than the open file, so the ops of
/// different members never write the same reference count (every op clones
/// and drops its anchor): view i's count is written only by the threads
/// placed on member i (its home thread, and the threads whose sticky member
/// it is). The views hold the open file, never the handles, so nothing
/// cycles: the last handle's drop drops the views, and the open file (its
/// fd) goes with the last view an op still holds. Aligned to a cache line,
/// so that cloning a `File` (which writes the handles' count) does not
/// disturb the line every op reads the views from.
#[repr(align(64))]
pub(crate) struct FileHandles {
    file: Arc<OpenFile>,
    /// One per member; empty unless the file's ops follow threads (a pool's
    /// file, unregistered, on a backend whose fds every member shares).
    views: Box<[OnceLock<Arc<MemberFile>>]>,
    /// For a file on rings made per thread ([`WorkerRings`](crate::runtime::WorkerRings)):
    /// one per ring index, made the first time a ring of that index uses it.
    ring_views: Box<[OnceLock<Arc<RingFile>>]>,
}

/// A file as the ring of one thread index uses it: what that ring's ops
/// count their reference on, so that workers' ops never write the same
/// count, and the file's slot in that ring's file table (see the module
/// docs). Holds the open file, and names the ring only by id and weakly;
/// the ring an op goes to comes from the calling thread. Aligned to a cache
/// line of its own, as [`MemberFile`].
#[repr(align(64))]
pub(crate) struct RingFile {
    /// Keeps the fd open while an op holds the view.
    pub(crate) file: Arc<OpenFile>,
    /// Which ring's table holds the file, at which slot: read by every op.
    record: SlotRecord,
    /// The same, with the ring to take the file out of its table at the
    /// view's drop. Held while the record is written, which serialises the
    /// writes.
    registered: Mutex<Option<Registered>>,
}

/// The ring a [`RingFile`]'s record speaks for, and its slot there.
struct Registered {
    /// Weak: a view keeps no ring (nor its runtime) alive.
    ring: Weak<ContextState>,
    /// `None`: the ring names the file by its fd.
    slot: Option<u32>,
}

impl RingFile {
    fn new(file: Arc<OpenFile>) -> RingFile {
        RingFile {
            file,
            record: SlotRecord::new(),
            registered: Mutex::new(None),
        }
    }

    /// The fd an op on ring `on` names the file by: its slot in `on`'s
    /// table, registered there the first time `on` uses the view; its fd
    /// where `on` could not register it, or the slot the view holds is in
    /// another ring's table, still open.
    #[inline]
    pub(crate) fn fd_on(&self, on: &Arc<ContextState>) -> FileFd {
        let slot = match self.record.get(on.id) {
            Some(slot) => slot,
            None => self.register_on(on),
        };
        match slot {
            Some(slot) => FileFd::registered(self.file.raw(), slot),
            None => FileFd::new(self.file.raw()),
        }
    }

    /// [`fd_on`](RingFile::fd_on)'s first use by `on`: registers the file in
    /// `on`'s table and records the slot, unless the record speaks for
    /// another ring still open; returns what the record now says for `on`.
    #[cold]
    #[inline(never)]
    fn register_on(&self, on: &Arc<ContextState>) -> Option<u32> {
        let mut registered = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Again under the lock every write holds: one may have come since.
        if let Some(slot) = self.record.get(on.id) {
            return slot;
        }
        // The record's ring still runs: `on` is the ring this index had
        // before, shutting down (a new ring took the index as it closed),
        // and its ops fail anyway. The record stays: its ops use the slot.
        let open = |ring: &Weak<ContextState>| {
            ring.upgrade()
                .is_some_and(|ring| !ring.backend.is_shut_down())
        };
        if registered.as_ref().is_some_and(|held| open(&held.ring))
            || on.backend.is_shut_down()
            || !SlotRecord::fits(on.id)
        {
            return None;
        }
        // The record's ring, if any, has shut down: its table goes with it
        // at its close (the file stays in that table until then), and no op
        // names the slot there after that. A shut down ring never runs
        // again, so the record never returns to it.
        let slot = on
            .backend
            .register_file_shared(self.file.raw())
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "a worker ring could not register a file; its ops there name its fd");
                None
            });
        *registered = Some(Registered {
            ring: Arc::downgrade(on),
            slot,
        });
        self.record.set(on.id, slot);
        slot
    }
}

impl Drop for RingFile {
    fn drop(&mut self) {
        let registered = self
            .registered
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // No op holds the view any more, so none names the slot: out of the
        // ring's table now, before the view lets go of the open file (the
        // field dropped after this), whose fd may close with it. A ring that
        // has closed took its table with it.
        if let Some(Registered {
            ring,
            slot: Some(slot),
        }) = registered
            && let Some(ring) = ring.upgrade()
        {
            ring.backend.release(Release::File {
                slot,
                _fd: None,
                _done: None,
            });
        }
    }
}

/// A pool file as one member uses it; see [`FileHandles`]. Aligned to a cache
/// line of its own, so its reference count shares the line with nothing
/// another member writes.
#[repr(align(64))]
pub(crate) struct MemberFile {
    /// Keeps the fd open while an op holds the view.
    pub(crate) file: Arc<OpenFile>,
    pub(crate) on: Arc<ContextState>,
    /// The member's index in its pool.
    pub(crate) index: usize,
}

impl FileHandles {
    pub(crate) fn new(file: OpenFile) -> FileHandles {
        let (members, rings) = match (file.is_registered(), &file.pool) {
            (false, Some(pool)) if pool.is_per_thread() => (0, thread_ring_views()),
            (false, Some(pool)) if pool.files_follow_threads() => (pool.len(), 0),
            _ => (0, 0),
        };
        FileHandles {
            file: Arc::new(file),
            views: (0..members).map(|_| OnceLock::new()).collect(),
            ring_views: (0..rings).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Whether the file's ops go to the rings of the threads that make them
    /// through views ([`RingFile`]).
    pub(crate) fn has_ring_views(&self) -> bool {
        !self.ring_views.is_empty()
    }

    /// Whether the file's ops go through views of either kind.
    #[inline]
    pub(crate) fn has_any_views(&self) -> bool {
        self.has_ring_views() || self.has_views()
    }

    /// Ring index `index`'s view, made on first use; `None` past the views.
    pub(crate) fn ring_view(&self, index: usize) -> Option<&Arc<RingFile>> {
        let slot = self.ring_views.get(index)?;
        Some(slot.get_or_init(|| Arc::new(RingFile::new(self.file.clone()))))
    }

    pub(crate) fn file(&self) -> &Arc<OpenFile> {
        &self.file
    }

    /// Whether the file's ops follow the calling thread around a pool.
    pub(crate) fn has_views(&self) -> bool {
        !self.views.is_empty()
    }

    /// Member `index`'s view, made on first use; `None` if the member is
    /// gone (its ops would go to the file's own context anyway).
    pub(crate) fn view(&self, index: usize) -> Option<&Arc<MemberFile>> {
        let slot = &self.views[index];
        if let Some(view) = slot.get() {
            return Some(view);
        }
        let on = self.file.pool.as_ref()?.member(index)?;
        Some(slot.get_or_init(|| {
            Arc::new(MemberFile {
                file: self.file.clone(),
                on,
                index,
            })
        }))
    }

    /// The open file, if these were its last handles and no op holds it
    /// (through a view or not).
    pub(crate) fn into_only(self) -> Option<OpenFile> {
        // The views first: an op in flight keeps its own.
        drop(self.views);
        drop(self.ring_views);
        Arc::try_unwrap(self.file).ok()
    }
}
