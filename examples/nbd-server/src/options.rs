//! The command line: what a user can ask of the server, parsed by `clap`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::disk::ImageFiles;
use crate::member::Setup;

/// Serves a raw image file or block device over NBD, its disk I/O on
/// aioctx contexts.
///
/// Connect with `qemu-io -f raw nbd://127.0.0.1:10809`, `nbdinfo
/// nbd://127.0.0.1`, `nbdcopy`, `qemu-img`, or the kernel's `nbd-client`.
#[derive(Debug, Clone, Parser)]
#[command(name = "nbd-server", version, about, long_about)]
pub struct Options {
    /// The image to serve: a regular file or a block device.
    pub image: PathBuf,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// TCP port to listen on; 0 picks a free one (printed on stdout).
    #[arg(long, default_value_t = 10809)]
    pub port: u16,

    /// Bypass the page cache (O_DIRECT); unaligned requests are served by
    /// read-modify-write of the blocks at their edges.
    #[arg(long)]
    pub direct: bool,

    /// Refuse every write; the image is opened read-only.
    #[arg(long)]
    pub read_only: bool,

    /// The export's name. Clients asking for the default export (the empty
    /// name) get it too.
    #[arg(long, default_value = "")]
    pub name: String,

    /// Members of the pool of aioctx contexts (home threads, one ring
    /// each) [default: one per CPU]. Each connection is served wholly on
    /// one member: the one with the fewest connections.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub contexts: Option<u16>,

    /// Pin member i's home thread to the i-th CPU this process may use.
    #[arg(long)]
    pub pin_cpus: bool,

    /// Request buffers: registered with each member's ring (fixed reads and
    /// writes for requests of 4 KiB to 128 KiB in whole powers of two), or
    /// plain allocations for every request.
    #[arg(long, value_enum, default_value_t = BufferChoice::Registered)]
    pub buffers: BufferChoice,

    /// How each member reaches the image: a dup of one fd shared by all
    /// (`shared`), or an open file of its own registered with its ring
    /// (`registered`).
    #[arg(long, value_enum, default_value_t = FilesChoice::Shared)]
    pub image_files: FilesChoice,

    /// What runs the disk ops: io_uring, the thread-pool fallback, or
    /// whichever works here (auto).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,

    /// Seconds a client may take to finish the handshake.
    #[arg(long, default_value_t = 30)]
    pub handshake_timeout: u64,

    /// Seconds to wait for in-flight requests at shutdown before giving up.
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout: u64,
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Auto,
    Uring,
    Fallback,
}

impl BackendChoice {
    pub fn backend(self) -> aioctx::Backend {
        match self {
            BackendChoice::Auto => aioctx::Backend::Auto,
            BackendChoice::Uring => aioctx::Backend::Uring,
            BackendChoice::Fallback => aioctx::Backend::Fallback,
        }
    }
}

/// `--buffers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BufferChoice {
    Registered,
    Plain,
}

/// `--image-files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FilesChoice {
    Shared,
    Registered,
}

impl Options {
    /// Pool members: `--contexts`, else one per CPU.
    pub fn members(&self) -> usize {
        match self.contexts {
            Some(members) => usize::from(members),
            None => std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    /// How the members reach the image and hold buffers.
    pub fn setup(&self) -> Setup {
        Setup {
            files: match self.image_files {
                FilesChoice::Shared => ImageFiles::Shared,
                FilesChoice::Registered => ImageFiles::Registered,
            },
            registered_buffers: self.buffers == BufferChoice::Registered,
        }
    }
}
