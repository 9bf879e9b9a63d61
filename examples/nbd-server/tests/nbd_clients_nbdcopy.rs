//! libnbd's `nbdcopy` with several connections (the export says
//! `CAN_MULTI_CONN`) and many requests in flight on each, both ways: a
//! random file into the export, then the export out to a new file, each
//! checked byte for byte. Page-cache mode, O_DIRECT mode, and two contexts.

pub mod support;

use std::process::Command;

use support::{Scratch, Server, assert_same_bytes, have_tools, run_ok};

const SIZE: usize = 32 * 1024 * 1024;

fn copy_both_ways(args: &[&str], tag: &str) {
    if !have_tools(&["nbdcopy"]) {
        return;
    }
    let scratch = Scratch::new(tag);
    let source_bytes = support::random_bytes(31, SIZE);
    let source = scratch.file("source.img", &source_bytes);
    let export = scratch.file("export.img", &vec![0u8; SIZE]);
    let copied = scratch.path("copied.img");
    let mut server = Server::start(&export, args);

    // In: 4 connections x 32 requests of 64 KiB, written out of order.
    run_ok(
        Command::new("nbdcopy")
            .args([
                "--connections=4",
                "--requests=32",
                "--request-size=65536",
                "--flush",
            ])
            .arg(&source)
            .arg(server.uri()),
    );
    // Out: to a fresh file through 4 connections.
    std::fs::write(&copied, b"").unwrap();
    run_ok(
        Command::new("nbdcopy")
            .args(["--connections=4", "--requests=16"])
            .arg(server.uri())
            .arg(&copied),
    );
    assert_same_bytes(
        &std::fs::read(&copied).unwrap(),
        &source_bytes,
        "copied out",
    );

    assert!(server.stop_with(libc::SIGINT).success(), "clean exit");
    assert_same_bytes(
        &std::fs::read(&export).unwrap(),
        &source_bytes,
        "export image",
    );
}

#[test]
fn nbdcopy_page_cache_mode() {
    copy_both_ways(&[], "nbdcopy");
}

#[test]
fn nbdcopy_direct_mode() {
    copy_both_ways(&["--direct"], "nbdcopy-direct");
}

#[test]
fn nbdcopy_over_two_contexts() {
    copy_both_ways(&["--contexts", "2"], "nbdcopy-contexts");
}
