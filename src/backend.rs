//! Choosing a backend: the contract every backend meets, and the `Auto` rule.
//!
//! # The contract
//!
//! Every backend runs every op of the crate (except
//! [`submit_raw`](crate::Context::submit_raw), ring-only) with the same
//! outputs and `std::io::Error`s, the same cancel safety (a dropped future's
//! resources stay alive until the operation is over), and the same shutdown
//! rule: every pending future resolves. [`Context::enter`](crate::Context::enter),
//! [`spawn`](crate::Context::spawn), [`block_on`](crate::Context::block_on),
//! [`current`](crate::current) and [`metrics`](crate::Context::metrics) work
//! the same on each; [`Metrics::backend`](crate::Metrics::backend) and the
//! context's `Debug` output say which one runs.

use std::io;

use crate::context::Engine;
use crate::fallback::Pool;
use crate::ring::{Ring, RingConfig};
use crate::sim::{Sim, SimConfig};

/// Which machinery runs a context's ops; see [`Builder::backend`](crate::Builder::backend).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Backend {
    /// io_uring when the kernel offers it; the thread-pool fallback when ring
    /// setup fails with `ENOSYS` or `EPERM` (seccomp, `kernel.io_uring_disabled`)
    /// or the kernel lacks an opcode the crate's ops need. The reason for a
    /// fallback is logged once, at `warn`. The default.
    #[default]
    Auto,
    /// io_uring only: building fails with the setup error (or `Unsupported`
    /// for a missing opcode) instead of falling back.
    Uring,
    /// Every op as a blocking syscall on the home runtime's bounded blocking
    /// pool (see [`Builder::fallback_threads`](crate::Builder::fallback_threads)).
    Fallback,
    /// In-memory files, with every op completing in Tokio virtual time; for
    /// deterministic tests. See [`sim`](crate::sim).
    Sim(SimConfig),
}

/// Sets up the engine `backend` asks for; on io_uring, also the ring.
pub(crate) fn select(backend: &Backend, config: RingConfig) -> io::Result<(Engine, Option<Ring>)> {
    match backend {
        Backend::Fallback => Ok((Engine::Fallback(Pool::new()), None)),
        Backend::Sim(sim) => Ok((Engine::Sim(Box::new(Sim::new(sim.clone()))), None)),
        Backend::Uring => {
            let ring = Ring::new(config)?;
            match ring.missing_opcodes() {
                Ok(missing) if !missing.is_empty() => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "io_uring lacks opcodes aioctx needs: {}",
                        missing.join(", ")
                    ),
                )),
                _ => Ok((Engine::Uring, Some(ring))),
            }
        }
        Backend::Auto => match Ring::new(config) {
            Ok(ring) => match ring.missing_opcodes() {
                Ok(missing) if !missing.is_empty() => {
                    tracing::warn!(
                        missing = %missing.join(", "),
                        "io_uring lacks opcodes aioctx needs; using the thread-pool fallback"
                    );
                    Ok((Engine::Fallback(Pool::new()), None))
                }
                // A kernel too old to probe is also too old for the ring's
                // other requirements, which setup already checked.
                _ => Ok((Engine::Uring, Some(ring))),
            },
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                tracing::warn!(error = %e, "io_uring unavailable; using the thread-pool fallback");
                Ok((Engine::Fallback(Pool::new()), None))
            }
            Err(e) => Err(e),
        },
    }
}
