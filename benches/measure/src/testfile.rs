//! The files the read benchmarks read, and where they read in them.
//!
//! [`TestFile::prepare`] makes a file of pseudo-random bytes (real data, not sparse holes, so the
//! device does real reads) in a cache directory and reuses it across runs: the 1 GiB file for the
//! O_DIRECT `randread` runs and a small one for the page-cache `cached` runs. A file is written
//! under a temporary name, synced, and renamed, so a half-written file is never reused.
//! [`BlockOffsets`] yields the random 4 KiB-aligned offsets every implementation reads at.
//!
//! The cache directory is `$AIOCTX_BENCH_DIR`, else `$CARGO_TARGET_DIR/aioctx-bench`, else
//! `target/aioctx-bench` under the repository's root. It must be on a filesystem that supports
//! O_DIRECT (tmpfs does not).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Size of every read in the read benchmarks.
pub const BLOCK_LEN: usize = 4096;

/// How the read benchmarks read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// `O_DIRECT` on the large file: every read goes to the device. Runs record per-op latency.
    Direct,
    /// Buffered reads of a file held in the page cache: CPU-bound, measuring per-op overhead.
    /// Runs record throughput only, so that two clock reads per op do not weigh on it.
    Cached,
}

impl ReadMode {
    /// Extra `open(2)` flags for this mode.
    pub fn open_flags(self) -> i32 {
        match self {
            ReadMode::Direct => libc::O_DIRECT,
            ReadMode::Cached => 0,
        }
    }

    /// Whether runs in this mode record per-op latency.
    pub fn records_latency(self) -> bool {
        self == ReadMode::Direct
    }
}

/// A file of pseudo-random data, `len` bytes long.
#[derive(Clone, Debug)]
pub struct TestFile {
    /// Where the file is.
    pub path: PathBuf,
    /// Its length in bytes, a multiple of [`BLOCK_LEN`].
    pub len: u64,
}

/// The directory test files are cached in.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AIOCTX_BENCH_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Path::new(&target).join("aioctx-bench");
    }
    // This package is `benches/measure` under the repository's root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2);
    root.expect("benches/measure has two parents")
        .join("target")
        .join("aioctx-bench")
}

impl TestFile {
    /// Returns the cached file `<name>-<MiB>MiB.dat` of `len` bytes, writing it first if it does
    /// not exist yet (or has the wrong length).
    ///
    /// # Panics
    ///
    /// Panics if `len` is not a non-zero multiple of [`BLOCK_LEN`].
    pub fn prepare(name: &str, len: u64) -> io::Result<TestFile> {
        assert!(
            len > 0 && len.is_multiple_of(BLOCK_LEN as u64),
            "test file length must be whole blocks"
        );
        let dir = cache_dir();
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}-{}MiB.dat", len >> 20));
        if fs::metadata(&path).is_ok_and(|meta| meta.len() == len) {
            return Ok(TestFile { path, len });
        }
        let partial = dir.join(format!(".{name}-{}.partial", std::process::id()));
        write_random_data(&partial, len)?;
        fs::rename(&partial, &path)?;
        Ok(TestFile { path, len })
    }

    /// Number of whole blocks in the file.
    pub fn blocks(&self) -> u64 {
        self.len / BLOCK_LEN as u64
    }

    /// Opens the file read-only, with `O_DIRECT` for [`ReadMode::Direct`].
    pub fn open(&self, mode: ReadMode) -> io::Result<fs::File> {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(mode.open_flags())
            .open(&self.path)
    }

    /// Reads the whole file once so that it sits in the page cache.
    pub fn warm_page_cache(&self) -> io::Result<()> {
        let mut file = fs::File::open(&self.path)?;
        let mut chunk = vec![0u8; 1 << 20];
        while file.read(&mut chunk)? > 0 {}
        Ok(())
    }
}

fn write_random_data(path: &Path, len: u64) -> io::Result<()> {
    let mut file = fs::File::create(path)?;
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < len {
        for word in chunk.chunks_exact_mut(8) {
            state = xorshift(state);
            word.copy_from_slice(&state.to_le_bytes());
        }
        let take = (len - written).min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..take])?;
        written += take as u64;
    }
    file.sync_all()
}

fn xorshift(mut state: u64) -> u64 {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    state
}

/// Uniformly random block-aligned offsets into a file (xorshift64: cheap, and deterministic per
/// seed so every implementation gets the same kind of stream).
#[derive(Clone, Debug)]
pub struct BlockOffsets {
    state: u64,
    blocks: u64,
}

impl BlockOffsets {
    /// Offsets into `file`, from a stream chosen by `seed`.
    pub fn new(file: &TestFile, seed: u64) -> BlockOffsets {
        BlockOffsets {
            state: xorshift(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1),
            blocks: file.blocks(),
        }
    }

    /// The next offset, in bytes.
    pub fn next_offset(&mut self) -> u64 {
        self.state = xorshift(self.state);
        (self.state % self.blocks) * BLOCK_LEN as u64
    }
}
