//! `qemu-img convert -n` of a random image into the `nbd-server` export
//! with 16 parallel, out-of-order writes (`-m 16 -W`), then `qemu-img
//! compare` through the server, then a byte compare of the image file
//! itself, in page-cache and O_DIRECT mode.

pub mod support;

use std::process::Command;

use support::{Scratch, Server, assert_same_bytes, have_tools, run_ok};

/// Not a multiple of qemu-img's 2 MiB chunks, so the last request is short.
const SIZE: usize = 24 * 1024 * 1024 + 64 * 1024;

fn convert_and_compare(direct: bool) {
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let scratch = Scratch::new(if direct {
        "qemu-img-direct"
    } else {
        "qemu-img"
    });
    let source_bytes = support::random_bytes(21, SIZE);
    let source = scratch.file("source.img", &source_bytes);
    // The target starts as something else entirely: a different random fill
    // with a zeroed stretch, so zero detection and writes both matter.
    let mut target_bytes = support::random_bytes(22, SIZE);
    target_bytes[4 << 20..6 << 20].fill(0);
    let target = scratch.file("target.img", &target_bytes);
    let args: &[&str] = if direct { &["--direct"] } else { &[] };
    let mut server = Server::start(&target, args);

    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-n", "-m", "16", "-W", "-f", "raw", "-O", "raw"])
            .arg(&source)
            .arg(server.uri()),
    );
    let compared = run_ok(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(&source)
            .arg(server.uri()),
    );
    assert!(compared.contains("Images are identical"), "{compared}");

    assert!(server.stop_with(libc::SIGTERM).success(), "clean exit");
    assert_same_bytes(
        &std::fs::read(&target).unwrap(),
        &source_bytes,
        "target image",
    );
}

#[test]
fn qemu_img_convert_page_cache_mode() {
    convert_and_compare(false);
}

#[test]
fn qemu_img_convert_direct_mode() {
    convert_and_compare(true);
}
