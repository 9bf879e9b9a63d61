//! The command line: what a user can ask of the server, parsed by `clap`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

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

    /// Number of aioctx contexts (home threads, one ring each); connections
    /// are spread over them, each served wholly on one.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub contexts: u16,

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
