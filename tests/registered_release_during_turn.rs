//! Defect N3 of the second reliability round: a registered file (or a
//! fixed-buffer pool) whose last handle went while the driver was inside its
//! turn was never unregistered. The op holding the last reference was freed
//! by the turn's reap; the drop asked the backend to unregister, which
//! refused because the core was borrowed, and the refusal was ignored: the
//! fd was closed but stayed in the ring's table, its `flock` held and its
//! slot never reused. Release now happens whenever the last handle goes.

pub mod support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use aioctx::Context;
use aioctx::fs::OpenOptions;

#[test]
fn a_registered_file_whose_last_op_is_reaped_inside_the_turn_leaves_the_table() {
    let Some(ctx) = support::build(
        Context::builder()
            .backend(aioctx::Backend::Uring)
            .registered_file_slots(1),
    )
    .filter(support::on_ring) else {
        return;
    };
    let fifo = support::TempPath::new("release-fifo");
    let path = CString::new(fifo.0.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let fds = support::open_fds();
    for round in 0..3 {
        let inner = ctx.clone();
        let fifo_path = fifo.0.clone();
        let registered = ctx
            .spawn(async move {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .register(true)
                    .open(&inner, &fifo_path)
                    .await
                    .unwrap();
                let registered = file.is_registered();
                // A read that stays in the kernel (the FIFO is empty), holding
                // the file; then the file's last handle and the read go. The
                // read's cancel completes inside a later turn, whose reap
                // drops the last reference to the registered file.
                let mut read = Box::pin(file.read_at(Vec::with_capacity(8), 0));
                assert!(futures::poll!(read.as_mut()).is_pending());
                drop(file);
                drop(read);
                registered
            })
            .join()
            .unwrap();
        // The table has one slot: each round's file gets it only if the
        // previous one left it.
        assert!(registered, "round {round}: the one slot was still taken");
        support::eventually("the read's fd is closed", || support::open_fds() <= fds);
    }
}
