//! A second reference for the cross-thread wake: the straightforward Tokio design, where a std
//! thread sends a request over an unbounded mpsc channel to a current-thread runtime parked in
//! epoll on its own thread, and blocks on a oneshot for the reply. Two wakes, like the eventfd
//! ping-pong, but through Tokio's park/unpark paths.

use std::thread;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::affinity;
use crate::group::{RunError, RunResult};
use crate::measure::{Latencies, Window};

/// Measures mpsc-request, oneshot-reply round trips (p50/p99) over `window`, the two threads
/// pinned to different CPUs.
pub fn round_trip(window: Window) -> RunResult {
    let cpus = affinity::wake_cpus();
    let _pinned = cpus
        .map(|(caller, _)| affinity::pin_current_thread(caller))
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (requests, mut incoming) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
    let server = thread::Builder::new()
        .name("tokio-echo".into())
        .spawn(move || {
            let _ = affinity::pin_for_life(cpus.map(|(_, responder)| responder));
            runtime.block_on(async move {
                while let Some(reply) = incoming.recv().await {
                    let _ = reply.send(());
                }
            })
        })?;
    let call = || -> Result<(), RunError> {
        let (reply, replied) = oneshot::channel();
        requests
            .send(reply)
            .map_err(|_| RunError::Fail("tokio echo thread exited".into()))?;
        replied
            .blocking_recv()
            .map_err(|_| RunError::Fail("tokio echo dropped the reply".into()))
    };
    let warmup_end = Instant::now() + window.warmup;
    while Instant::now() < warmup_end {
        call()?;
    }
    let mut latencies = Latencies::with_capacity(1 << 16);
    let start = Instant::now();
    let mut round_trips = 0;
    while start.elapsed() < window.measure {
        let sent = Instant::now();
        call()?;
        latencies.record_since(sent);
        round_trips += 1;
    }
    let measurement = latencies.into_measurement(round_trips, start.elapsed());
    drop(requests);
    server.join().expect("tokio echo thread panicked");
    Ok(measurement)
}
