//! The simulated backend: in-memory files, every op completing in Tokio
//! virtual time at a deadline fixed when it was submitted, with seeded
//! latencies, fault injection and crashes. What users see of it, and the
//! model it follows, is documented in the public [`sim`](crate::sim) module,
//! which re-exports the types here.
//!
//! ```text
//!  config     SimConfig and what it is made of (plain data)
//!  rng        the seed, split into independent streams
//!  report     what a crash drew (plain data)
//!  contents   a file's sparse pages
//!  data       a file's bytes now and on disk; writeback, failed or not
//!  namespace  the directory tree: inodes, names now and on disk, lookup
//!  files      the file system the ops run against, fds, the fault injector
//!  paths      the path calls: rename, unlink, mkdir, link, symlink, listing
//!  crash      what a crash keeps: the crash model's decisions
//!  schedule   the timeline, the alarm, the simulator task, SimHandle
//! ```
//!
//! Each file imports only files listed above it (and `schedule`, the ops'
//! crate-private traits); none imports the surface.

mod config;
mod contents;
mod crash;
mod data;
mod files;
mod namespace;
mod paths;
mod report;
mod rng;
mod schedule;

pub use config::{Fault, FaultAction, FsModel, Latency, OpFilter, SimConfig, SimOp};
pub use report::{CrashReport, DirectoryCrash, FileCrash, NameChange};
pub(crate) use schedule::Sim;
pub use schedule::{Completion, SimHandle};
