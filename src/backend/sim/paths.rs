//! The simulator's path calls: rename, unlink and rmdir, mkdir, link,
//! symlink and directory listing, each checked as the kernel checks it and
//! answered with the kernel's errno, each changing names only through
//! `Namespace::change`. Imports `files`, `namespace` and the ops' simulated
//! file system types.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::ops::simulated::{At, SimDirEntry};

use super::config::SimOp;
use super::files::Files;
use super::namespace::{Directory, Edit, Lookup, Node, errno};

/// `renameat2`'s flags.
const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
const EXCHANGE: u32 = libc::RENAME_EXCHANGE;

impl Files {
    /// Looks `at` up, not following a last symlink, after the fault
    /// injector had its say on `op`.
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
        if exchange && replaced_dir && self.ns.is_within(src.parent, replaced.expect("exchanged")) {
            return Err(errno(libc::EINVAL));
        }
        let edits = if exchange {
            vec![
                Edit {
                    dir: src.parent,
                    name: from_name.to_owned(),
                    to: replaced,
                },
                Edit {
                    dir: dst.parent,
                    name: to_name.to_owned(),
                    to: Some(moved),
                },
            ]
        } else {
            if let Some(replaced) = replaced {
                match (moved_dir, replaced_dir) {
                    (true, false) => return Err(errno(libc::ENOTDIR)),
                    (false, true) => return Err(errno(libc::EISDIR)),
                    (true, true) if !self.is_empty_dir(replaced) => {
                        return Err(errno(libc::ENOTEMPTY));
                    }
                    _ => {}
                }
            }
            vec![
                Edit {
                    dir: src.parent,
                    name: from_name.to_owned(),
                    to: None,
                },
                Edit {
                    dir: dst.parent,
                    name: to_name.to_owned(),
                    to: Some(moved),
                },
            ]
        };
        self.ns.change(&edits);
        Ok(())
    }

    fn is_empty_dir(&self, ino: usize) -> bool {
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
        self.ns.change(&[Edit {
            dir: found.parent,
            name,
            to: None,
        }]);
        Ok(())
    }

    pub(super) fn mkdir_at(&mut self, at: At<'_>, mode: u32) -> io::Result<()> {
        let found = self.lookup_for(SimOp::Mkdir, at, false)?;
        let name = found.name(libc::EEXIST)?.to_owned();
        if found.ino.is_some() {
            return Err(errno(libc::EEXIST));
        }
        let dir = Directory {
            parent: found.parent,
            ..Directory::default()
        };
        let new = self.ns.add(Node::Dir(dir), mode & 0o7777);
        self.ns.change(&[Edit {
            dir: found.parent,
            name,
            to: Some(new),
        }]);
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
        self.ns.change(&[Edit {
            dir: dst.parent,
            name,
            to: Some(linked),
        }]);
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
        self.ns.change(&[Edit {
            dir: found.parent,
            name,
            to: Some(new),
        }]);
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
}
