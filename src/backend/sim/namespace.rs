//! The simulator's directory tree: inodes (files, directories, symlinks),
//! the names directories hold, and path lookup as the kernel does it (`.`,
//! `..`, symlinks followed up to 40 deep, `NAME_MAX` and `PATH_MAX`). Every
//! change of a name goes through [`Namespace::change`]. Imports `data` (a
//! file's bytes) and nothing else of the crate.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::data::FileData;

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

/// A directory: its names now, and its parent (for `..`).
#[derive(Debug, Default)]
pub(super) struct Directory {
    pub(super) entries: BTreeMap<OsString, Ino>,
    pub(super) parent: Ino,
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

/// The directory tree.
#[derive(Debug)]
pub(super) struct Namespace {
    pub(super) inodes: Vec<Inode>,
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
        Namespace { inodes: vec![root] }
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

    /// Applies `edits`, in order, to the names as lookups see them: the
    /// one way names change.
    pub(super) fn change(&mut self, edits: &[Edit]) {
        for edit in edits {
            self.set(edit.dir, &edit.name, edit.to);
        }
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
