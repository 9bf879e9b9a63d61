//! A simulated file's bytes as reads see them and as its last fsync left
//! them on disk, and the journal of what changed since (when the crash model
//! keeps some of it). Imports `contents` only.

use super::contents::{Change, Contents};

/// One file's data.
#[derive(Debug, Default)]
pub(super) struct FileData {
    /// What reads see now.
    pub(super) data: Contents,
    /// What survives a crash for sure: `data` as of the last fsync.
    pub(super) durable: Contents,
    /// The changes from `durable` to `data`, in order, when journaling.
    pub(super) unsynced: Vec<Change>,
}

impl FileData {
    /// A file whose contents are `contents`, durably.
    pub(super) fn durable(contents: Contents) -> FileData {
        FileData {
            durable: contents.clone(),
            data: contents,
            unsynced: Vec::new(),
        }
    }

    /// An fsync: everything is durable.
    pub(super) fn sync(&mut self) {
        self.durable.clone_from(&self.data);
        self.unsynced.clear();
    }

    /// A crash: the contents become the durable ones plus the first `kept`
    /// journaled changes, durable from now on.
    pub(super) fn crash(&mut self, kept: impl FnOnce(usize) -> usize) {
        let unsynced = std::mem::take(&mut self.unsynced);
        let kept = kept(unsynced.len()).min(unsynced.len());
        for change in &unsynced[..kept] {
            self.durable.apply(change);
        }
        self.data.clone_from(&self.durable);
    }
}
