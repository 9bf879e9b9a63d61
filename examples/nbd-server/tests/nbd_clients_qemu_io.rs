//! QEMU's `qemu-io` against the `nbd-server` example, in page-cache and
//! O_DIRECT mode, with registered and with plain request buffers, and with
//! the image shared or registered with each context's ring: writes at aligned and unaligned offsets (inside one block,
//! across block edges, many at once into one block) read back with
//! pattern checks (`-P`), flush, write-zeroes (with and without unmapping,
//! with FUA), and discard. Afterwards the image file itself is compared
//! byte for byte with what the writes should have left.

pub mod support;

use std::process::Command;
use std::time::Duration;

use support::{Scratch, Server, assert_same_bytes, have_tools, run_bounded};

const SIZE: usize = 1 << 20;

/// What the image should hold, and which bytes a discard left unspecified.
struct Model {
    bytes: Vec<u8>,
    unknown: Vec<bool>,
}

impl Model {
    fn fill(&mut self, offset: usize, len: usize, byte: u8) {
        self.bytes[offset..offset + len].fill(byte);
        self.unknown[offset..offset + len].fill(false);
    }

    fn discard(&mut self, offset: usize, len: usize) {
        self.unknown[offset..offset + len].fill(true);
    }

    /// `read -P` commands covering `start..end`, one per run of equal bytes.
    fn pattern_reads(&self, start: usize, end: usize) -> Vec<String> {
        let mut reads = Vec::new();
        let mut at = start;
        while at < end {
            let byte = self.bytes[at];
            let len = self.bytes[at..end]
                .iter()
                .take_while(|&&b| b == byte)
                .count();
            reads.push(format!("read -P {byte:#x} {at} {len}"));
            at += len;
        }
        reads
    }
}

/// Runs one qemu-io session of `commands`; returns its output.
fn qemu_io(server: &Server, commands: &[String]) -> String {
    let mut command = Command::new("qemu-io");
    command.args(["-f", "raw"]);
    for c in commands {
        command.arg("-c").arg(c);
    }
    command.arg(server.uri());
    let output = run_bounded(&mut command, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stdout.contains("failed") && stderr.is_empty(),
        "qemu-io {commands:?} failed ({}):\n{stdout}\n{stderr}\n--- server log ---\n{}",
        output.status,
        server.log()
    );
    stdout
}

fn exercise(args: &[&str], tag: &str) {
    if !have_tools(&["qemu-io"]) {
        return;
    }
    let scratch = Scratch::new(tag);
    // A constant background, so that every run of equal bytes can be read
    // back with one pattern check.
    let initial = vec![0x99; SIZE];
    let image = scratch.file("disk.img", &initial);
    let mut server = Server::start(&image, args);
    let mut model = Model {
        bytes: initial,
        unknown: vec![false; SIZE],
    };

    // Writes: aligned, unaligned at both ends, inside one block, across a
    // block edge, aligned at one end only, and larger than the preferred
    // block.
    let writes: &[(usize, usize, u8)] = &[
        (0, 65536, 0xa1),
        (4096, 4096, 0xb2),
        (1001, 3000, 0xc3),
        (5000, 100, 0xd4),
        (8191, 2, 0xe5),
        (12288, 1000, 0xf6),
        (20000, 12768, 0x17),
        (100_000, 300_001, 0x28),
        (SIZE - 777, 777, 0x39),
    ];
    let mut commands = Vec::new();
    for &(offset, len, byte) in writes {
        commands.push(format!("write -P {byte:#x} {offset} {len}"));
        model.fill(offset, len, byte);
    }
    // Forty concurrent writes of 100 bytes into two blocks: with O_DIRECT
    // each is a read-modify-write of a block another write shares.
    for i in 0..40usize {
        let offset = 409_600 + 1 + i * 100;
        let byte = 0x40 + i as u8;
        commands.push(format!("aio_write -P {byte:#x} {offset} 100"));
        model.fill(offset, 100, byte);
    }
    commands.push("aio_flush".into());
    commands.push("flush".into());
    // Read back every run of equal bytes the writes left, so each write and
    // the bytes around it are checked.
    commands.extend(model.pattern_reads(0, 420_000));
    commands.extend(model.pattern_reads(SIZE - 4096, SIZE));
    qemu_io(&server, &commands);

    // Zeroes: unaligned, aligned with unmapping allowed, with FUA; then a
    // discard (whose content afterwards the protocol leaves unspecified).
    let mut commands = Vec::new();
    for (flags, offset, len) in [
        ("", 40_000, 10_000),
        ("-u", 65536, 65536),
        ("-f", 131_073, 5),
    ] {
        commands.push(format!("write -z {flags} {offset} {len}"));
        model.fill(offset, len, 0);
        commands.push(format!("read -P 0 {offset} {len}"));
    }
    commands.extend(model.pattern_reads(0, 140_000));
    commands.push("discard 524288 65536".into());
    model.discard(524_288, 65536);
    commands.push("write -f -P 0x5a 600000 9999".into());
    model.fill(600_000, 9999, 0x5a);
    commands.push("read -P 0x5a 600000 9999".into());
    commands.push("flush".into());
    qemu_io(&server, &commands);

    // The image file holds exactly what the model says.
    assert!(server.stop_with(libc::SIGTERM).success(), "clean exit");
    let mut on_disk = std::fs::read(&image).unwrap();
    assert_eq!(on_disk.len(), SIZE, "the image kept its size");
    for (i, unknown) in model.unknown.iter().enumerate() {
        if *unknown {
            on_disk[i] = model.bytes[i];
        }
    }
    assert_same_bytes(&on_disk, &model.bytes, "image after the qemu-io sessions");
}

#[test]
fn qemu_io_page_cache_mode() {
    exercise(&[], "qemu-io");
}

#[test]
fn qemu_io_direct_mode() {
    exercise(&["--direct"], "qemu-io-direct");
}

#[test]
fn qemu_io_page_cache_mode_plain_buffers_registered_image() {
    exercise(
        &["--buffers", "plain", "--image-files", "registered"],
        "qemu-io-plain-reg",
    );
}

#[test]
fn qemu_io_direct_mode_plain_buffers() {
    exercise(&["--direct", "--buffers", "plain"], "qemu-io-direct-plain");
}

#[test]
fn qemu_io_direct_mode_registered_image() {
    exercise(
        &["--direct", "--image-files", "registered"],
        "qemu-io-direct-reg",
    );
}

#[test]
fn qemu_io_cannot_write_a_read_only_export() {
    if !have_tools(&["qemu-io"]) {
        return;
    }
    let scratch = Scratch::new("qemu-io-ro");
    let initial = support::random_bytes(12, SIZE);
    let image = scratch.file("disk.img", &initial);
    let server = Server::start(&image, &["--read-only"]);
    let output = run_bounded(
        Command::new("qemu-io")
            .args(["-f", "raw", "-c", "write -P 0x11 0 4096"])
            .arg(server.uri()),
        Duration::from_secs(60),
    );
    assert!(
        !output.status.success(),
        "a write to a read-only export succeeded"
    );
    drop(server);
    assert_same_bytes(&std::fs::read(&image).unwrap(), &initial, "read-only image");
}
