//! [`OpenOptions`]: how a [`File`] is opened (as `std::fs::OpenOptions`,
//! plus `O_DIRECT` and registration), relative to the current directory or
//! to an open [`Dir`].

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use crate::context::Context;
use crate::context::state::ContextState;
use crate::file::{FileHandles, OpenFile};
use crate::op::Op;
use crate::ops::OpenAt;
use crate::ops::path::DirFd;
use crate::pool::membership::Membership;
use crate::pool::placement::Anchor;

use super::{Dir, File};

/// Options for opening a [`File`], as `std::fs::OpenOptions`, plus `direct`.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    direct: bool,
    register: bool,
    custom_flags: i32,
    mode: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// All options off; mode `0o666` (before the umask).
    pub fn new() -> Self {
        OpenOptions {
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            direct: false,
            register: false,
            custom_flags: 0,
            mode: 0o666,
        }
    }

    /// Open for reading.
    pub fn read(&mut self, read: bool) -> &mut Self {
        self.read = read;
        self
    }

    /// Open for writing.
    pub fn write(&mut self, write: bool) -> &mut Self {
        self.write = write;
        self
    }

    /// Open in append mode (positional writes still take their offset on
    /// Linux only when not appending).
    pub fn append(&mut self, append: bool) -> &mut Self {
        self.append = append;
        self
    }

    /// Truncate to zero length on open.
    pub fn truncate(&mut self, truncate: bool) -> &mut Self {
        self.truncate = truncate;
        self
    }

    /// Create the file if it does not exist.
    pub fn create(&mut self, create: bool) -> &mut Self {
        self.create = create;
        self
    }

    /// Create the file, failing if it exists.
    pub fn create_new(&mut self, create_new: bool) -> &mut Self {
        self.create_new = create_new;
        self
    }

    /// Bypass the page cache (`O_DIRECT`); see [the module docs](super#o_direct).
    pub fn direct(&mut self, direct: bool) -> &mut Self {
        self.direct = direct;
        self
    }

    /// Registers the file with the ring (its file table), so each op skips
    /// the kernel's fd lookup (`IOSQE_FIXED_FILE`). The file's ops then go to
    /// the context that opened it, even in a pool (the slot is that ring's).
    /// Closing or dropping the file takes it out of the table before its fd
    /// is closed. Where registration is impossible the file is used
    /// unregistered, and [`File::is_registered`] tells: silently where the
    /// context has no file table (the fallback and the simulator, which
    /// have none, and a ring built with
    /// [`Builder::registered_file_slots(0)`](crate::Builder::registered_file_slots)
    /// or whose kernel refused the table at setup, logged then at `debug`);
    /// with a `warn` event where the table is full or the kernel refuses
    /// the file (once per context: the first failure to register a file or
    /// buffers is logged, not every one). Default `false`. On
    /// [`WorkerRings`](crate::runtime::WorkerRings) it changes nothing: each
    /// ring registers the files its ops use on its own (see there).
    pub fn register(&mut self, register: bool) -> &mut Self {
        self.register = register;
        self
    }

    /// Extra `open(2)` flags, or-ed in.
    pub fn custom_flags(&mut self, flags: i32) -> &mut Self {
        self.custom_flags = flags;
        self
    }

    /// Permission bits for a created file.
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }

    /// Opens `path` through `ctx`'s ring.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for contradictory options or a path with a NUL byte;
    /// otherwise the kernel's `openat` error (`EINVAL` for `O_DIRECT` on a
    /// filesystem that does not support it).
    pub async fn open(&self, ctx: &Context, path: impl AsRef<Path>) -> io::Result<File> {
        let anchor = Anchor::Context(ctx.state().clone());
        let pool = ctx.membership().cloned();
        self.open_from(ctx.state(), pool, anchor, DirFd::cwd(), path.as_ref())
            .await
    }

    /// Opens `path` relative to the directory `dir` (`openat(2)`), through
    /// the ring of `dir`'s context; an absolute `path` ignores `dir`.
    ///
    /// # Errors
    ///
    /// As [`open`](OpenOptions::open).
    pub async fn open_at(&self, dir: &Dir, path: impl AsRef<Path>) -> io::Result<File> {
        let (anchor, state, pool) = dir.placement();
        self.open_from(&state, pool, anchor, dir.fd_for(&state), path.as_ref())
            .await
    }

    async fn open_from(
        &self,
        state: &Arc<ContextState>,
        pool: Option<Arc<Membership>>,
        anchor: Anchor,
        dir: DirFd,
        path: &Path,
    ) -> io::Result<File> {
        let flags = self.flags()?;
        let fd = Op::new(anchor, OpenAt::new(dir, path, flags, self.mode)?).await?;
        let state = state.clone();
        if !self.register {
            return Ok(File {
                inner: Arc::new(FileHandles::new(OpenFile::new(fd, state, pool, None))),
            });
        }
        // Registered on the home thread, into a file made there: if this
        // future is dropped meanwhile, that file's drop unregisters it.
        let home = state.home();
        let runtime = state.runtime().clone();
        let register = move || {
            let slot = state
                .backend
                .register_file(fd.as_raw_fd())
                .unwrap_or_else(|e| {
                    state.warn_once(&format!(
                        "registering a file failed ({e}); it is used unregistered"
                    ));
                    None
                });
            OpenFile::new(fd, state, pool, slot)
        };
        let file = if home.is_current() {
            register()
        } else {
            runtime
                .spawn(async move { register() })
                .await
                .map_err(|_| crate::error::shutdown_error())?
        };
        Ok(File {
            inner: Arc::new(FileHandles::new(file)),
        })
    }

    fn flags(&self) -> io::Result<i32> {
        let access = match (self.read, self.write || self.append) {
            (true, false) => libc::O_RDONLY,
            (false, true) => libc::O_WRONLY,
            (true, true) => libc::O_RDWR,
            (false, false) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "open needs read, write or append",
                ));
            }
        };
        let writable = self.write || self.append;
        if !writable && (self.truncate || self.create || self.create_new) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "create and truncate need write access",
            ));
        }
        let mut flags = access | self.custom_flags;
        if self.append {
            flags |= libc::O_APPEND;
        }
        if self.truncate {
            flags |= libc::O_TRUNC;
        }
        if self.create_new {
            flags |= libc::O_CREAT | libc::O_EXCL;
        } else if self.create {
            flags |= libc::O_CREAT;
        }
        if self.direct {
            flags |= libc::O_DIRECT;
        }
        Ok(flags)
    }
}
