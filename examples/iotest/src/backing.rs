//! The disk image the guest reads, and the checksum that proves every mode read the right bytes.
//!
//! By default the image is a file in a fresh directory under [`std::env::temp_dir`], filled with
//! a pattern whose checksum is known before any mode runs; a [`TempDir`] guard removes it when the
//! run ends, also on an error or a panic. With `--path` the image is an existing file or block
//! device, opened read-only, whose reference checksum is taken with plain `read`s first. Either
//! way the free space and O_DIRECT support are checked up front, so a failure names its cause.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Config, DEFAULT_SIZE, Error};

/// Mixes a word's index into the checksum so that data read from the wrong offset changes it.
pub const INDEX_MIX: u64 = 0x9E37_79B9_7F4A_7C15;
/// Spreads each word over the checksum's bits before the words are summed.
pub const WORD_MIX: u64 = 0xBF58_476D_1CE4_E5B9;

/// The image every mode of one invocation reads.
#[derive(Debug)]
pub struct Backing {
    /// Where the image is: the temporary file or `--path`.
    pub path: PathBuf,
    /// How many bytes each run reads, from offset 0: a whole number of chunks.
    pub size: u64,
    /// The checksum of those bytes, from the pattern or from a plain read of `--path`.
    pub expected_checksum: u64,
    /// Each chunk's checksum, by chunk number: what the guest's per-chunk reports are checked
    /// against. They sum (wrapping) to `expected_checksum`.
    pub chunk_checksums: Vec<u64>,
    /// Removes the temporary image when dropped; `None` for `--path`.
    _temp_dir: Option<TempDir>,
}

/// Makes or checks the image `config` asks for.
///
/// # Errors
///
/// [`Error::BadPath`] when `--path` cannot be opened or is neither a regular file nor a block
/// device, [`Error::DirectIoUnsupported`] when its filesystem refuses O_DIRECT,
/// [`Error::NoSpace`] when the temporary directory cannot hold the image, and
/// [`Error::InvalidConfig`] when `--size` does not fit the image.
pub fn prepare(config: &Config) -> Result<Backing, Error> {
    match &config.path {
        Some(path) => open_existing(config, path),
        None => create_temporary(config),
    }
}

/// Opens the image for the guest's reads, with O_DIRECT unless `direct_io` is false.
pub fn open_for_reading(path: &Path, direct_io: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    if direct_io {
        options.custom_flags(libc::O_DIRECT);
    }
    options.open(path)
}

/// The checksum of `data` read from `offset`: a sum over its 8-byte words, each mixed with its
/// index in the image, so reads may complete in any order but must each land at their offset.
///
/// `offset` and `data.len()` are multiples of 8, as every chunk is.
pub fn checksum_chunk(offset: u64, data: &[u8]) -> u64 {
    debug_assert!(
        offset.is_multiple_of(8) && data.len().is_multiple_of(8),
        "chunks are whole words"
    );
    let first_word = offset / 8;
    data.chunks_exact(8)
        .zip(first_word..)
        .fold(0u64, |sum, (bytes, index)| {
            let word = u64::from_le_bytes(bytes.try_into().expect("chunks_exact yields 8 bytes"));
            sum.wrapping_add((word ^ index.wrapping_mul(INDEX_MIX)).wrapping_mul(WORD_MIX))
        })
}

/// The pattern's word at `index`: splitmix64, so neighbouring words and chunks all differ.
fn pattern_word(index: u64) -> u64 {
    let mut z = index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn open_existing(config: &Config, path: &Path) -> Result<Backing, Error> {
    let bad_path = |reason: String| Error::BadPath {
        path: path.to_owned(),
        reason,
    };
    let mut file = File::open(path).map_err(|err| bad_path(err.to_string()))?;
    let file_type = file
        .metadata()
        .map_err(|err| bad_path(err.to_string()))?
        .file_type();
    if !file_type.is_file() && !file_type.is_block_device() {
        return Err(bad_path("not a regular file or a block device".to_owned()));
    }
    if config.direct_io {
        probe_direct_io(path)?;
    }
    // A block device's metadata says length 0; seeking to its end gives its size.
    let len = file
        .seek(SeekFrom::End(0))
        .map_err(|err| bad_path(format!("cannot find its size: {err}")))?;
    let chunk = config.chunk as u64;
    let size = match config.size {
        Some(size) if size > len => {
            return Err(Error::InvalidConfig(format!(
                "--size {size} is larger than {} ({len} bytes)",
                path.display()
            )));
        }
        Some(size) => size,
        None => DEFAULT_SIZE.min(len - len % chunk),
    };
    if size == 0 {
        return Err(bad_path(format!(
            "{len} bytes is smaller than one {chunk}-byte chunk"
        )));
    }
    file.seek(SeekFrom::Start(0))
        .and_then(|_| checksums_of(&mut file, size, config.chunk))
        .map(|chunk_checksums| Backing {
            path: path.to_owned(),
            size,
            expected_checksum: total(&chunk_checksums),
            chunk_checksums,
            _temp_dir: None,
        })
        .map_err(|err| bad_path(format!("cannot read it: {err}")))
}

fn create_temporary(config: &Config) -> Result<Backing, Error> {
    let size = config.size.unwrap_or(DEFAULT_SIZE);
    let parent = std::env::temp_dir();
    let available = available_bytes(&parent).map_err(|source| Error::Io {
        context: format!("cannot find the free space in {}", parent.display()),
        source,
    })?;
    if available < size {
        return Err(Error::NoSpace {
            dir: parent,
            needed: size,
            available,
        });
    }
    let temp_dir = TempDir::create(&parent).map_err(|source| Error::Io {
        context: format!("cannot create a directory in {}", parent.display()),
        source,
    })?;
    let path = temp_dir.path.join("disk.img");
    let write_error = |source| Error::Io {
        context: format!("cannot write the image {}", path.display()),
        source,
    };
    let file = File::create_new(&path).map_err(write_error)?;
    if config.direct_io {
        probe_direct_io(&path)?;
    }
    let chunk_checksums = fill_with_pattern(file, size, config.chunk).map_err(write_error)?;
    Ok(Backing {
        path,
        size,
        expected_checksum: total(&chunk_checksums),
        chunk_checksums,
        _temp_dir: Some(temp_dir),
    })
}

/// Fails with [`Error::DirectIoUnsupported`] when `path`'s filesystem refuses O_DIRECT, which it
/// says with EINVAL at open time.
fn probe_direct_io(path: &Path) -> Result<(), Error> {
    match open_for_reading(path, true) {
        Ok(_) => Ok(()),
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => Err(Error::DirectIoUnsupported {
            path: path.to_owned(),
        }),
        Err(err) => Err(Error::BadPath {
            path: path.to_owned(),
            reason: format!("cannot open it with O_DIRECT: {err}"),
        }),
    }
}

/// Writes `size` bytes of the pattern to the empty `file`, a chunk at a time, flushed to the
/// device so the first timed run does not pay for the write-back, and returns each chunk's
/// checksum.
fn fill_with_pattern(mut file: File, size: u64, chunk: usize) -> io::Result<Vec<u64>> {
    let mut piece = vec![0u8; chunk];
    let mut checksums = Vec::new();
    for offset in (0..size).step_by(chunk) {
        for (bytes, index) in piece.chunks_exact_mut(8).zip(offset / 8..) {
            bytes.copy_from_slice(&pattern_word(index).to_le_bytes());
        }
        file.write_all(&piece)?;
        checksums.push(checksum_chunk(offset, &piece));
    }
    file.sync_all()?;
    Ok(checksums)
}

/// Each `chunk`'s checksum over the first `size` bytes of `file`, read from position 0.
fn checksums_of(file: &mut File, size: u64, chunk: usize) -> io::Result<Vec<u64>> {
    let mut piece = vec![0u8; chunk];
    let mut checksums = Vec::new();
    for offset in (0..size).step_by(chunk) {
        file.read_exact(&mut piece)?;
        checksums.push(checksum_chunk(offset, &piece));
    }
    Ok(checksums)
}

/// The checksum of the whole image from its chunks'.
fn total(chunk_checksums: &[u64]) -> u64 {
    chunk_checksums
        .iter()
        .fold(0u64, |sum, chunk| sum.wrapping_add(*chunk))
}

/// Bytes an unprivileged user may still write on the filesystem holding `dir`.
fn available_bytes(dir: &Path) -> io::Result<u64> {
    let c_path = CString::new(dir.as_os_str().as_bytes())?;
    let mut stats = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `stats` points to
    // writable memory of the type statvfs(3) fills.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised every field of `stats`.
    let stats = unsafe { stats.assume_init() };
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// A directory of this process's own under the system temp dir, removed with everything in it
/// when dropped (at the end of the run, on an error, or while a panic unwinds).
#[derive(Debug)]
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn create(parent: &Path) -> io::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let path = parent.join(format!("aioctx-iotest-{}-{nanos}", std::process::id()));
        fs::create_dir(&path)?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.path) {
            eprintln!("iotest: could not remove {}: {err}", self.path.display());
        }
    }
}
