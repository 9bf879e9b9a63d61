//! One `File` shared by every member of a pool: each member's ops hold that
//! member's view of the file, and the fd still closes exactly when the last
//! handle and the last op are gone: not before (the ops of a dropped file read
//! their data), not never (the fd count comes back), and at `close` when
//! nothing else holds it (its `flock` is released at once).

pub mod support;

use std::os::fd::AsRawFd;
use std::sync::{Arc, Barrier, Mutex, MutexGuard};

use aioctx::fs::{File, OpenOptions};
use futures::FutureExt;
use futures::future::maybe_done;

/// The tests of this file one at a time: two of them count the process's
/// fds, which a pool built or dropped by another test would change.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn contents() -> Vec<u8> {
    (0..4096u32).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn a_file_dropped_with_ops_in_flight_on_every_member_closes_after_them() {
    let _serial = one_at_a_time();
    let Some(pool) = support::pool(2) else { return };
    let path = support::TempPath::new("pool-file-dropped");
    std::fs::write(&path.0, contents()).unwrap();
    let fds_before = support::open_fds();
    let opener = pool.members()[0].clone();
    let file = opener.block_on(File::open(&opener, &path.0)).unwrap();
    // Every task has submitted its reads and dropped its handle; then the
    // last handle goes while both home threads are held, so no read has
    // reached the kernel yet (on the ring, SQEs go in at the driver's turn).
    let submitted = Arc::new(Barrier::new(3));
    let dropped = Arc::new(Barrier::new(3));
    let tasks: Vec<_> = pool
        .members()
        .iter()
        .map(|member| {
            let (file, submitted, dropped) = (file.clone(), submitted.clone(), dropped.clone());
            member.spawn(async move {
                let mut reads: Vec<_> = (0..4u64)
                    .map(|i| maybe_done(file.read_at(vec![0u8; 1024], i * 1024)))
                    .collect();
                // The first poll submits; a backend may finish an op on the spot.
                for read in &mut reads {
                    let _ = read.now_or_never();
                }
                drop(file);
                submitted.wait();
                dropped.wait();
                let mut data = Vec::new();
                for mut read in reads {
                    (&mut read).await;
                    let (n, buf) = std::pin::Pin::new(&mut read).take_output().unwrap();
                    assert_eq!(n.expect("the fd was open for the read"), 1024);
                    data.extend_from_slice(&buf);
                }
                data
            })
        })
        .collect();
    submitted.wait();
    drop(file);
    dropped.wait();
    for task in tasks {
        assert_eq!(
            task.join().unwrap(),
            contents(),
            "each member read the file"
        );
    }
    support::eventually("the file's fd is closed after its last op", || {
        support::open_fds() == fds_before
    });
}

fn try_lock(path: &std::path::Path) -> bool {
    let other = std::fs::File::open(path).unwrap();
    // SAFETY: flock(2) on an fd we own.
    unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[test]
fn close_releases_the_flock_of_a_file_every_member_used() {
    let _serial = one_at_a_time();
    let Some(pool) = support::pool(2) else { return };
    let path = support::TempPath::new("pool-file-flock");
    std::fs::write(&path.0, contents()).unwrap();
    let opener = pool.members()[0].clone();
    for close in [true, false] {
        let file = opener
            .block_on(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&opener, &path.0),
            )
            .unwrap();
        // SAFETY: flock(2) on the file's own fd.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
        for member in pool.members() {
            let file = file.clone();
            member
                .spawn(async move {
                    let (n, _) = file.read_at(vec![0u8; 512], 0).await;
                    assert_eq!(n.unwrap(), 512);
                })
                .join()
                .unwrap();
        }
        assert!(!try_lock(&path.0), "the lock is held");
        if close {
            // The last handle, no op in flight: closed now, with the verdict.
            opener.block_on(file.close()).unwrap();
            assert!(try_lock(&path.0), "close released the lock");
        } else {
            drop(file);
            support::eventually("the drop releases the lock", || try_lock(&path.0));
        }
    }
}

#[test]
fn an_op_made_on_one_member_goes_where_it_is_first_polled() {
    let _serial = one_at_a_time();
    let Some(pool) = support::pool(2) else { return };
    let path = support::TempPath::new("pool-file-moved-op");
    std::fs::write(&path.0, contents()).unwrap();
    let fds_before = support::open_fds();
    let [first, second] = pool.members() else {
        unreachable!("a pool of 2")
    };
    let file = first.block_on(File::open(first, &path.0)).unwrap();
    let made = {
        let file = file.clone();
        first
            // Made on the member's home thread, handed back unpolled (in an
            // `Option`, so the task does not look like it forgot an `.await`).
            .spawn(async move { Some(file.read_at(vec![0u8; 100], 10)) })
            .join()
            .unwrap()
            .unwrap()
    };
    drop(file);
    let before = pool.metrics();
    let (n, buf) = second.spawn(made).join().unwrap();
    assert_eq!(n.unwrap(), 100);
    assert_eq!(buf, contents()[10..110]);
    let after = pool.metrics();
    assert_eq!(
        after[0].ops_local, before[0].ops_local,
        "not on the maker's ring"
    );
    assert_eq!(
        after[1].ops_local,
        before[1].ops_local + 1,
        "on the poller's ring"
    );
    support::eventually("the file's fd is closed", || {
        support::open_fds() == fds_before
    });
}
