//! Durability across a crash of the server: write (plain and FUA), FLUSH,
//! wait for the replies, `kill -9` the server, start it again on the same
//! image and port, and read everything back — in page-cache and O_DIRECT
//! mode.
//!
//! A killed process leaves the kernel's page cache behind, so this checks
//! what the server can break (acknowledging before the data reached the
//! file, losing writes at a crash, refusing to restart), not power loss.

pub mod support;

use support::wire;
use support::{Client, Scratch, Server, assert_same_bytes};

const SIZE: usize = 8 << 20;

fn crash_and_read_back(direct: bool) {
    let scratch = Scratch::new(if direct { "kill9-direct" } else { "kill9" });
    let mut data = support::random_bytes(71, SIZE);
    let image = scratch.file("disk.img", &data);
    let args: &[&str] = if direct { &["--direct"] } else { &[] };

    let mut server = Server::start(&image, args);
    let mut client = Client::connect(server.port);
    for i in 0..64usize {
        let offset = i * 131_072 + i * 7;
        let payload = support::random_bytes(100 + i as u64, 65_536 + i);
        if i % 4 == 0 {
            let (error, _) = client.call(
                wire::FLAG_FUA,
                wire::CMD_WRITE,
                offset as u64,
                payload.len() as u32,
                &payload,
            );
            assert_eq!(error, 0);
        } else {
            client.write(offset as u64, &payload);
        }
        data[offset..offset + payload.len()].copy_from_slice(&payload);
    }
    let (error, _) = client.call(0, wire::CMD_WRITE_ZEROES, 3 << 20, 100_000, &[]);
    assert_eq!(error, 0);
    data[3 << 20..(3 << 20) + 100_000].fill(0);
    client.flush();
    let port = server.port;
    server.kill9();

    // On the same port, while the killed server's connection is still
    // half-open there: SO_REUSEADDR lets the new one bind.
    let server = Server::try_start_on_port(&image, args, port).unwrap_or_else(|(status, log)| {
        panic!("restart on port {port} failed ({status:?}):\n{log}")
    });
    let mut client = Client::connect(server.port);
    let got = client.read(0, SIZE as u32);
    assert_same_bytes(&got, &data, "export after kill -9 and restart");
    client.disconnect();
    drop(server);
    assert_same_bytes(&std::fs::read(&image).unwrap(), &data, "image file");
}

#[test]
fn flushed_writes_survive_kill_9_page_cache_mode() {
    crash_and_read_back(false);
}

#[test]
fn flushed_writes_survive_kill_9_direct_mode() {
    crash_and_read_back(true);
}
