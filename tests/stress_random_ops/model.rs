//! The dice, the byte every write puts at each position, and what is known
//! of each file's contents.

use std::path::PathBuf;

use crate::support;

/// Size of each actor's private files, and of each actor's slice of the
/// shared file.
pub(crate) const FILE_SIZE: u64 = 64 * 1024;
pub(crate) const SLICE: u64 = 16 * 1024;

/// The support crate's xorshift with the draws this test needs.
pub(crate) struct Dice(pub(crate) support::Rng);

impl Dice {
    pub(crate) fn new(seed: u64) -> Dice {
        // Spread nearby seeds apart (splitmix64), so actor n and n+1 differ.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Dice(support::Rng::new(z ^ (z >> 31)))
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n.max(1)
    }
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// Index into `weights`, drawn in proportion to them.
    pub(crate) fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut pick = self.below(weights.iter().sum());
        for (i, &w) in weights.iter().enumerate() {
            if pick < w {
                return i;
            }
            pick -= w;
        }
        unreachable!("pick below the sum")
    }
    /// A transfer length: mostly small, sometimes a page or several.
    pub(crate) fn len(&mut self) -> usize {
        match self.below(4) {
            0 => self.range(1, 64) as usize,
            1 => self.range(1, 4096) as usize,
            2 => 4096 * self.range(1, 2) as usize,
            _ => self.range(1, 12 * 1024) as usize,
        }
    }
}

/// The byte every write puts at `pos` of file `file`: never 0, so a hole is
/// told apart from data, and the same for every writer, so writes that race
/// (or were dropped and land late) cannot disagree.
pub(crate) fn pattern(file: u64, pos: u64) -> u8 {
    let x = ((file << 40) ^ pos).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 56) % 255) as u8 + 1
}

pub(crate) fn pattern_bytes(file: u64, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern(file, offset + i)).collect()
}

pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One file and which of its bytes must hold their pattern.
pub(crate) struct FileModel {
    pub(crate) id: u64,
    pub(crate) path: PathBuf,
    /// `must[pos]`: a kept write reported `pos` written and no kept truncate
    /// below `pos` came after.
    pub(crate) must: Vec<bool>,
    /// One past the last `must` byte: the file is at least this long.
    pub(crate) extent: u64,
    /// Where a truncate that failed may still cut the file, at any moment
    /// later (the fallback cannot stop a syscall already running when
    /// shutdown resolves its op, and in a pool the other members' writes go
    /// on): no byte at or past it is known written again.
    pub(crate) doubt_from: u64,
}

impl FileModel {
    pub(crate) fn new(id: u64, path: PathBuf, size: u64) -> FileModel {
        FileModel {
            id,
            path,
            must: vec![false; size as usize],
            extent: 0,
            doubt_from: u64::MAX,
        }
    }

    /// A copy of what is known now.
    pub(crate) fn copy(&self) -> FileModel {
        FileModel {
            id: self.id,
            path: self.path.clone(),
            must: self.must.clone(),
            extent: self.extent,
            doubt_from: self.doubt_from,
        }
    }

    pub(crate) fn written(&mut self, offset: u64, n: usize) {
        let end = (offset + n as u64).min(self.doubt_from) as usize;
        let end = end.min(self.must.len());
        if offset as usize >= end {
            return;
        }
        self.must[offset as usize..end].fill(true);
        self.extent = self.extent.max(end as u64);
    }

    pub(crate) fn truncated(&mut self, len: u64) {
        let from = (len as usize).min(self.must.len());
        self.must[from..].fill(false);
        self.extent = self
            .must
            .iter()
            .rposition(|&m| m)
            .map_or(0, |p| p as u64 + 1);
    }

    /// A truncate to `len` that failed: it may have run, or run later.
    pub(crate) fn truncate_failed(&mut self, len: u64) {
        self.truncated(len);
        self.doubt_from = self.doubt_from.min(len);
    }

    /// What is known of `offset..offset + len` now: a read issued now must
    /// see at least this.
    pub(crate) fn snapshot(&self, offset: u64, len: usize) -> Snapshot {
        let start = (offset as usize).min(self.must.len());
        let end = (offset as usize + len).min(self.must.len());
        Snapshot {
            file: self.id,
            offset,
            must: self.must[start..end].to_vec(),
            extent: self.extent,
        }
    }
}

pub(crate) struct Snapshot {
    pub(crate) file: u64,
    pub(crate) offset: u64,
    pub(crate) must: Vec<bool>,
    pub(crate) extent: u64,
}

impl Snapshot {
    /// Checks bytes read at `self.offset`: each 0 or its pattern, and its
    /// pattern where known written.
    pub(crate) fn check(&self, data: &[u8], what: &str) {
        for (i, &b) in data.iter().enumerate() {
            let pos = self.offset + i as u64;
            let want = pattern(self.file, pos);
            let must = self.must.get(i).copied().unwrap_or(false);
            assert!(
                b == want || (b == 0 && !must),
                "{what}: file {} byte {pos} is {b:#04x}, expected {want:#04x}{}",
                self.file,
                if must { "" } else { " or 0" },
            );
        }
    }

    /// A read that stopped at `end` must not stop before known data.
    pub(crate) fn check_eof(&self, end: u64, what: &str) {
        assert!(
            end >= self.extent,
            "{what}: file {} ended at {end}, but bytes up to {} were written",
            self.file,
            self.extent
        );
    }
}
