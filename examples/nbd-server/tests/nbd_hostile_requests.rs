//! Hostile requests in the transmission phase, over raw sockets: ranges past
//! the end of the export or wrapping 2^64 (checked, `EINVAL` or `ENOSPC`, a
//! refused write's payload drained so the next request parses), zero-length
//! requests, unknown commands and flags, oversized requests (refused, never
//! run), a bad request magic, requests after `DISC`, and writes to a
//! read-only export. After each, the same connection (where it survives)
//! and a fresh one read the right bytes, and the image file holds exactly
//! what the accepted writes put there. Also: many requests in flight on one
//! connection come back out of order, each under its own cookie.

pub mod support;

use std::collections::HashMap;
use std::io::Read;

use support::wire::{
    self, CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES, EINVAL, ENOSPC, EPERM,
};
use support::{Client, Scratch, Server, assert_same_bytes};

const SIZE: u64 = 1 << 20;

struct Setup {
    _scratch: Scratch,
    server: Server,
    image: std::path::PathBuf,
    data: Vec<u8>,
}

fn setup(tag: &str, args: &[&str], size: u64) -> Setup {
    let scratch = Scratch::new(tag);
    let data = support::random_bytes(51, size as usize);
    let image = scratch.file("disk.img", &data);
    let server = Server::start(&image, args);
    Setup {
        _scratch: scratch,
        server,
        image,
        data,
    }
}

impl Setup {
    #[track_caller]
    fn check_read(&self, client: &mut Client, offset: u64, len: u32) {
        let got = client.read(offset, len);
        let at = offset as usize;
        assert_same_bytes(&got, &self.data[at..at + len as usize], "read back");
    }

    #[track_caller]
    fn still_serving(&self) {
        let mut client = Client::connect(self.server.port);
        self.check_read(&mut client, 0, 4096);
        self.check_read(&mut client, SIZE - 1000, 1000);
        client.disconnect();
    }

    /// Stops the server and checks the image file holds `self.data`.
    #[track_caller]
    fn image_intact(mut self) {
        assert!(self.server.stop_with(libc::SIGTERM).success(), "clean exit");
        assert_same_bytes(
            &std::fs::read(&self.image).unwrap(),
            &self.data,
            "image file",
        );
    }
}

fn out_of_bounds(direct: bool) {
    let args: &[&str] = if direct { &["--direct"] } else { &[] };
    let mut s = setup(if direct { "oob-direct" } else { "oob" }, args, SIZE);
    let mut client = Client::connect(s.server.port);
    let payload = vec![0xee; 4096];
    let wraps = u64::MAX - 100;
    let cases: &[(u16, u64, u32, u32)] = &[
        (CMD_READ, SIZE, 1, EINVAL),
        (CMD_READ, SIZE - 1, 2, EINVAL),
        (CMD_READ, wraps, 4096, EINVAL),
        (CMD_READ, u64::MAX, 1, EINVAL),
        (CMD_READ, 1 << 63, 512, EINVAL),
        (CMD_WRITE, SIZE, 4096, ENOSPC),
        (CMD_WRITE, SIZE - 4095, 4096, ENOSPC),
        (CMD_WRITE, wraps, 4096, ENOSPC),
        (CMD_WRITE, u64::MAX - 4095, 4096, ENOSPC),
        (CMD_TRIM, SIZE - 1, 2, EINVAL),
        (CMD_TRIM, wraps, u32::MAX, EINVAL),
        (CMD_WRITE_ZEROES, SIZE, 1, ENOSPC),
        (CMD_WRITE_ZEROES, wraps, u32::MAX, ENOSPC),
        (CMD_WRITE_ZEROES, 0, u32::MAX, ENOSPC),
    ];
    for &(kind, offset, len, expected) in cases {
        let body: &[u8] = if kind == CMD_WRITE {
            &payload[..len as usize]
        } else {
            &[]
        };
        let (error, data) = client.call(0, kind, offset, len, body);
        assert_eq!(error, expected, "command {kind} at {offset} len {len}");
        assert!(data.is_empty());
        // The refused write's payload was drained: the stream is in step.
        s.check_read(&mut client, 4096, 8192);
    }
    // Right at the end is fine.
    client.write(SIZE - 10, &[0x5a; 10]);
    s.data[SIZE as usize - 10..].fill(0x5a);
    s.check_read(&mut client, SIZE - 100, 100);
    client.disconnect();
    s.still_serving();
    s.image_intact();
}

#[test]
fn out_of_bounds_and_wrapping_ranges_are_refused() {
    out_of_bounds(false);
}

#[test]
fn out_of_bounds_and_wrapping_ranges_are_refused_with_o_direct() {
    out_of_bounds(true);
}

#[test]
fn zero_lengths_unknown_commands_and_flags() {
    let s = setup("odd", &[], SIZE);
    let mut client = Client::connect(s.server.port);
    // Zero-length requests succeed and carry no data.
    for kind in [CMD_READ, CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES] {
        let (error, data) = client.call(0, kind, 512, 0, &[]);
        assert_eq!((error, data.len()), (0, 0), "zero-length command {kind}");
    }
    let (error, _) = client.call(0, CMD_READ, SIZE, 0, &[]);
    assert_eq!(error, 0, "a zero-length read at the very end");
    // Unknown commands: CACHE and BLOCK_STATUS are not offered, 99 does not exist.
    for kind in [5u16, 7, 8, 99, u16::MAX] {
        let (error, _) = client.call(0, kind, 0, 4096, &[]);
        assert_eq!(error, EINVAL, "command {kind}");
    }
    // Unknown flags, and flags on commands they do not belong to.
    for (flags, kind) in [
        (1u16 << 15, CMD_READ),
        (wire::FLAG_NO_HOLE, CMD_READ),
        (1 << 2, CMD_READ),
        (1 << 3, CMD_FLUSH),
    ] {
        let (error, data) = client.call(flags, kind, 0, 4096, &[]);
        assert_eq!(
            (error, data.len()),
            (EINVAL, 0),
            "flags {flags:#x} on {kind}"
        );
    }
    let (error, _) = client.call(wire::FLAG_NO_HOLE, CMD_WRITE, 0, 16, &[0xee; 16]);
    assert_eq!(error, EINVAL, "NO_HOLE on a write");
    // FUA is accepted everywhere.
    let (error, _) = client.call(wire::FLAG_FUA, CMD_READ, 0, 16, &[]);
    assert_eq!(error, 0);
    s.check_read(&mut client, 0, 8192);
    client.disconnect();
    s.still_serving();
    s.image_intact();
}

#[test]
fn oversized_requests_are_refused_never_run() {
    // 40 MiB, so that a 32 MiB + 1 read is in bounds.
    let size = 40 << 20;
    let s = setup("oversized", &[], size);
    let mut client = Client::connect(s.server.port);
    let (error, data) = client.call(0, CMD_READ, 0, (32 << 20) + 1, &[]);
    assert_eq!(
        (error, data.len()),
        (EINVAL, 0),
        "a read past the maximum payload"
    );
    let got = client.read(0, 32 << 20);
    assert_same_bytes(&got, &s.data[..32 << 20], "a read of exactly the maximum");
    // Zeroing more than the maximum payload needs no buffer: it is served.
    let (error, _) = client.call(0, CMD_WRITE_ZEROES, 1 << 20, 36 << 20, &[]);
    assert_eq!(error, 0);

    // A write past the maximum is refused and the connection closed; its
    // payload (sent in part) is never written.
    let mut other = Client::connect(s.server.port);
    other.send(0, CMD_WRITE, 77, 0, (32 << 20) + 1, &[0xee; 65536]);
    let (cookie, error) = other.reply();
    assert_eq!((cookie, error), (77, EINVAL));
    assert!(Client::closed_by_server(&mut other.stream));
    // The first connection kept working throughout.
    let got = client.read(0, 65536);
    assert_same_bytes(&got, &s.data[..65536], "the refused write was not run");
    client.disconnect();
    let mut data = s.data.clone();
    data[1 << 20..37 << 20].fill(0);
    let Setup {
        _scratch,
        mut server,
        image,
        ..
    } = s;
    assert!(server.stop_with(libc::SIGTERM).success());
    assert_same_bytes(&std::fs::read(&image).unwrap(), &data, "image file");
}

#[test]
fn bad_request_magic_closes_only_that_connection() {
    let s = setup("magic", &[], SIZE);
    let mut bystander = Client::connect(s.server.port);
    let mut client = Client::connect(s.server.port);
    use std::io::Write;
    client.stream.write_all(&[0x13; 28]).unwrap();
    assert!(Client::closed_by_server(&mut client.stream));
    s.check_read(&mut bystander, 0, 4096);
    bystander.disconnect();
    s.still_serving();
}

#[test]
fn requests_after_disc_are_not_run() {
    let s = setup("disc", &[], SIZE);
    let mut client = Client::connect(s.server.port);
    client.send(0, wire::CMD_DISC, 1, 0, 0, &[]);
    // Forbidden after DISC: the server must not run it.
    client.send(0, CMD_WRITE, 2, 0, 4096, &[0xee; 4096]);
    let mut rest = Vec::new();
    let _ = client.stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a reply after DISC");
    s.still_serving();
    s.image_intact();
}

#[test]
fn writes_to_a_read_only_export_are_refused() {
    let s = setup("read-only", &["--read-only"], SIZE);
    let mut client = Client::connect(s.server.port);
    assert_ne!(client.flags & 2, 0, "NBD_FLAG_READ_ONLY");
    let (error, _) = client.call(0, CMD_WRITE, 0, 4096, &[0xee; 4096]);
    assert_eq!(error, EPERM);
    s.check_read(&mut client, 0, 8192);
    for kind in [CMD_TRIM, CMD_WRITE_ZEROES] {
        let (error, _) = client.call(0, kind, 0, 4096, &[]);
        assert_eq!(error, EPERM, "command {kind}");
    }
    client.flush();
    client.disconnect();
    s.image_intact();
}

#[test]
fn many_requests_in_flight_reply_out_of_order_by_cookie() {
    let mut s = setup("in-flight", &[], SIZE);
    let mut client = Client::connect(s.server.port);
    // 200 requests sent before any reply is read: writes, reads of other
    // ranges, flushes, zeroes; sizes from 1 byte to 64 KiB.
    let mut expected: HashMap<u64, (u16, u64, u32)> = HashMap::new();
    let mut rng = support::random_bytes(52, 4096).into_iter();
    let mut next = || u64::from(rng.next().unwrap());
    for cookie in 0..200u64 {
        let slot = cookie * 4096;
        let kind =
            [CMD_WRITE, CMD_READ, CMD_READ, CMD_FLUSH, CMD_WRITE_ZEROES][(next() % 5) as usize];
        let offset = slot + next() % 1024;
        let len = (1 + next() * next() % 3000) as u32;
        let payload = support::random_bytes(1000 + cookie, len as usize);
        match kind {
            CMD_WRITE => {
                s.data[offset as usize..offset as usize + len as usize].copy_from_slice(&payload)
            }
            CMD_WRITE_ZEROES => s.data[offset as usize..offset as usize + len as usize].fill(0),
            _ => {}
        }
        let body: &[u8] = if kind == CMD_WRITE { &payload } else { &[] };
        client.send(0, kind, cookie ^ 0xabcd_0000_0000, offset, len, body);
        expected.insert(cookie ^ 0xabcd_0000_0000, (kind, offset, len));
    }
    while !expected.is_empty() {
        let (cookie, error) = client.reply();
        assert_eq!(error, 0);
        let (kind, offset, len) = expected
            .remove(&cookie)
            .expect("a reply for a request in flight");
        if kind == CMD_READ {
            let got = client.data(len as usize);
            // Each slot's range is written by at most its own request, so
            // a read sees the image's original bytes.
            let original = support::random_bytes(51, SIZE as usize);
            assert_same_bytes(
                &got,
                &original[offset as usize..(offset + u64::from(len)) as usize],
                "read in flight",
            );
        }
    }
    client.disconnect();
    s.still_serving_with(&s.data);
    s.image_intact();
}

impl Setup {
    fn still_serving_with(&self, data: &[u8]) {
        let mut client = Client::connect(self.server.port);
        let got = client.read(0, SIZE as u32);
        assert_same_bytes(&got, data, "whole export");
        client.disconnect();
    }
}
