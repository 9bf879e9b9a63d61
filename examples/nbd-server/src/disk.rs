//! The export and its disk I/O: opening the image (with the checks that make
//! startup errors clear), and the five things a request can do to it —
//! read, write, flush, trim, write zeroes — as ops on an aioctx [`File`].
//!
//! [`Export`] is what every connection shares: the image's fd, size and
//! mode, and the locks that keep read-modify-writes of a block apart.
//! [`Disk`] is the export seen from one pool member: a [`File`] over a dup of
//! the fd (or, with [`ImageFiles::Registered`], an open of its own in the
//! member's file table), whose ops go to that member's ring, so a connection
//! served on the member's home thread submits them locally. A request whose
//! buffer is a registered one is read or written with `READ_FIXED` /
//! `WRITE_FIXED` (see `bufpool.rs`), any other the plain way.
//!
//! # O_DIRECT and unaligned requests
//!
//! With `--direct` every op the kernel sees is aligned to the file's direct
//! I/O alignment `A` (from `statx(STATX_DIOALIGN)`, else 4096). Clients may
//! still send byte-granular requests (we advertise a minimum block size of
//! 1), so a request's bytes live in a buffer that covers whole blocks: the
//! payload starts at `offset % A` (its *head*). A read reads the covering
//! blocks and replies from the middle of the buffer, without a copy. A write
//! whose edges are unaligned reads the edge blocks, patches in the bytes
//! around the payload, and writes the covering blocks, holding the
//! [`EdgeLocks`] of those blocks so that two writes sharing a block (but not
//! bytes) never undo each other.

use std::fs;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use aioctx::Context;
use aioctx::buf::{AlignedBuf, IoBuf};
use aioctx::fs::File;
use tokio::sync::{Mutex, MutexGuard};

use crate::bufpool::Buffer;
use crate::proto;

/// Writes of zeroes the filesystem cannot do itself go out in chunks this big.
const ZERO_CHUNK: usize = 1 << 20;

/// The served image, shared by all connections.
#[derive(Debug)]
pub struct Export {
    /// Bytes in the export.
    pub size: u64,
    pub read_only: bool,
    /// The export's name (the empty name is accepted too).
    pub name: String,
    /// The alignment of every op when serving with O_DIRECT; 1 otherwise.
    pub align: usize,
    fd: OwnedFd,
    edges: EdgeLocks,
}

impl Export {
    /// Opens the image, or says in a sentence why it cannot be served.
    pub fn open(path: &Path, direct: bool, read_only: bool, name: &str) -> Result<Export, String> {
        let shown = path.display();
        let kind = fs::metadata(path)
            .map_err(|e| format!("cannot open image {shown}: {e}"))?
            .file_type();
        if !kind.is_file() && !kind.is_block_device() {
            return Err(format!(
                "cannot serve {shown}: not a regular file or a block device"
            ));
        }
        let mut options = fs::OpenOptions::new();
        options.read(true).write(!read_only);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        let mut file = options.open(path).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) if direct => format!(
                "cannot open image {shown} with O_DIRECT (--direct): the filesystem does not \
                 support direct I/O (tmpfs, for one, does not); serve it without --direct or \
                 move it to another filesystem"
            ),
            _ => format!("cannot open image {shown}: {e}"),
        })?;
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| format!("cannot find the size of {shown}: {e}"))?;
        let align = if direct {
            let align = direct_io_alignment(&file)
                .map_err(|e| format!("cannot serve {shown} with --direct: {e}"))?;
            if size % align as u64 != 0 {
                return Err(format!(
                    "cannot serve {shown} with --direct: its size ({size} bytes) is not a \
                     multiple of its direct I/O alignment ({align} bytes); serve it without \
                     --direct or resize it"
                ));
            }
            probe_direct_read(&file, align, size)
                .map_err(|e| format!("cannot serve {shown} with --direct: {e}"))?;
            align
        } else {
            1
        };
        Ok(Export {
            size,
            read_only,
            name: name.to_owned(),
            align,
            fd: file.into(),
            edges: EdgeLocks::new(),
        })
    }

    /// The transmission flags every client is told.
    ///
    /// A read-only export offers no write commands (they are refused with
    /// `EPERM` all the same). `CAN_MULTI_CONN` holds because all connections share one file, so
    /// one page cache, and a flush is an `fdatasync` of that file: what one
    /// connection flushed is durable for all of them.
    pub fn transmission_flags(&self) -> u16 {
        let mut flags = proto::FLAG_HAS_FLAGS | proto::FLAG_SEND_FLUSH | proto::FLAG_CAN_MULTI_CONN;
        if self.read_only {
            flags |= proto::FLAG_READ_ONLY;
        } else {
            flags |= proto::FLAG_SEND_FUA
                | proto::FLAG_SEND_TRIM
                | proto::FLAG_SEND_WRITE_ZEROES
                | proto::FLAG_SEND_FAST_ZERO;
        }
        flags
    }

    /// The block size at which requests need no read-modify-write.
    pub fn preferred_block(&self) -> u32 {
        (self.align as u32).max(4096)
    }

    /// Whether `name` selects this export.
    pub fn answers_to(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.name.as_bytes()
    }

    /// Where a request's bytes sit in its buffer: the payload's offset in
    /// the buffer (its head) and the buffer's length in whole blocks.
    pub fn layout(&self, offset: u64, len: usize) -> (usize, usize) {
        let head = (offset % self.align as u64) as usize;
        (head, (head + len).next_multiple_of(self.align))
    }

    /// The alignment request buffers are allocated with.
    pub fn buffer_alignment(&self) -> usize {
        self.align.max(AlignedBuf::DEFAULT_ALIGNMENT)
    }

    /// The export as seen from `ctx`: a file whose ops go to its ring.
    /// With [`ImageFiles::Registered`] it is a file of its own (the image
    /// reopened through `/proc/self/fd`, so the same inode) in the ring's
    /// file table; otherwise a dup of the export's fd.
    pub async fn disk_on(self: &Arc<Self>, ctx: &Context, files: ImageFiles) -> io::Result<Disk> {
        let file = match files {
            ImageFiles::Shared => File::from_fd(ctx, self.fd.try_clone()?),
            ImageFiles::Registered => {
                let path = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
                aioctx::fs::OpenOptions::new()
                    .read(true)
                    .write(!self.read_only)
                    .direct(self.align > 1)
                    .register(true)
                    .open(ctx, path)
                    .await?
            }
        };
        Ok(Disk {
            file,
            export: self.clone(),
        })
    }
}

/// How each pool member reaches the image (`--image-files`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFiles {
    /// A dup of one fd: one open file shared by every member.
    Shared,
    /// One open file per member, registered with its ring
    /// (`IOSQE_FIXED_FILE`: no fd lookup per op).
    Registered,
}

/// The export on one context.
#[derive(Debug)]
pub struct Disk {
    file: File,
    pub export: Arc<Export>,
}

impl Disk {
    /// Whether the file is in the ring's file table.
    pub fn is_registered(&self) -> bool {
        self.file.is_registered()
    }

    /// Reads `len` bytes at `offset` into `buf` (capacity from
    /// [`Export::layout`]); on success the data is at `head..head + len`.
    pub async fn read(&self, offset: u64, len: usize, buf: Buffer) -> (io::Result<()>, Buffer) {
        let (head, covering) = self.export.layout(offset, len);
        let start = offset - head as u64;
        let (mut filled, mut buf) = match buf {
            // A fixed read fills its whole buffer: only a buffer of exactly
            // the covering size is read this way.
            Buffer::Fixed(fixed) if fixed.capacity() == covering => {
                let (result, fixed) = self.file.read_fixed_at(fixed, start).await;
                match result {
                    Ok(n) => (n.min(covering), Buffer::Fixed(fixed)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => (0, Buffer::Fixed(fixed)),
                    Err(e) => return (Err(e), Buffer::Fixed(fixed)),
                }
            }
            buf => (0, buf),
        };
        let mut result = Ok(());
        if filled < covering {
            // The plain path, or the rest of a short fixed read.
            let (done, slice) = self
                .file
                .read_exact_at(buf.slice(filled..covering), start + filled as u64)
                .await;
            buf = slice.into_inner();
            result = done;
            filled = covering;
        }
        buf.set_len(filled);
        (result, buf)
    }

    /// Writes the `len` payload bytes at `buf[head..head + len]` to
    /// `offset`, reading the edge blocks first where they are unaligned
    /// (direct mode only); with `fua`, durably.
    pub async fn write(
        &self,
        offset: u64,
        len: usize,
        mut buf: Buffer,
        fua: bool,
    ) -> (io::Result<()>, Buffer) {
        let (head, covering) = self.export.layout(offset, len);
        let start = offset - head as u64;
        buf.set_len(covering);
        let result = if head == 0 && covering == len {
            let (result, returned) = self.write_covering(buf, start).await;
            buf = returned;
            result
        } else {
            let _edges = self.export.edges.lock(&self.export, start, covering).await;
            match self.fill_edges(&mut buf, start, head, len).await {
                Ok(()) => {
                    let (result, returned) = self.write_covering(buf, start).await;
                    buf = returned;
                    result
                }
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(()) if fua => (self.flush().await, buf),
            other => (other, buf),
        }
    }

    /// Writes all of `buf` (its length) at `start`: one fixed write for a
    /// registered buffer (the rest, after a short one, the plain way).
    async fn write_covering(&self, buf: Buffer, start: u64) -> (io::Result<()>, Buffer) {
        let total = buf.len();
        let (written, buf) = match buf {
            Buffer::Fixed(fixed) => {
                let (result, fixed) = self.file.write_fixed_at(fixed, start).await;
                match result {
                    Ok(n) => (n.min(total), Buffer::Fixed(fixed)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => (0, Buffer::Fixed(fixed)),
                    Err(e) => return (Err(e), Buffer::Fixed(fixed)),
                }
            }
            buf => (0, buf),
        };
        if written == total {
            return (Ok(()), buf);
        }
        let (result, slice) = self
            .file
            .write_all_at(buf.slice(written..total), start + written as u64)
            .await;
        let mut buf = slice.into_inner();
        buf.set_len(total);
        (result, buf)
    }

    /// Read-modify-write: copies the bytes of the first and last block of
    /// `buf` that lie outside the payload from the disk.
    async fn fill_edges(
        &self,
        buf: &mut Buffer,
        start: u64,
        head: usize,
        len: usize,
    ) -> io::Result<()> {
        let align = self.export.align;
        let covering = buf.len();
        let tail = covering - head - len;
        let mut block = AlignedBuf::with_alignment(align, self.export.buffer_alignment());
        if head != 0 {
            block = self.read_block(block, start).await?;
            buf[..head].copy_from_slice(&block[..head]);
        }
        if tail != 0 {
            let last = start + (covering - align) as u64;
            if last != start || head == 0 {
                block = self.read_block(block, last).await?;
            }
            buf[covering - tail..].copy_from_slice(&block[align - tail..]);
        }
        Ok(())
    }

    async fn read_block(&self, block: AlignedBuf, offset: u64) -> io::Result<AlignedBuf> {
        let size = block.capacity().min(self.export.align);
        let (result, slice) = self.file.read_exact_at(block.slice(0..size), offset).await;
        let mut block = slice.into_inner();
        block.set_len(size);
        result.map(|()| block)
    }

    /// Makes every write that has completed durable (`fdatasync`).
    pub async fn flush(&self) -> io::Result<()> {
        self.file.sync_data().await
    }

    /// Discards a range by punching a hole. A trim is a hint: where the
    /// filesystem cannot punch holes, nothing happens. With O_DIRECT only
    /// the whole aligned blocks inside the range are punched, so the page
    /// cache is never involved.
    pub async fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        let align = self.export.align as u64;
        let start = offset.next_multiple_of(align);
        let end = (offset + len) / align * align;
        if end > start {
            let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            match self.file.fallocate(start, end - start, mode).await {
                Ok(()) => {}
                Err(e) if cannot_allocate(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if fua { self.flush().await } else { Ok(()) }
    }

    /// Zeroes a range: by punching a hole when holes are allowed, else by
    /// `FALLOC_FL_ZERO_RANGE` (allocated zeroes), else by writing zeroes.
    /// `fast` asks for `ENOTSUP` instead of the slow path.
    pub async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_trim: bool,
        fast: bool,
        fua: bool,
    ) -> io::Result<()> {
        let keep = libc::FALLOC_FL_KEEP_SIZE;
        let modes: &[i32] = if may_trim {
            &[
                libc::FALLOC_FL_PUNCH_HOLE | keep,
                libc::FALLOC_FL_ZERO_RANGE | keep,
            ]
        } else {
            &[libc::FALLOC_FL_ZERO_RANGE | keep]
        };
        let mut zeroed = false;
        {
            let (head, _) = self.export.layout(offset, 0);
            let unaligned = head != 0 || !(offset + len).is_multiple_of(self.export.align as u64);
            let _edges = if unaligned {
                let start = offset - head as u64;
                let covering = (head as u64 + len).next_multiple_of(self.export.align as u64);
                Some(
                    self.export
                        .edges
                        .lock(&self.export, start, covering as usize)
                        .await,
                )
            } else {
                None
            };
            for &mode in modes {
                match self.file.fallocate(offset, len, mode).await {
                    Ok(()) => {
                        zeroed = true;
                        break;
                    }
                    Err(e) if cannot_allocate(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        if !zeroed {
            if fast {
                return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
            }
            self.write_zero_bytes(offset, len).await?;
        }
        if fua { self.flush().await } else { Ok(()) }
    }

    /// The slow path of [`write_zeroes`](Self::write_zeroes): zeroes written
    /// in chunks through [`write`](Self::write).
    async fn write_zero_bytes(&self, offset: u64, len: u64) -> io::Result<()> {
        let chunk_cap = ZERO_CHUNK + 2 * self.export.align;
        let mut buf = Buffer::Plain(AlignedBuf::with_alignment(
            chunk_cap,
            self.export.buffer_alignment(),
        ));
        let mut done = 0u64;
        while done < len {
            let at = offset + done;
            let n = (len - done).min(ZERO_CHUNK as u64) as usize;
            buf.set_len(buf.capacity());
            buf.fill(0);
            let (result, returned) = self.write(at, n, buf, false).await;
            result?;
            buf = returned;
            done += n as u64;
        }
        Ok(())
    }
}

/// Whether a fallocate error means "this file cannot do that", so the next
/// method should be tried (block devices refuse unaligned ranges with EINVAL).
fn cannot_allocate(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL | libc::ENODEV)
    )
}

/// Striped locks over the export's blocks, held by every direct-mode op
/// that rewrites part of a block: the two edge blocks of its range map to at
/// most two stripes, always taken in stripe order, so two such ops cannot
/// deadlock. Aligned ops take none.
#[derive(Debug)]
struct EdgeLocks {
    stripes: Box<[Mutex<()>]>,
}

/// The guards of one op's edge blocks.
type EdgeGuards<'a> = (MutexGuard<'a, ()>, Option<MutexGuard<'a, ()>>);

impl EdgeLocks {
    const STRIPES: u64 = 64;

    fn new() -> EdgeLocks {
        EdgeLocks {
            stripes: (0..Self::STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Locks the first and last block of the aligned range
    /// `start..start + covering`.
    async fn lock(&self, export: &Export, start: u64, covering: usize) -> EdgeGuards<'_> {
        let align = export.align as u64;
        let first = (start / align) % Self::STRIPES;
        let last = ((start + covering.max(1) as u64 - 1) / align) % Self::STRIPES;
        let (low, high) = (first.min(last), first.max(last));
        let low_guard = self.stripes[low as usize].lock().await;
        let high_guard = if high != low {
            Some(self.stripes[high as usize].lock().await)
        } else {
            None
        };
        (low_guard, high_guard)
    }
}

/// The file's O_DIRECT alignment: `statx(STATX_DIOALIGN)` where the kernel
/// reports it, 4096 (safe on any device) where it does not.
fn direct_io_alignment(file: &fs::File) -> io::Result<usize> {
    // SAFETY: statx is plain data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open for the duration of the call, the path is a
    // NUL-terminated empty string (with AT_EMPTY_PATH: the fd itself), and
    // `stx` is a valid, writable statx.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return Ok(AlignedBuf::DEFAULT_ALIGNMENT);
    }
    if stx.stx_dio_offset_align == 0 {
        return Err(io::Error::other(
            "the filesystem reports no direct I/O support for this file",
        ));
    }
    let align = stx.stx_dio_offset_align.max(stx.stx_dio_mem_align).max(512) as usize;
    if !align.is_power_of_two() || align > 1 << 16 {
        return Ok(AlignedBuf::DEFAULT_ALIGNMENT);
    }
    Ok(align)
}

/// Reads the first block with O_DIRECT, so that a filesystem that accepts
/// the flag at open but fails the I/O is caught at startup.
fn probe_direct_read(file: &fs::File, align: usize, size: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    if size == 0 {
        return Ok(());
    }
    let mut block = AlignedBuf::with_alignment(align, align.max(AlignedBuf::DEFAULT_ALIGNMENT));
    block.set_len(align);
    file.read_exact_at(&mut block, 0)
        .map_err(|e| io::Error::new(e.kind(), format!("an O_DIRECT read failed: {e}")))
}
