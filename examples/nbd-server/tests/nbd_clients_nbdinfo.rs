//! libnbd's `nbdinfo` against the `nbd-server` example: the export's real
//! size, and the flags a client sees, writable and read-only.

pub mod support;

use std::process::Command;

use support::{Scratch, Server, have_tools, run_ok};

/// `"key": value` of nbdinfo's JSON, as text.
fn field<'a>(json: &'a str, key: &str) -> &'a str {
    let needle = format!("\"{key}\": ");
    let start = json
        .find(&needle)
        .unwrap_or_else(|| panic!("nbdinfo did not report {key}:\n{json}"))
        + needle.len();
    json[start..].split([',', '\n']).next().unwrap().trim()
}

#[test]
fn nbdinfo_reports_size_and_flags() {
    if !have_tools(&["nbdinfo"]) {
        return;
    }
    let scratch = Scratch::new("nbdinfo");
    // A size that is no power of two and not a multiple of 4096.
    let image = scratch.random_image("disk.img", 3 * 1024 * 1024 + 512, 7);
    let server = Server::start(&image, &[]);
    let json = run_ok(Command::new("nbdinfo").arg("--json").arg(server.uri()));
    assert_eq!(field(&json, "export-size"), "3146240");
    for (key, value) in [
        ("is_read_only", "false"),
        ("can_flush", "true"),
        ("can_fua", "true"),
        ("can_trim", "true"),
        ("can_zero", "true"),
        ("can_fast_zero", "true"),
        ("can_multi_conn", "true"),
        ("block_size_minimum", "1"),
        ("block_size_maximum", "33554432"),
    ] {
        assert_eq!(field(&json, key), value, "{key}:\n{json}");
    }
    let size = run_ok(Command::new("nbdinfo").arg("--size").arg(server.uri()));
    assert_eq!(size.trim(), "3146240");
}

#[test]
fn nbdinfo_sees_a_read_only_export() {
    if !have_tools(&["nbdinfo"]) {
        return;
    }
    let scratch = Scratch::new("nbdinfo-ro");
    let image = scratch.random_image("disk.img", 1 << 20, 8);
    let server = Server::start(&image, &["--read-only"]);
    let json = run_ok(Command::new("nbdinfo").arg("--json").arg(server.uri()));
    assert_eq!(field(&json, "export-size"), "1048576");
    assert_eq!(field(&json, "is_read_only"), "true");
    assert_eq!(field(&json, "can_flush"), "true");
    assert_eq!(field(&json, "can_trim"), "false");
    assert_eq!(field(&json, "can_zero"), "false");
    assert_eq!(field(&json, "can_multi_conn"), "true");
}

#[test]
fn nbdinfo_lists_the_named_export() {
    if !have_tools(&["nbdinfo"]) {
        return;
    }
    let scratch = Scratch::new("nbdinfo-list");
    let image = scratch.random_image("disk.img", 1 << 20, 9);
    let server = Server::start(&image, &["--name", "disk0"]);
    let list = run_ok(Command::new("nbdinfo").arg("--list").arg(server.uri()));
    assert!(list.contains("export=\"disk0\""), "{list}");
    // By name and by the default (empty) name.
    let named = format!("{}/disk0", server.uri());
    let size = run_ok(Command::new("nbdinfo").arg("--size").arg(&named));
    assert_eq!(size.trim(), "1048576");
    let output = support::run_bounded(
        Command::new("nbdinfo")
            .arg("--size")
            .arg(format!("{}/nosuch", server.uri())),
        std::time::Duration::from_secs(60),
    );
    assert!(
        !output.status.success(),
        "an unknown export name was accepted"
    );
}
