//! The home-thread path: [`LocalRing`], [`LocalFile`] and [`LocalOp`], ops
//! that never leave the thread whose ring runs them, and so pay nothing for
//! being able to.
//!
//! An [`Op`] is `Send`: it may be polled on any thread, dropped on
//! any thread, and completed by a driver on another thread while its future
//! is polled. That costs every op read-modify-writes of its cell's state word
//! (two per completion) and of its anchor's reference count (the context or
//! file it holds on to), though most ops are made, submitted and completed
//! on their ring's home thread. A `LocalOp` is `!Send`, made by a `!Send`
//! [`LocalRing`] on that home thread, so every handle of its cell stays
//! there: the cell's state changes with plain stores (`lifecycle`, "cells of
//! one thread"), and its anchor is counted by an `Rc`. Everything else is
//! the ordinary op's path: the same cell, slot table, cancel and shutdown.
//!
//! ```text
//!   LocalRing ──Rc──► Home { context state }          (one count, taken once)
//!   LocalFile ──Rc──► Home { context state, file }
//!   LocalOp ──cell (plain state)──► anchor: an Rc clone of the above
//! ```
//!
//! Where the home path does not apply (another thread than the ring's home,
//! a worker ring, the fallback, the simulator), a `LocalRing` makes ordinary
//! ops, so the same code runs on every backend. Imports the context, the
//! file and the op future.

use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use crate::backend::{Anchored, AnyBackend};
use crate::buf::{IoBuf, IoBufMut};
use crate::context::Context;
use crate::context::state::ContextState;
use crate::file::OpenFile;
use crate::fs::File;
use crate::lifecycle::CellAnchor;
use crate::op::{Flight, Op};
use crate::ops::{FileFd, Fsync, Nop, OpKind, ReadAt, WriteAt};

/// A handle to the calling thread's ring for ops that stay on this thread:
/// each op it makes skips the synchronisation a `Send` [`Op`] pays for (see
/// [`LocalOp`]). `!Send`: made and used on one thread.
///
/// On the home thread of an io_uring [`Context`] (a task of the home
/// runtime: [`Context::spawn_local`], [`LocalContext::block_on`](crate::LocalContext::block_on),
/// a pool member's tasks), its ops take the home path. Anywhere else (another
/// thread, a worker ring, the fallback, the simulator) they are ordinary
/// ops, with the same results; [`is_home_path`](LocalRing::is_home_path)
/// tells which.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let local = aioctx::Builder::default().build_local()?;
/// let ctx = local.context().clone();
/// local.block_on(async move {
///     let ring = aioctx::local::LocalRing::new(&ctx);
///     ring.nop().await?;
///     let file = aioctx::fs::File::open(&ctx, "/proc/self/stat").await?;
///     let file = ring.file(&file);
///     let (n, buf) = file.read_at(Vec::with_capacity(64), 0).await;
///     assert_eq!(n?, buf.len());
///     Ok(())
/// })
/// # }
/// ```
///
/// A `LocalOp` cannot leave its thread:
///
/// ```compile_fail,E0277
/// fn on_another_thread<T: Send + 'static>(op: T) {
///     std::thread::spawn(move || drop(op));
/// }
/// let ctx = aioctx::Context::builder().build().unwrap();
/// let ring = aioctx::local::LocalRing::new(&ctx);
/// on_another_thread(ring.nop()); // error: `LocalOp` is not `Send`
/// ```
#[derive(Clone)]
pub struct LocalRing {
    context: Context,
    /// The home path's anchor, on the ring's home thread only.
    home: Option<Home>,
    _not_send: PhantomData<*const ()>,
}

/// A [`File`] as a [`LocalRing`] uses it: its reads, writes and syncs are
/// [`LocalOp`]s on that ring. Made once (it takes one count on the file),
/// cloned for free. `!Send`.
#[derive(Clone)]
pub struct LocalFile {
    route: FileRoute,
    _not_send: PhantomData<*const ()>,
}

#[derive(Clone)]
enum FileRoute {
    /// The home path: the fd as the home ring names it.
    Home(Home, FileFd),
    /// Ordinary ops on the file.
    Shared(File),
}

/// What a home-thread op holds on to: its ring's context, and for a file's
/// op the file. One `Rc` count per op, on the home thread.
#[derive(Clone)]
struct Home(HomeRc);

struct Held {
    state: Arc<ContextState>,
    /// Keeps the fd open while an op names it.
    _file: Option<Arc<OpenFile>>,
}

/// An `Rc` that the op cells of its thread may hold.
///
/// `Send` and `Sync` in name only, so that it fits the cell's bounds: every
/// value is made on a ring's home thread by a `LocalRing` (which is
/// `!Send`), and lives in `LocalRing`s, `LocalFile`s and `LocalOp`s (all
/// `!Send`) and in cells whose anchor type says [`CellAnchor::ONE_THREAD`].
/// Those cells go only to the home ring (asserted in `backend::start_fresh`
/// and the ring's `start`), whose driver, slot table, inbox drain and
/// shutdown drain run on the home thread, and which the cell's anchor keeps
/// alive, so no other thread ever drops the cell. So every clone and drop of
/// this `Rc` happens on one thread.
#[derive(Clone)]
struct HomeRc(Rc<Held>);

// SAFETY: see the type's docs: every clone and drop happens on the thread
// that made it; the type is never reachable from another thread except
// inside a cell that no other thread touches.
unsafe impl Send for HomeRc {}
// SAFETY: as above; `&HomeRc` gives only `&Held`, whose contents are `Sync`.
unsafe impl Sync for HomeRc {}

impl CellAnchor for Home {
    const ONE_THREAD: bool = true;
}

impl Anchored for Home {
    #[inline(always)]
    fn backend(&self) -> &AnyBackend {
        &self.0.0.state.backend
    }
}

impl LocalRing {
    /// A local handle to `context`'s ring. Its ops take the home path when
    /// made on `context`'s home thread with the io_uring backend, and are
    /// ordinary ops otherwise.
    pub fn new(context: &Context) -> LocalRing {
        let state = context.state();
        let home = (state.home().is_current() && matches!(state.backend, AnyBackend::Uring(_)))
            .then(|| {
                Home(HomeRc(Rc::new(Held {
                    state: state.clone(),
                    _file: None,
                })))
            });
        LocalRing {
            context: context.clone(),
            home,
            _not_send: PhantomData,
        }
    }

    /// A local handle to the calling thread's context
    /// ([`current`](crate::current)).
    ///
    /// # Errors
    ///
    /// `NotFound` if the thread has no current context.
    pub fn current() -> io::Result<LocalRing> {
        crate::current()
            .map(|context| LocalRing::new(&context))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "no aioctx context is current on this thread",
                )
            })
    }

    /// Whether this handle's ops take the home path (made on the ring's home
    /// thread, on io_uring), rather than being ordinary ops.
    pub fn is_home_path(&self) -> bool {
        self.home.is_some()
    }

    /// The context whose ring this is.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// A no-op, as [`Context::nop`].
    pub fn nop(&self) -> LocalOp<Nop> {
        match &self.home {
            Some(home) => LocalOp::home(home.clone(), Nop::new()),
            None => LocalOp::shared(self.context.nop()),
        }
    }

    /// `file` for this ring's local ops. On the home path the file's ops go
    /// to this ring (a file of another context of the same process, by its
    /// fd), unless the file's fds mean nothing here (a simulated file): its
    /// ops are then ordinary ops.
    pub fn file(&self, file: &File) -> LocalFile {
        let open = file.open_file();
        let route = match &self.home {
            Some(home) => {
                let ring = &home.0.0.state;
                let fd = if Arc::ptr_eq(&open.state, ring) {
                    // Its own ring: registered or not, as the file is.
                    Some(open.fd())
                } else if open.state.backend.shares_fds() && ring.backend.shares_fds() {
                    Some(FileFd::new(open.raw()))
                } else {
                    None
                };
                match fd {
                    Some(fd) => FileRoute::Home(
                        Home(HomeRc(Rc::new(Held {
                            state: ring.clone(),
                            _file: Some(open.clone()),
                        }))),
                        fd,
                    ),
                    None => FileRoute::Shared(file.clone()),
                }
            }
            None => FileRoute::Shared(file.clone()),
        };
        LocalFile {
            route,
            _not_send: PhantomData,
        }
    }
}

impl LocalFile {
    /// Whether this file's ops take the home path; see
    /// [`LocalRing::is_home_path`].
    pub fn is_home_path(&self) -> bool {
        matches!(self.route, FileRoute::Home(..))
    }

    /// Reads into the buffer at `offset`, as [`File::read_at`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (see [the ops module](crate::ops#cancel-safety)).
    pub fn read_at<B: IoBufMut>(&self, buf: B, offset: u64) -> LocalOp<ReadAt<B>> {
        match &self.route {
            FileRoute::Home(home, fd) => {
                LocalOp::home(home.clone(), ReadAt::new(*fd, buf, 0, offset))
            }
            FileRoute::Shared(file) => LocalOp::shared(file.read_at(buf, offset)),
        }
    }

    /// Writes the buffer's initialised bytes at `offset`, as
    /// [`File::write_at`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, but a dropped write may still have written.
    pub fn write_at<B: IoBuf>(&self, buf: B, offset: u64) -> LocalOp<WriteAt<B>> {
        match &self.route {
            FileRoute::Home(home, fd) => {
                LocalOp::home(home.clone(), WriteAt::new(*fd, buf, 0, offset))
            }
            FileRoute::Shared(file) => LocalOp::shared(file.write_at(buf, offset)),
        }
    }

    /// Flushes data and metadata, as [`File::sync_all`].
    pub fn sync_all(&self) -> LocalOp<Fsync> {
        match &self.route {
            FileRoute::Home(home, fd) => LocalOp::home(home.clone(), Fsync::new(*fd, false)),
            FileRoute::Shared(file) => LocalOp::shared(file.sync_all()),
        }
    }

    /// Flushes data, as [`File::sync_data`].
    pub fn sync_data(&self) -> LocalOp<Fsync> {
        match &self.route {
            FileRoute::Home(home, fd) => LocalOp::home(home.clone(), Fsync::new(*fd, true)),
            FileRoute::Shared(file) => LocalOp::shared(file.sync_data()),
        }
    }
}

/// The future of one op made by a [`LocalRing`]: an [`Op`] that cannot
/// leave its thread, and so skips the atomic protocol on the home path.
/// Resolves to the same output as the `Op` of the same kind.
///
/// `!Send`: run it in a task that stays on its thread (`spawn_local`, a
/// [`LocalContext`](crate::LocalContext)'s `block_on`, a current-thread
/// runtime's `block_on`). Dropping it before it resolves is safe and never
/// blocks, as for every op: see [the ops module](crate::ops#cancel-safety).
#[must_use = "ops do nothing unless polled"]
pub struct LocalOp<K: OpKind> {
    flight: LocalFlight<K>,
    _not_send: PhantomData<*const ()>,
}

enum LocalFlight<K: OpKind> {
    Home(Flight<K, Home>),
    Shared(Op<K>),
}

impl<K: OpKind> LocalOp<K> {
    fn home(home: Home, kind: K) -> LocalOp<K> {
        LocalOp {
            flight: LocalFlight::Home(Flight::new(home, kind)),
            _not_send: PhantomData,
        }
    }

    fn shared(op: Op<K>) -> LocalOp<K> {
        LocalOp {
            flight: LocalFlight::Shared(op),
            _not_send: PhantomData,
        }
    }
}

impl<K: OpKind> Unpin for LocalOp<K> {}

impl<K: OpKind> Future for LocalOp<K> {
    type Output = K::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<K::Output> {
        match &mut self.get_mut().flight {
            LocalFlight::Home(flight) => flight.poll(cx),
            LocalFlight::Shared(op) => Pin::new(op).poll(cx),
        }
    }
}

impl<K: OpKind> fmt::Debug for LocalOp<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, stage) = match &self.flight {
            LocalFlight::Home(flight) => ("home", flight.stage()),
            LocalFlight::Shared(_) => ("shared", "see Op"),
        };
        f.debug_struct("LocalOp")
            .field("kind", &std::any::type_name::<K>())
            .field("path", &path)
            .field("stage", &stage)
            .finish()
    }
}

impl fmt::Debug for LocalRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalRing")
            .field("context", &self.context.id())
            .field("home_path", &self.is_home_path())
            .finish()
    }
}

impl fmt::Debug for LocalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalFile")
            .field("home_path", &self.is_home_path())
            .finish_non_exhaustive()
    }
}
