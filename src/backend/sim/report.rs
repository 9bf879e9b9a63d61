//! What a crash drew: for each directory, which of its name changes not yet
//! durable survived; for each file, which of its unsynced sectors reached
//! the disk, the length it came back with, and what a failed fsync had
//! dropped before. Plain data, printed for a failing seed. Imports nothing
//! from the crate.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// The crash state a seed drew: what of everything not yet durable survived
/// one crash. [`SimHandle::crash_reports`](crate::sim::SimHandle::crash_reports)
/// lists them; an exploration's failure prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CrashReport {
    /// When: Tokio time since the context was built.
    pub at: Duration,
    /// Each directory with name changes not yet durable at the crash.
    pub directories: Vec<DirectoryCrash>,
    /// Each file with data not yet durable at the crash (or dropped by a
    /// failed fsync before it).
    pub files: Vec<FileCrash>,
}

/// A directory's name changes that were not yet durable at a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirectoryCrash {
    /// Its path before the crash.
    pub path: PathBuf,
    /// Its changes, in the order they were made. A rename between two
    /// directories is listed under both, kept or lost as one.
    pub changes: Vec<NameChange>,
}

/// One change of a name: a create, rename, link or removal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NameChange {
    /// Its number among the context's name changes, from 1.
    pub seq: u64,
    /// What it was, as `rename /db/CURRENT.tmp -> /db/CURRENT`.
    pub what: String,
    /// Whether it survived the crash.
    pub kept: bool,
}

/// A file's data that was not yet durable at a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileCrash {
    /// A path of the file before the crash (a file with no name left shows
    /// its inode).
    pub path: PathBuf,
    /// The lengths the file could come back with (the one on disk first),
    /// and the one it did.
    pub sizes: Vec<u64>,
    /// The length it came back with.
    pub size: u64,
    /// Byte ranges (whole sectors) written since its last fsync that
    /// reached the disk.
    pub kept: Vec<Range<u64>>,
    /// Byte ranges written since its last fsync that did not.
    pub lost: Vec<Range<u64>>,
    /// Byte ranges a failed fsync dropped before the crash: never written,
    /// though reads saw them until the crash.
    pub dropped: Vec<Range<u64>>,
    /// Byte ranges of writes in flight at the crash that reached the disk
    /// (torn writes).
    pub torn: Vec<Range<u64>>,
}

impl FileCrash {
    pub(super) fn new(size: u64, dropped: Vec<Range<u64>>) -> FileCrash {
        FileCrash {
            path: PathBuf::new(),
            sizes: vec![size],
            size,
            kept: Vec::new(),
            lost: Vec::new(),
            dropped,
            torn: Vec::new(),
        }
    }
}

/// Ranges as `0..512, 1024..4096`, adjacent ones merged.
struct Ranges<'a>(&'a [Range<u64>]);

impl fmt::Display for Ranges<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut merged: Vec<Range<u64>> = Vec::new();
        for range in self.0 {
            match merged.last_mut() {
                Some(last) if last.end == range.start => last.end = range.end,
                _ => merged.push(range.clone()),
            }
        }
        for (i, range) in merged.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}..{}", range.start, range.end)?;
        }
        Ok(())
    }
}

impl fmt::Display for CrashReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "crash at {:?}", self.at)?;
        if self.directories.is_empty() && self.files.is_empty() {
            return f.write_str(": everything was durable");
        }
        f.write_str(", what was not durable:")?;
        for dir in &self.directories {
            write!(f, "\n  directory {}:", dir.path.display())?;
            for change in &dir.changes {
                let kept = if change.kept { "kept" } else { "lost" };
                write!(f, "\n    {kept} #{} {}", change.seq, change.what)?;
            }
        }
        for file in &self.files {
            write!(f, "\n  file {}:", file.path.display())?;
            if file.sizes.len() > 1 {
                write!(f, " size {} of {:?};", file.size, file.sizes)?;
            } else {
                write!(f, " size {};", file.size)?;
            }
            if !file.kept.is_empty() {
                write!(f, " reached the disk {};", Ranges(&file.kept))?;
            }
            if !file.lost.is_empty() {
                write!(f, " lost {};", Ranges(&file.lost))?;
            }
            if !file.dropped.is_empty() {
                write!(f, " dropped by a failed fsync {};", Ranges(&file.dropped))?;
            }
            if !file.torn.is_empty() {
                write!(f, " torn writes kept {};", Ranges(&file.torn))?;
            }
        }
        Ok(())
    }
}
