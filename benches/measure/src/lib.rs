//! What every benchmark row shares with every other, in process or out: [`measure`] (a run's
//! [`Measurement`](measure::Measurement), per-op latencies, the warm-up/measure window, medians
//! over repeats, the process's CPU time) and [`testfile`] (the cached files the read benchmarks
//! read, and the random block offsets they read at). The harness (`benches/harness`) and Tokio's
//! io_uring peer (`benches/tokio-io-uring-peer`) both use it.

pub mod measure;
pub mod testfile;
