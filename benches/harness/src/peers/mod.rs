//! The implementations this crate is measured against, one file per peer. Each function runs one
//! timed window (warm-up, then measurement) and returns a [`super::measure::Measurement`]; none
//! of them needs the aioctx crate.

pub mod blocking_pread;
pub mod eventfd;
pub mod fio;
pub mod nbd_clients;
pub mod nbd_servers;
pub mod raw_uring;
pub mod tokio_channel;
pub mod tokio_fs;
pub mod tokio_io_uring;
pub mod tokio_uring;
pub mod tokio_wake;
