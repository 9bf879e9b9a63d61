//! The `nbd-server` example on a pool of contexts: which member serves a
//! connection (the one with the fewest open connections, ties round
//! robin), and requests served from each member's registered buffers (or,
//! with `--buffers plain`, from plain ones), read back right either way.
//! The server says where each connection went and how many of its requests
//! used a registered buffer in its log; these tests read that.

pub mod support;

use std::time::{Duration, Instant};

use support::{Client, Scratch, Server, assert_same_bytes};

/// Waits for the log line about `client`'s connection containing `event`,
/// and returns what follows `field=` on it.
fn logged(server: &Server, client_port: u16, event: &str, field: &str) -> String {
    let peer = format!("peer=127.0.0.1:{client_port} ");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = server.log();
        let line = log
            .lines()
            .find(|line| line.contains(event) && line.contains(&peer));
        if let Some(line) = line {
            let key = format!(" {field}=");
            let at = line
                .find(&key)
                .unwrap_or_else(|| panic!("no {field} in: {line}"))
                + key.len();
            return line[at..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no `{event}` line for {peer}in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn local_port(client: &Client) -> u16 {
    client.stream.local_addr().expect("local address").port()
}

/// Which member the server put `client` on.
fn member_of(server: &Server, client: &Client) -> usize {
    logged(server, local_port(client), "connection opened", "context")
        .parse()
        .expect("a member index")
}

/// Disconnects `client` and waits until the server has closed its side.
fn close(server: &Server, client: Client) {
    let port = local_port(&client);
    client.disconnect();
    logged(server, port, "connection closed", "fixed");
}

#[test]
fn a_connection_goes_to_the_member_with_the_fewest() {
    let scratch = Scratch::new("pool-placement");
    let image = scratch.file("disk.img", &support::random_bytes(80, 1 << 20));
    let mut server = Server::start(&image, &["--contexts", "2"]);

    // Four connections alternate between the two members.
    let clients: Vec<Client> = (0..4).map(|_| Client::connect(server.port)).collect();
    let members: Vec<usize> = clients.iter().map(|c| member_of(&server, c)).collect();
    assert_eq!(members, [0, 1, 0, 1], "connections spread over the members");

    // With both of member 1's connections closed, the next two go to
    // member 1, although round robin alone would send the first to member 0.
    let mut clients = clients.into_iter();
    let (a, b, c, d) = (
        clients.next().unwrap(),
        clients.next().unwrap(),
        clients.next().unwrap(),
        clients.next().unwrap(),
    );
    close(&server, b);
    close(&server, d);
    let e = Client::connect(server.port);
    let f = Client::connect(server.port);
    assert_eq!(member_of(&server, &e), 1, "the emptier member");
    assert_eq!(member_of(&server, &f), 1, "still the emptier member");

    // Every connection still works.
    let mut data = Vec::new();
    for mut client in [a, c, e, f] {
        data.push(client.read(4096, 4096));
        client.disconnect();
    }
    assert!(data.windows(2).all(|pair| pair[0] == pair[1]));
    assert!(server.stop_with(libc::SIGTERM).success(), "clean exit");
}

/// Writes and reads of sizes that do and do not fit a registered buffer;
/// returns how many requests the server says used one.
fn served_from_registered_buffers(args: &[&str], tag: &str) -> u64 {
    let scratch = Scratch::new(tag);
    let mut expected = support::random_bytes(81, 1 << 20);
    let image = scratch.file("disk.img", &expected);
    let mut server = Server::start(&image, args);
    let mut client = Client::connect(server.port);
    let port = local_port(&client);

    let page = support::random_bytes(82, 4096);
    client.write(0, &page);
    expected[..4096].copy_from_slice(&page);
    // 3896 bytes at 8292: 100 bytes into a block, ending at its end. In
    // O_DIRECT mode (alignment 512 or 4096) that covers one 4 KiB block:
    // a read-modify-write through a registered buffer.
    let odd = support::random_bytes(83, 3896);
    client.write(8292, &odd);
    expected[8292..12188].copy_from_slice(&odd);
    assert_same_bytes(&client.read(0, 4096), &expected[..4096], "4 KiB read");
    assert_same_bytes(
        &client.read(8292, 3896),
        &expected[8292..12188],
        "3896-byte read",
    );
    assert_same_bytes(&client.read(0, 1 << 20), &expected, "1 MiB read");
    client.flush();
    client.disconnect();

    let fixed: u64 = logged(&server, port, "connection closed", "fixed")
        .parse()
        .expect("a count");
    let log = server.log();
    if log.contains("backend=\"io_uring\"")
        && !log.contains("registering")
        && !args.contains(&"plain")
    {
        assert!(
            log.contains("registered_buffers=true"),
            "io_uring took no buffers:\n{log}"
        );
    }
    assert!(server.stop_with(libc::SIGTERM).success(), "clean exit");
    assert_same_bytes(&std::fs::read(&image).unwrap(), &expected, "image file");
    fixed
}

#[test]
fn page_cache_requests_of_a_whole_class_use_registered_buffers() {
    // The 4 KiB write and read; not the 3896-byte ones, not the 1 MiB read.
    assert_eq!(served_from_registered_buffers(&[], "pool-fixed"), 2);
}

#[test]
fn direct_requests_of_a_whole_class_use_registered_buffers() {
    // The 4 KiB and the 3896-byte ones, whose buffers cover a whole block.
    let fixed = served_from_registered_buffers(&["--direct"], "pool-fixed-direct");
    assert_eq!(fixed, 4);
}

#[test]
fn plain_buffers_when_asked() {
    let args = ["--direct", "--buffers", "plain"];
    assert_eq!(served_from_registered_buffers(&args, "pool-plain"), 0);
}

#[test]
fn registered_image_files_serve_the_same_bytes() {
    let args = ["--image-files", "registered"];
    assert_eq!(served_from_registered_buffers(&args, "pool-reg-files"), 2);
}
