//! `nbd-server`: a Network Block Device server whose disk I/O runs on
//! aioctx contexts — a storage service built on the crate, checked by
//! QEMU's and libnbd's clients.
//!
//! ```text
//! cargo run --release --example nbd-server -- [--direct] [--read-only] [--port N] IMAGE
//! qemu-io -f raw -c 'write -P 0xab 0 64k' -c 'read -P 0xab 0 64k' nbd://127.0.0.1:10809
//! ```
//!
//! This file is the story and the lifecycle: parse the options, open the
//! image, start a pool of contexts (one per CPU by default) and prepare
//! each member, listen, serve until SIGINT or SIGTERM, then
//! stop accepting, let every connection finish what it received, flush the
//! image, and exit 0. Startup errors are one sentence and exit code 1. The
//! server's parts are the `nbd_server` library (`src/lib.rs` lists them).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aioctx::{Context, Pool};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use nbd_server::disk::Export;
use nbd_server::member::Member;
use nbd_server::options::Options;
use nbd_server::server;

fn main() -> ExitCode {
    let options = Options::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> Result<(), String> {
    let export = Arc::new(Export::open(
        &options.image,
        options.direct,
        options.read_only,
        &options.name,
    )?);
    let pool = Pool::builder()
        .contexts(options.members())
        .context_builder(
            Context::builder()
                .backend(options.backend.backend())
                .thread_name("nbd-ctx"),
        )
        .pin_to_cpus(options.pin_cpus)
        .build()
        .map_err(|e| format!("cannot start the pool of aioctx contexts: {e}"))?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the accept loop's runtime: {e}"))?;
    let outcome = runtime.block_on(async {
        let setup = options.setup();
        let mut members = Vec::with_capacity(pool.members().len());
        for (index, context) in pool.members().iter().enumerate() {
            members.push(Arc::new(
                Member::start(index, context, &export, setup).await?,
            ));
        }
        let addr = SocketAddr::new(options.bind, options.port);
        let listener = server::listen(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let stop = stop_signal().map_err(|e| format!("cannot handle signals: {e}"))?;
        tracing::info!(
            image = %options.image.display(),
            size = export.size,
            mode = if options.direct { "O_DIRECT" } else { "page cache" },
            read_only = options.read_only,
            contexts = members.len(),
            backend = pool.members()[0].backend(),
            registered_buffers = members.iter().all(|m| m.buffers.as_ref().is_some_and(|b| b.is_registered())),
            registered_files = members.iter().all(|m| m.disk.is_registered()),
            "serving on nbd://{local}"
        );
        // The one line on stdout, for scripts and tests that asked for port 0.
        println!("listening on {local}");
        let _ = std::io::stdout().flush();

        let limits = server::Limits {
            handshake_timeout: Duration::from_secs(options.handshake_timeout),
        };
        let grace = Duration::from_secs(options.shutdown_timeout);
        let stuck = server::run(listener, &members, limits, grace, stop).await;
        if !options.read_only {
            members[0]
                .disk
                .flush()
                .await
                .map_err(|e| format!("final flush of the image failed: {e}"))?;
        }
        if stuck > 0 {
            return Err(format!(
                "{stuck} connections still had requests running after {grace:?}; exiting anyway"
            ));
        }
        let rings = pool.total_metrics();
        tracing::info!(
            ops = rings.ops_local + rings.ops_foreign,
            enters = rings.submits,
            turns = rings.turns,
            "shut down cleanly"
        );
        Ok(())
    });
    drop(runtime);
    drop(pool);
    outcome
}

/// Resolves at the first SIGINT or SIGTERM; a second one exits at once.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::error!("second signal: exiting without waiting");
            std::process::exit(1);
        });
    })
}
