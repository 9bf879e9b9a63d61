//! A file as the crate owns it: its fd and registered slot ([`OpenFile`]),
//! and the handles every [`File`](crate::fs::File) clone shares, with one
//! view of the file per pool member ([`FileHandles`], [`MemberFile`]). What
//! keeps an fd open while the kernel uses it, and what closes it, lives here;
//! where a file's op goes is `pool/placement.rs`'s job. Imports the
//! context's shared state and the pool's membership.
//!
//! ```text
//!   File ──► FileHandles ──► OpenFile (fd)
//!                 ├─ views[i] ──► MemberFile { file ─► OpenFile, on ─► member i }
//!                 └─ ring_views[j] ──► RingFile { file ─► OpenFile }
//!   op made on member i's thread ──anchor──► views[i]
//!   op made on the thread of worker ring j ──anchor──► ring_views[j] (and ring j)
//! ```

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};

use crate::backend::Release;
use crate::context::state::ContextState;
use crate::ops::FileFd;
use crate::pool::membership::{Membership, thread_ring_views};

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
    /// For a file on rings made per thread ([`WorkerRings`](crate::WorkerRings)):
    /// one per ring index, made the first time a ring of that index uses it.
    ring_views: Box<[OnceLock<Arc<RingFile>>]>,
}

/// A file as the ring of one thread index uses it: what that ring's ops
/// count their reference on, so that workers' ops never write the same
/// count. Holds the open file only; the ring comes from the calling thread.
/// Aligned to a cache line of its own, as [`MemberFile`].
#[repr(align(64))]
pub(crate) struct RingFile {
    /// Keeps the fd open while an op holds the view.
    pub(crate) file: Arc<OpenFile>,
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

    /// Ring index `index`'s view, made on first use; `None` past the views.
    pub(crate) fn ring_view(&self, index: usize) -> Option<&Arc<RingFile>> {
        let slot = self.ring_views.get(index)?;
        Some(slot.get_or_init(|| {
            Arc::new(RingFile {
                file: self.file.clone(),
            })
        }))
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
