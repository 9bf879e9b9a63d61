//! The simulator's path calls: rename, unlink and rmdir, mkdir, link,
//! symlink, statx by path and directory listing, each checked as the kernel
//! checks it and answered with the kernel's errno, each changing names only
//! through `Namespace::change` (described for the crash report); and the
//! controls' own path calls (a file's contents, a file put in place).
//! Imports `files`, `namespace`, `data`, `contents` and the ops' simulated
//! file system types.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::ops::simulated::{At, SimDirEntry, SimStat, StatTarget};

use super::config::{FsModel, SimOp};
use super::contents::{Contents, PAGE};
use super::data::FileData;
use super::files::{Files, Verdict};
use super::namespace::{Directory, Edit, Ino, Lookup, Node, ROOT, errno};

/// `renameat2`'s flags.
const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
const EXCHANGE: u32 = libc::RENAME_EXCHANGE;

fn edit(dir: Ino, name: &std::ffi::OsStr, to: Option<Ino>) -> Edit {
    Edit {
        dir,
        name: name.to_owned(),
        to,
    }
}

impl Files {
    /// Looks `at` up (its last symlink followed if `follow`), after the
    /// fault injector had its say on `op`.
    fn lookup_for(&mut self, op: SimOp, at: At<'_>, follow: bool) -> io::Result<Lookup> {
        let path = self.full_path(at);
        self.check_call(op, &path)?;
        let start = self.start(at.dir)?;
        self.ns.lookup(start, at.path, follow)
    }

    pub(super) fn rename_at(&mut self, from: At<'_>, to: At<'_>, flags: u32) -> io::Result<()> {
        if flags & !(NOREPLACE | EXCHANGE) != 0 || flags == NOREPLACE | EXCHANGE {
            return Err(errno(libc::EINVAL));
        }
        let src = self.lookup_for(SimOp::Rename, from, false)?;
        let dst = self.ns.lookup(self.start(to.dir)?, to.path, false)?;
        let moved = src.ino.ok_or_else(|| errno(libc::ENOENT))?;
        let (from_name, to_name) = (src.name(libc::EBUSY)?, dst.name(libc::EBUSY)?);
        let exchange = flags & EXCHANGE != 0;
        let replaced = match dst.ino {
            None if exchange => return Err(errno(libc::ENOENT)),
            Some(_) if flags & NOREPLACE != 0 => return Err(errno(libc::EEXIST)),
            other => other,
        };
        let moved_dir = self.ns.is_dir(moved);
        let replaced_dir = replaced.is_some_and(|ino| self.ns.is_dir(ino));
        if (src.trailing_slash && !moved_dir) || (dst.trailing_slash && !moved_dir && !exchange) {
            return Err(errno(libc::ENOTDIR));
        }
        if replaced == Some(moved) {
            // Two names of one file: POSIX says rename does nothing.
            return Ok(());
        }
        // A directory cannot move into itself or below itself.
        if moved_dir && self.ns.is_within(dst.parent, moved) {
            return Err(errno(libc::EINVAL));
        }
        if let Some(replaced) = replaced.filter(|_| exchange && replaced_dir)
            && self.ns.is_within(src.parent, replaced)
        {
            return Err(errno(libc::EINVAL));
        }
        if let Some(replaced) = replaced.filter(|_| !exchange) {
            match (moved_dir, replaced_dir) {
                (true, false) => return Err(errno(libc::ENOTDIR)),
                (false, true) => return Err(errno(libc::EISDIR)),
                (true, true) if !self.is_empty_dir(replaced) => {
                    return Err(errno(libc::ENOTEMPTY));
                }
                _ => {}
            }
        }
        let (from_path, to_path) = (self.full_path(from), self.full_path(to));
        let edits = vec![
            edit(src.parent, from_name, replaced.filter(|_| exchange)),
            edit(dst.parent, to_name, Some(moved)),
        ];
        let what = if exchange {
            format!("exchange {} <-> {}", from_path.display(), to_path.display())
        } else {
            format!("rename {} -> {}", from_path.display(), to_path.display())
        };
        // ext4's auto_da_alloc: a rename over a file writes the renamed
        // file's data back first, so the new name never comes back empty.
        if self.model.fs == FsModel::Ext4Ordered
            && replaced.is_some()
            && let Some(data) = self.ns.file_mut(moved)
        {
            data.write_back();
        }
        self.ns.change(edits, what);
        if let Some(replaced) = replaced.filter(|_| !exchange) {
            self.release_if_orphan(replaced);
        }
        Ok(())
    }

    fn is_empty_dir(&self, ino: Ino) -> bool {
        self.ns.dir(ino).is_some_and(|dir| dir.entries.is_empty())
    }

    pub(super) fn unlink_at(&mut self, at: At<'_>, remove_dir: bool) -> io::Result<()> {
        let found = self.lookup_for(SimOp::Unlink, at, false)?;
        let name = match found.name(0) {
            Ok(name) => name.to_owned(),
            // `.`, `..` or `/`, as the kernel answers each.
            Err(_) if !remove_dir => return Err(errno(libc::EISDIR)),
            Err(_) => {
                let last = at.path.as_os_str().as_bytes();
                let last = last.rsplit(|&b| b == b'/').find(|c| !c.is_empty());
                return Err(errno(match last {
                    Some(b".") => libc::EINVAL,
                    Some(b"..") => libc::ENOTEMPTY,
                    _ => libc::EBUSY,
                }));
            }
        };
        let ino = found.ino.ok_or_else(|| errno(libc::ENOENT))?;
        let is_dir = self.ns.is_dir(ino);
        if remove_dir {
            if !is_dir {
                return Err(errno(libc::ENOTDIR));
            }
            if !self.is_empty_dir(ino) {
                return Err(errno(libc::ENOTEMPTY));
            }
        } else if is_dir {
            return Err(errno(libc::EISDIR));
        } else if found.trailing_slash {
            return Err(errno(libc::ENOTDIR));
        }
        let what = if remove_dir { "rmdir" } else { "unlink" };
        let what = format!("{what} {}", self.full_path(at).display());
        self.ns.change(vec![edit(found.parent, &name, None)], what);
        self.release_if_orphan(ino);
        Ok(())
    }

    pub(super) fn mkdir_at(&mut self, at: At<'_>, mode: u32) -> io::Result<()> {
        let found = self.lookup_for(SimOp::Mkdir, at, false)?;
        let name = found.name(libc::EEXIST)?.to_owned();
        if found.ino.is_some() {
            return Err(errno(libc::EEXIST));
        }
        let new = self
            .ns
            .add(Node::Dir(Directory::under(found.parent)), mode & 0o7777);
        let what = format!("mkdir {}", self.full_path(at).display());
        self.ns
            .change(vec![edit(found.parent, &name, Some(new))], what);
        Ok(())
    }

    pub(super) fn link_at(&mut self, from: At<'_>, to: At<'_>, follow: bool) -> io::Result<()> {
        let src = self.lookup_for(SimOp::Link, from, follow)?;
        let dst = self.ns.lookup(self.start(to.dir)?, to.path, false)?;
        let linked = src.ino.ok_or_else(|| errno(libc::ENOENT))?;
        if self.ns.is_dir(linked) {
            return Err(errno(libc::EPERM));
        }
        if src.trailing_slash {
            return Err(errno(libc::ENOTDIR));
        }
        let name = dst.name(libc::EEXIST)?.to_owned();
        if dst.ino.is_some() {
            return Err(errno(libc::EEXIST));
        }
        if dst.trailing_slash {
            return Err(errno(libc::ENOENT));
        }
        let what = format!(
            "link {} -> {}",
            self.full_path(to).display(),
            self.full_path(from).display()
        );
        self.ns
            .change(vec![edit(dst.parent, &name, Some(linked))], what);
        Ok(())
    }

    pub(super) fn symlink_at(&mut self, target: &Path, at: At<'_>) -> io::Result<()> {
        let found = self.lookup_for(SimOp::Symlink, at, false)?;
        if target.as_os_str().is_empty() {
            return Err(errno(libc::ENOENT));
        }
        let name = found.name(libc::EEXIST)?.to_owned();
        if found.ino.is_some() {
            return Err(errno(libc::EEXIST));
        }
        if found.trailing_slash {
            return Err(errno(libc::ENOENT));
        }
        let new = self.ns.add(Node::Symlink(target.to_owned()), 0o777);
        let what = format!(
            "symlink {} -> {}",
            self.full_path(at).display(),
            target.display()
        );
        self.ns
            .change(vec![edit(found.parent, &name, Some(new))], what);
        Ok(())
    }

    pub(super) fn read_dir_at(&mut self, at: At<'_>) -> io::Result<Vec<SimDirEntry>> {
        let found = self.lookup_for(SimOp::ReadDir, at, true)?;
        let ino = found.ino.ok_or_else(|| errno(libc::ENOENT))?;
        let dir = self.ns.dir(ino).ok_or_else(|| errno(libc::ENOTDIR))?;
        Ok(dir
            .entries
            .iter()
            .map(|(name, &child)| SimDirEntry {
                name: name.clone(),
                kind: self.ns.mode(child) & libc::S_IFMT,
                ino: child as u64 + 1,
            })
            .collect())
    }

    pub(super) fn stat_at(&mut self, target: StatTarget<'_>) -> io::Result<SimStat> {
        let ino = match target {
            StatTarget::Fd(fd) => {
                let open = self.open_of(fd)?.clone();
                if let Verdict::Fail(e) = self.check_open(SimOp::Statx, &open, 0, 0) {
                    return Err(e);
                }
                open.inode
            }
            StatTarget::Path { at, follow } => {
                let found = self.lookup_for(SimOp::Statx, at, follow)?;
                let ino = found.ino.ok_or_else(|| errno(libc::ENOENT))?;
                if found.trailing_slash && !self.ns.is_dir(ino) {
                    return Err(errno(libc::ENOTDIR));
                }
                ino
            }
        };
        let len = match &self.ns.inodes[ino].node {
            Node::File(data) => data.now.len,
            Node::Dir(_) => PAGE,
            Node::Symlink(target) => target.as_os_str().len() as u64,
        };
        Ok(SimStat {
            mode: self.ns.mode(ino),
            len,
            nlink: self.ns.nlink(ino),
            ino: ino as u64 + 1,
        })
    }

    /// The current contents of the file at `path`.
    pub(super) fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let found = self.ns.lookup(ROOT, path, true).ok()?;
        Some(self.ns.file(found.ino?)?.now.to_vec())
    }

    /// Creates or replaces the file at `path`, durably, with `data`,
    /// creating the directories above it, durably.
    ///
    /// # Panics
    ///
    /// If `path` leads through a file or names a directory.
    pub(super) fn insert(&mut self, path: &Path, data: &[u8]) {
        let contents = Contents::from_bytes(data);
        let mut dir = ROOT;
        let names: Vec<_> = path.iter().filter(|c| *c != "/").collect();
        let Some((file, above)) = names.split_last() else {
            panic!("sim: cannot insert a file at {path:?}");
        };
        for name in above {
            let found = self.ns.lookup(dir, Path::new(name), true);
            dir = match found.as_ref().ok().and_then(|f| f.ino) {
                Some(ino) if self.ns.is_dir(ino) => ino,
                Some(_) => panic!("sim: {path:?} leads through a file"),
                None => {
                    let new = self.ns.add(Node::Dir(Directory::under(dir)), 0o755);
                    self.ns.change_durably(vec![edit(dir, name, Some(new))]);
                    new
                }
            };
        }
        let existing = self.ns.lookup(dir, Path::new(file), true);
        let ino = match existing.ok().and_then(|f| f.ino) {
            Some(ino) if self.ns.file(ino).is_some() => ino,
            Some(_) => panic!("sim: {path:?} is not a file"),
            None => {
                let new = self.ns.add(Node::File(FileData::default()), 0o644);
                self.ns.change_durably(vec![edit(dir, file, Some(new))]);
                new
            }
        };
        let data = self.ns.file_mut(ino).expect("a file");
        self.pages_used -= data.now.pages();
        self.pages_used += contents.pages();
        *data = FileData::durable(contents);
    }
}
