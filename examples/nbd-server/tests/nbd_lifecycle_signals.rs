//! The server's life: clear startup errors (missing image, port in use,
//! size not a multiple of the O_DIRECT alignment, a filesystem that refuses
//! O_DIRECT), and a clean shutdown on SIGTERM and SIGINT while clients have
//! requests in flight — it stops accepting, finishes what it received,
//! flushes, and exits 0.

pub mod support;

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;

use support::wire::CMD_WRITE;
use support::{Client, Scratch, Server, assert_same_bytes};

#[track_caller]
fn fails_to_start(image: &std::path::Path, args: &[&str], port: u16, expected: &str) {
    match Server::try_start_on_port(image, args, port) {
        Ok(_) => panic!("the server started with {args:?} on {}", image.display()),
        Err((status, log)) => {
            assert_eq!(
                status.and_then(|s| s.code()),
                Some(1),
                "exit code; log:\n{log}"
            );
            assert!(log.contains(expected), "expected {expected:?} in:\n{log}");
            assert!(!log.contains("panicked"), "{log}");
        }
    }
}

#[test]
fn startup_errors_are_one_clear_sentence() {
    let scratch = Scratch::new("startup");
    fails_to_start(&scratch.path("missing.img"), &[], 0, "cannot open image");
    fails_to_start(
        &scratch.path("missing.img"),
        &[],
        0,
        "No such file or directory",
    );
    fails_to_start(&scratch.dir, &[], 0, "not a regular file or a block device");

    let image = scratch.file("disk.img", &[0u8; 65536]);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    fails_to_start(&image, &[], port, "cannot listen on 127.0.0.1:");
    fails_to_start(&image, &[], port, "Address already in use");

    let odd = scratch.file("odd.img", &[0u8; 4096 + 100]);
    fails_to_start(
        &odd,
        &["--direct"],
        0,
        "not a multiple of its direct I/O alignment",
    );

    // A filesystem that refuses O_DIRECT, where this machine has one.
    let refusing = ["/dev/shm", "/run", "/tmp"].into_iter().find(|dir| {
        let probe =
            std::path::Path::new(dir).join(format!("aioctx-nbd-probe-{}", std::process::id()));
        let refused = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .is_err_and(|e| e.raw_os_error() == Some(libc::EINVAL));
        let _ = std::fs::remove_file(&probe);
        refused
    });
    match refusing {
        Some(dir) => {
            let image =
                std::path::Path::new(dir).join(format!("aioctx-nbd-{}.img", std::process::id()));
            std::fs::write(&image, [0u8; 65536]).unwrap();
            fails_to_start(&image, &["--direct"], 0, "does not support direct I/O");
            let _ = std::fs::remove_file(&image);
        }
        None => eprintln!(
            "skipping the O_DIRECT refusal case: no filesystem here refuses O_DIRECT \
             (tmpfs accepts it since Linux 6.6)"
        ),
    }
}

fn shutdown_with_requests_in_flight(signal: i32) {
    let scratch = Scratch::new("shutdown");
    let size = 16 << 20;
    let mut data = support::random_bytes(81, size);
    let image = scratch.file("disk.img", &data);
    let mut server = Server::start(&image, &[]);
    let port = server.port;

    // A client mid-handshake, and one with writes in flight whose replies
    // it reads only after the signal.
    let mut haggling = Client::greet(port);
    let mut client = Client::connect(port);
    let chunk = 1 << 20;
    let original = data.clone();
    for i in 0..8u64 {
        let payload = vec![i as u8 + 1; chunk];
        client.send(0, CMD_WRITE, i, i * chunk as u64, chunk as u32, &payload);
    }
    // The first reply proves the server is working on them.
    let (first, error) = client.reply();
    assert_eq!(error, 0);

    let status = server.stop_with(signal);
    assert_eq!(status.code(), Some(0), "exit status after signal {signal}");

    // Each write was either run and answered 0, or answered ESHUTDOWN and
    // not run, or (still on its way when the signal came) never read.
    let mut written = vec![first];
    let mut header = [0u8; 16];
    while client.stream.read_exact(&mut header).is_ok() {
        let cookie = u64::from_be_bytes(header[8..16].try_into().unwrap());
        match u32::from_be_bytes(header[4..8].try_into().unwrap()) {
            0 => written.push(cookie),
            108 => {} // NBD_ESHUTDOWN
            other => panic!("write {cookie} failed with {other}"),
        }
    }
    for &i in &written {
        let range = i as usize * chunk..(i as usize + 1) * chunk;
        data[range].fill(i as u8 + 1);
    }
    assert_ne!(data, original);
    let mut rest = Vec::new();
    let _ = haggling.read_to_end(&mut rest);
    // No longer accepting.
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still accepting after exit"
    );
    assert_same_bytes(
        &std::fs::read(&image).unwrap(),
        &data,
        "image after shutdown",
    );
    assert!(server.log().contains("shut down cleanly"));
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_0() {
    shutdown_with_requests_in_flight(libc::SIGTERM);
}

#[test]
fn sigint_finishes_in_flight_requests_and_exits_0() {
    shutdown_with_requests_in_flight(libc::SIGINT);
}
