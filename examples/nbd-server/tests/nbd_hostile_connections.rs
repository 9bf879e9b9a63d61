//! Clients that vanish and clients by the hundred, over raw sockets: a
//! client that sends writes and disappears without reading a reply, one
//! that asks for far more read data than it reads and resets the
//! connection, one that leaves mid-payload, and hundreds of connections
//! opened and closed at every stage of the protocol. A bystander
//! connection keeps working throughout, no write is torn, and the server
//! ends with as many fds as it started with.

pub mod support;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use support::wire::{self, CMD_READ, CMD_WRITE};
use support::{Client, Scratch, Server, assert_same_bytes};

const SIZE: usize = 16 << 20;
const CHUNK: usize = 128 << 10;

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// Polls until the server's fd count is back to `baseline` (a liveness
/// bound, not a timing assertion).
fn fds_settle(server: &Server, baseline: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = open_fds(server.pid());
        if now <= baseline {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server holds {now} fds, {baseline} before the clients came"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn vanishing_clients_tear_nothing() {
    for direct in [false, true] {
        let scratch = Scratch::new(if direct { "vanish-direct" } else { "vanish" });
        let data = support::random_bytes(61, SIZE);
        let image = scratch.file("disk.img", &data);
        let args: &[&str] = if direct { &["--direct"] } else { &[] };
        let mut server = Server::start(&image, args);
        let mut bystander = Client::connect(server.port);
        let baseline = open_fds(server.pid());

        // 1. Writes sent, then gone without reading one reply. Each chunk
        // gets its own pattern, at an unaligned offset.
        let mut client = Client::connect(server.port);
        let chunks = SIZE / CHUNK - 1;
        for i in 0..chunks {
            let payload = vec![i as u8 ^ 0x80; CHUNK];
            client.send(
                0,
                CMD_WRITE,
                i as u64,
                (i * CHUNK + 333) as u64,
                CHUNK as u32,
                &payload,
            );
        }
        let _ = client.stream.shutdown(Shutdown::Write);
        drop(client);

        // 2. Reads of 64 MiB in all, never read, then a reset.
        let mut greedy = Client::connect(server.port);
        for i in 0..16u64 {
            greedy.send(0, CMD_READ, i, 0, 4 << 20, &[]);
        }
        let _ = greedy.stream.set_linger_zero();
        drop(greedy);

        // 3. Gone in the middle of a write's payload: it must never run.
        let mut partial = Client::connect(server.port);
        partial.send(0, CMD_WRITE, 1, 0, 65536, &[0xee; 1000]);
        drop(partial);

        // The bystander was never disturbed.
        let got = bystander.read(SIZE as u64 - 4096, 4096);
        assert_same_bytes(&got, &data[SIZE - 4096..], "bystander read");
        fds_settle(&server, baseline);

        // Each chunk is wholly old or wholly new: nothing torn, nothing else.
        let got = bystander.read(0, SIZE as u32);
        assert_same_bytes(
            &got[..333],
            &data[..333],
            "before the first chunk (the partial write did not run)",
        );
        for i in 0..chunks {
            let range = i * CHUNK + 333..(i + 1) * CHUNK + 333;
            let new = vec![i as u8 ^ 0x80; CHUNK];
            assert!(
                got[range.clone()] == new[..] || got[range.clone()] == data[range.clone()],
                "chunk {i} is torn"
            );
        }
        bystander.disconnect();
        assert!(
            server.stop_with(libc::SIGTERM).success(),
            "clean exit:\n{}",
            server.log()
        );
        drop(scratch);
    }
}

trait LingerZero {
    fn set_linger_zero(&self) -> std::io::Result<()>;
}

impl LingerZero for TcpStream {
    /// Makes the close a reset (RST) rather than an orderly FIN.
    fn set_linger_zero(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket we own, with a pointer to a live
        // `linger` of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[test]
fn hundreds_of_connections_opened_and_closed() {
    let scratch = Scratch::new("hundreds");
    let data = support::random_bytes(62, 1 << 20);
    let image = scratch.file("disk.img", &data);
    let mut server = Server::start(&image, &["--contexts", "2"]);
    let port = server.port;
    let mut bystander = Client::connect(port);
    let baseline = open_fds(server.pid());

    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let data = data.clone();
            std::thread::spawn(move || {
                for i in 0..100usize {
                    match (i + worker) % 6 {
                        // Connect and leave.
                        0 => drop(TcpStream::connect(("127.0.0.1", port)).unwrap()),
                        // Leave after the greeting, with a reset.
                        1 => {
                            let stream = Client::greet(port);
                            let _ = stream.set_linger_zero();
                        }
                        // Garbage.
                        2 => {
                            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                            let _ = stream.write_all(&[0xa5; 100]);
                        }
                        // Leave mid-haggling.
                        3 => {
                            let mut stream = Client::greet(port);
                            let _ = stream.write_all(&3u32.to_be_bytes());
                            Client::send_option(&mut stream, wire::OPT_LIST, b"");
                        }
                        // A full session.
                        4 => {
                            let mut client = Client::connect(port);
                            let offset = (i * 4099) % (1 << 19);
                            let got = client.read(offset as u64, 4099);
                            assert_same_bytes(&got, &data[offset..offset + 4099], "worker read");
                            client.disconnect();
                        }
                        // Leave with requests in flight.
                        _ => {
                            let mut client = Client::connect(port);
                            for cookie in 0..8 {
                                client.send(0, CMD_READ, cookie, cookie * 65536, 65536, &[]);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a worker failed");
    }

    let got = bystander.read(0, 1 << 20);
    assert_same_bytes(&got, &data, "bystander after 400 connections");
    bystander.disconnect();
    fds_settle(&server, baseline - 1);
    assert!(server.is_running());
    assert!(
        server.stop_with(libc::SIGTERM).success(),
        "clean exit:\n{}",
        server.log()
    );
}
