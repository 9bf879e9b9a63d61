//! The simulator's directory tree: inodes (files, directories, symlinks),
//! the names directories hold now and on disk, path lookup as the kernel
//! does it (`.`, `..`, symlinks followed up to 40 deep, `NAME_MAX` and
//! `PATH_MAX`), and the persistence of names. Imports `data` (a file's
//! bytes) and `report`.
//!
//! # How names persist
//!
//! Every change of names goes through [`Namespace::change`]: it takes
//! effect for lookups at once and joins the list of *pending* changes, one
//! entry per call (a rename is one change of two names, kept or lost as
//! one). A change becomes durable when a directory it touches is fsynced
//! ([`Namespace::sync_dir`]), or, on a file system that journals names in
//! order, at any fsync ([`Namespace::sync_all`]). At a crash each pending
//! change survives or not as the caller draws (any subset, or a prefix for
//! the ordered model), and each directory's names become its names on disk.
//!
//! Each name on disk remembers the number of the change that set it, so a
//! change applied late (a pending one kept by a crash) never undoes a later
//! one that became durable first: names follow the order the changes were
//! made in, whichever order they reached the disk in.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::data::FileData;
use super::report::{DirectoryCrash, NameChange};

/// An inode's number: its index in the inode table.
pub(super) type Ino = usize;

/// The root directory, which is also the simulator's current directory.
pub(super) const ROOT: Ino = 0;

/// The longest name (`NAME_MAX`) and path (`PATH_MAX` less its NUL).
const NAME_MAX: usize = 255;
const PATH_MAX: usize = 4095;
/// Symlinks followed in one lookup before `ELOOP` (the kernel's limit).
const MAX_SYMLINKS: u32 = 40;

pub(super) fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// What an inode is.
#[derive(Debug)]
pub(super) enum Node {
    File(FileData),
    Dir(Directory),
    Symlink(PathBuf),
}

/// One inode. Inodes are never freed: an inode no name leads to lives on
/// for the fds that still hold it (and, after a crash, for nothing).
#[derive(Debug)]
pub(super) struct Inode {
    pub(super) node: Node,
    /// Permission bits, as created.
    pub(super) perm: u32,
    /// Names that lead to it now.
    pub(super) links: u32,
}

/// A directory: its names now and on disk, and its parent (for `..`).
#[derive(Debug, Default)]
pub(super) struct Directory {
    pub(super) entries: BTreeMap<OsString, Ino>,
    pub(super) parent: Ino,
    /// Its names on disk, each with the number of the change that last set
    /// it; a removal made durable stays (as `None`) while older changes to
    /// the name are pending.
    disk: BTreeMap<OsString, (Option<Ino>, u64)>,
}

impl Directory {
    /// An empty directory under `parent`.
    pub(super) fn under(parent: Ino) -> Directory {
        Directory {
            parent,
            ..Directory::default()
        }
    }
}

/// What the last component of a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Last {
    /// A name in `parent`.
    Name(OsString),
    /// `.`, `..` or the root itself: names no entry that could be changed.
    Special,
}

/// Where a path leads.
#[derive(Debug, Clone)]
pub(super) struct Lookup {
    /// The directory that holds (or would hold) the last component.
    pub(super) parent: Ino,
    pub(super) last: Last,
    /// The inode the path names, if it exists.
    pub(super) ino: Option<Ino>,
    /// The path ended in `/`: it must name a directory.
    pub(super) trailing_slash: bool,
}

impl Lookup {
    /// The name a change would make or remove: `EEXIST`-like paths (`.`,
    /// `..`, `/`) get `special`.
    pub(super) fn name(&self, special: i32) -> io::Result<&OsStr> {
        match &self.last {
            Last::Name(name) => Ok(name),
            Last::Special => Err(errno(special)),
        }
    }
}

/// One name set or removed: directory `dir`'s entry `name` now leads to
/// `to` (or nowhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Edit {
    pub(super) dir: Ino,
    pub(super) name: OsString,
    pub(super) to: Option<Ino>,
}

/// One call's change of names, not yet durable.
#[derive(Debug, Clone)]
pub(super) struct Change {
    seq: u64,
    edits: Vec<Edit>,
    /// What it was, for the crash report.
    what: String,
}

impl Change {
    fn touches(&self, dir: Ino) -> bool {
        self.edits.iter().any(|edit| edit.dir == dir)
    }
}

/// The directory tree.
#[derive(Debug)]
pub(super) struct Namespace {
    pub(super) inodes: Vec<Inode>,
    /// Changes not yet durable, in the order they were made.
    pending: Vec<Change>,
    /// The number the next change gets; 0 means "on disk from the start".
    next_seq: u64,
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace::new()
    }
}

impl Namespace {
    /// An empty root directory.
    pub(super) fn new() -> Namespace {
        let root = Inode {
            node: Node::Dir(Directory::default()),
            perm: 0o755,
            links: 1,
        };
        Namespace {
            inodes: vec![root],
            pending: Vec::new(),
            next_seq: 1,
        }
    }

    /// Adds an inode no name leads to yet.
    pub(super) fn add(&mut self, node: Node, perm: u32) -> Ino {
        self.inodes.push(Inode {
            node,
            perm,
            links: 0,
        });
        self.inodes.len() - 1
    }

    pub(super) fn dir(&self, ino: Ino) -> Option<&Directory> {
        match &self.inodes[ino].node {
            Node::Dir(dir) => Some(dir),
            _ => None,
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> &mut Directory {
        match &mut self.inodes[ino].node {
            Node::Dir(dir) => dir,
            _ => panic!("sim: inode {ino} is not a directory"),
        }
    }

    pub(super) fn is_dir(&self, ino: Ino) -> bool {
        self.dir(ino).is_some()
    }

    pub(super) fn file(&self, ino: Ino) -> Option<&FileData> {
        match &self.inodes[ino].node {
            Node::File(data) => Some(data),
            _ => None,
        }
    }

    pub(super) fn file_mut(&mut self, ino: Ino) -> Option<&mut FileData> {
        match &mut self.inodes[ino].node {
            Node::File(data) => Some(data),
            _ => None,
        }
    }

    /// The `st_mode` of an inode: its type and permission bits.
    pub(super) fn mode(&self, ino: Ino) -> u32 {
        let kind = match self.inodes[ino].node {
            Node::File(_) => libc::S_IFREG,
            Node::Dir(_) => libc::S_IFDIR,
            Node::Symlink(_) => libc::S_IFLNK,
        };
        kind | self.inodes[ino].perm
    }

    /// Hard links as `stat` counts them: a directory's are its name, its
    /// `.`, and each subdirectory's `..`.
    pub(super) fn nlink(&self, ino: Ino) -> u32 {
        match self.dir(ino) {
            Some(dir) => {
                let subdirs = dir
                    .entries
                    .values()
                    .filter(|&&child| self.is_dir(child))
                    .count();
                2 + subdirs as u32
            }
            None => self.inodes[ino].links,
        }
    }

    /// Looks `path` up from the directory `start`, following symlinks on
    /// the way and, if `follow_last`, the last one too.
    pub(super) fn lookup(&self, start: Ino, path: &Path, follow_last: bool) -> io::Result<Lookup> {
        self.walk(start, path.as_os_str().as_bytes(), follow_last, &mut 0)
    }

    fn walk(
        &self,
        start: Ino,
        path: &[u8],
        follow_last: bool,
        links: &mut u32,
    ) -> io::Result<Lookup> {
        if path.is_empty() {
            return Err(errno(libc::ENOENT));
        }
        if path.len() > PATH_MAX {
            return Err(errno(libc::ENAMETOOLONG));
        }
        let mut dir = if path[0] == b'/' { ROOT } else { start };
        let trailing_slash = path.ends_with(b"/");
        let components: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        if components.iter().any(|c| c.len() > NAME_MAX) {
            return Err(errno(libc::ENAMETOOLONG));
        }
        let Some((last, walk)) = components.split_last() else {
            return Ok(self.special(dir));
        };
        for component in walk {
            dir = match *component {
                b"." => dir,
                b".." => self.dir(dir).map_or(ROOT, |d| d.parent),
                name => {
                    let child = self.entry(dir, name).ok_or_else(|| errno(libc::ENOENT))?;
                    self.step_into(dir, child, links)?
                }
            };
        }
        match *last {
            b"." => Ok(self.special(dir)),
            b".." => Ok(self.special(self.dir(dir).map_or(ROOT, |d| d.parent))),
            name => {
                let child = self.entry(dir, name);
                if let Some(child) = child
                    && let Node::Symlink(target) = &self.inodes[child].node
                    && (follow_last || trailing_slash)
                {
                    *links += 1;
                    if *links > MAX_SYMLINKS {
                        return Err(errno(libc::ELOOP));
                    }
                    return self.walk(dir, target.as_os_str().as_bytes(), true, links);
                }
                Ok(Lookup {
                    parent: dir,
                    last: Last::Name(OsStr::from_bytes(name).to_owned()),
                    ino: child,
                    trailing_slash,
                })
            }
        }
    }

    /// A lookup that ended on `.`, `..` or `/`: the directory `ino` itself.
    fn special(&self, ino: Ino) -> Lookup {
        Lookup {
            parent: self.dir(ino).map_or(ROOT, |d| d.parent),
            last: Last::Special,
            ino: Some(ino),
            trailing_slash: true,
        }
    }

    fn entry(&self, dir: Ino, name: &[u8]) -> Option<Ino> {
        self.dir(dir)?.entries.get(OsStr::from_bytes(name)).copied()
    }

    /// Steps from `dir` into its entry `child`, which must be a directory
    /// or a symlink to one.
    fn step_into(&self, dir: Ino, child: Ino, links: &mut u32) -> io::Result<Ino> {
        match &self.inodes[child].node {
            Node::Dir(_) => Ok(child),
            Node::File(_) => Err(errno(libc::ENOTDIR)),
            Node::Symlink(target) => {
                *links += 1;
                if *links > MAX_SYMLINKS {
                    return Err(errno(libc::ELOOP));
                }
                let found = self.walk(dir, target.as_os_str().as_bytes(), true, links)?;
                match found.ino {
                    Some(ino) if self.is_dir(ino) => Ok(ino),
                    Some(_) => Err(errno(libc::ENOTDIR)),
                    None => Err(errno(libc::ENOENT)),
                }
            }
        }
    }

    /// Whether `ancestor` is `ino` or a directory above it.
    pub(super) fn is_within(&self, ino: Ino, ancestor: Ino) -> bool {
        let mut at = ino;
        loop {
            if at == ancestor {
                return true;
            }
            if at == ROOT {
                return false;
            }
            at = self.dir(at).map_or(ROOT, |d| d.parent);
        }
    }

    /// The path of directory `ino` from the root, by its parents' names
    /// (`None` once no name leads to it).
    pub(super) fn dir_path(&self, ino: Ino) -> Option<PathBuf> {
        let mut names = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let parent = self.dir(at)?.parent;
            let (name, _) = self
                .dir(parent)?
                .entries
                .iter()
                .find(|&(_, &child)| child == at)?;
            names.push(name.clone());
            at = parent;
        }
        let mut path = PathBuf::from("/");
        path.extend(names.iter().rev());
        Some(path)
    }

    /// Applies `edits`, in order, to the names as lookups see them, as one
    /// change, pending until made durable: the one way names change. `what`
    /// describes it for a crash report.
    pub(super) fn change(&mut self, edits: Vec<Edit>, what: String) {
        for edit in &edits {
            self.set(edit.dir, &edit.name, edit.to);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push(Change { seq, edits, what });
    }

    /// [`change`](Namespace::change), durable at once (files the test put
    /// in place before the run).
    pub(super) fn change_durably(&mut self, edits: Vec<Edit>) {
        self.change(edits, String::new());
        let change = self.pending.pop().expect("just pushed");
        self.persist(&change);
    }

    /// An fsync of directory `dir`: every pending change that touches it is
    /// durable from now on (all of a rename, whichever side `dir` is).
    pub(super) fn sync_dir(&mut self, dir: Ino) {
        let (durable, pending): (Vec<Change>, Vec<Change>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|c| c.touches(dir));
        self.pending = pending;
        for change in &durable {
            self.persist(change);
        }
    }

    /// A journal commit: every pending change is durable from now on.
    pub(super) fn sync_all(&mut self) {
        for change in std::mem::take(&mut self.pending) {
            self.persist(&change);
        }
    }

    /// Writes a change's names to disk, unless a later change set them.
    fn persist(&mut self, change: &Change) {
        for edit in &change.edits {
            let Node::Dir(dir) = &mut self.inodes[edit.dir].node else {
                continue;
            };
            let slot = dir.disk.entry(edit.name.clone()).or_insert((None, 0));
            if slot.1 <= change.seq {
                *slot = (edit.to, change.seq);
            }
        }
    }

    /// A crash: each pending change survives if `survives` says so (asked in
    /// the order they were made), and every directory's names become its
    /// names on disk. Returns what happened, per directory.
    pub(super) fn crash(
        &mut self,
        mut survives: impl FnMut(usize, usize) -> bool,
    ) -> Vec<DirectoryCrash> {
        let pending = std::mem::take(&mut self.pending);
        let mut report: BTreeMap<Ino, Vec<NameChange>> = BTreeMap::new();
        let count = pending.len();
        for (i, change) in pending.iter().enumerate() {
            let kept = survives(i, count);
            if kept {
                self.persist(change);
            }
            let mut dirs: Vec<Ino> = change.edits.iter().map(|edit| edit.dir).collect();
            dirs.dedup();
            for dir in dirs {
                report.entry(dir).or_default().push(NameChange {
                    seq: change.seq,
                    what: change.what.clone(),
                    kept,
                });
            }
        }
        let report = report
            .into_iter()
            .map(|(dir, changes)| DirectoryCrash {
                path: self
                    .dir_path(dir)
                    .unwrap_or_else(|| format!("(directory {dir}, no name left)").into()),
                changes,
            })
            .collect();
        self.reload();
        report
    }

    /// Names as lookups see them become the names on disk, with the links
    /// and parents they imply.
    fn reload(&mut self) {
        for inode in &mut self.inodes {
            inode.links = 0;
        }
        for ino in 0..self.inodes.len() {
            let Node::Dir(dir) = &mut self.inodes[ino].node else {
                continue;
            };
            dir.disk.retain(|_, (to, _)| to.is_some());
            dir.entries = dir
                .disk
                .iter()
                .map(|(name, (to, _))| (name.clone(), to.expect("kept")))
                .collect();
            let children: Vec<Ino> = dir.entries.values().copied().collect();
            for child in children {
                self.inodes[child].links += 1;
                if let Node::Dir(moved) = &mut self.inodes[child].node {
                    moved.parent = ino;
                }
            }
        }
        self.inodes[ROOT].links += 1;
    }

    /// Where each inode has a name now: one path per inode that has one.
    pub(super) fn paths(&self) -> BTreeMap<Ino, PathBuf> {
        let mut paths = BTreeMap::new();
        let mut stack = vec![(ROOT, PathBuf::from("/"))];
        while let Some((ino, path)) = stack.pop() {
            if let Some(dir) = self.dir(ino) {
                for (name, &child) in &dir.entries {
                    if !paths.contains_key(&child) && child != ROOT {
                        stack.push((child, path.join(name)));
                    }
                }
            }
            paths.entry(ino).or_insert(path);
        }
        paths
    }

    /// Sets one name, counting links and moving a directory's parent.
    fn set(&mut self, dir: Ino, name: &OsStr, to: Option<Ino>) {
        let entries = &mut self.dir_mut(dir).entries;
        let old = match to {
            Some(ino) => entries.insert(name.to_owned(), ino),
            None => entries.remove(name),
        };
        if let Some(old) = old {
            self.inodes[old].links -= 1;
        }
        if let Some(ino) = to {
            self.inodes[ino].links += 1;
            if let Node::Dir(moved) = &mut self.inodes[ino].node {
                moved.parent = dir;
            }
        }
    }
}
