//! Hostile and odd clients during the handshake, over raw sockets: garbage
//! instead of a greeting reply, unknown client flags, a bad option magic, a
//! huge option, options the server does not support (answered
//! `NBD_REP_ERR_UNSUP`, haggling goes on), malformed `GO`/`INFO`/`LIST`,
//! unknown export names, `ABORT`, `EXPORT_NAME` with and without zeroes, and
//! a client that says nothing. After each, a fresh client reads the right
//! data: the server is still serving.

pub mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use support::wire;
use support::{Client, Scratch, Server};

const SIZE: usize = 1 << 20;

struct Setup {
    _scratch: Scratch,
    server: Server,
    data: Vec<u8>,
}

fn setup(tag: &str, args: &[&str]) -> Setup {
    let scratch = Scratch::new(tag);
    let data = support::random_bytes(41, SIZE);
    let image = scratch.file("disk.img", &data);
    let server = Server::start(&image, args);
    Setup {
        _scratch: scratch,
        server,
        data,
    }
}

impl Setup {
    /// A fresh, valid client reads the right bytes.
    #[track_caller]
    fn still_serving(&self) {
        let mut client = Client::connect(self.server.port);
        assert_eq!(client.size, SIZE as u64);
        let got = client.read(12_345, 54_321);
        support::assert_same_bytes(
            &got,
            &self.data[12_345..12_345 + 54_321],
            "read after the case",
        );
        client.disconnect();
    }
}

/// Sends client flags and returns the socket in option haggling.
fn haggling(port: u16) -> TcpStream {
    let mut stream = Client::greet(port);
    stream.write_all(&3u32.to_be_bytes()).unwrap();
    stream
}

#[test]
fn garbage_instead_of_a_handshake_is_dropped() {
    let s = setup("hs-garbage", &[]);
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        &[0xff; 4096][..],
        &[0u8; 3][..],
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", s.server.port)).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let _ = stream.write_all(garbage);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        // The greeting, perhaps, and then the server closed.
        assert!(
            rest.len() <= 18,
            "the server answered garbage with {} bytes",
            rest.len()
        );
        s.still_serving();
    }
}

#[test]
fn unknown_client_flags_bad_magic_and_huge_options_close_the_connection() {
    let s = setup("hs-flags", &[]);
    let mut stream = Client::greet(s.server.port);
    stream.write_all(&0x8000_0001u32.to_be_bytes()).unwrap();
    assert!(
        Client::closed_by_server(&mut stream),
        "unknown client flags accepted"
    );
    s.still_serving();

    let mut stream = haggling(s.server.port);
    stream.write_all(&[0x42; 16]).unwrap();
    assert!(
        Client::closed_by_server(&mut stream),
        "bad option magic accepted"
    );
    s.still_serving();

    // A 4 GiB option is not read, it is refused.
    let mut stream = haggling(s.server.port);
    let mut header = wire::IHAVEOPT.to_be_bytes().to_vec();
    header.extend_from_slice(&wire::OPT_GO.to_be_bytes());
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    stream.write_all(&header).unwrap();
    assert!(
        Client::closed_by_server(&mut stream),
        "a 4 GiB option was accepted"
    );
    s.still_serving();
}

#[test]
fn unsupported_options_are_refused_and_haggling_goes_on() {
    let s = setup("hs-unsup", &["--name", "disk0"]);
    let mut stream = haggling(s.server.port);
    for option in [
        wire::OPT_STARTTLS,
        wire::OPT_STRUCTURED_REPLY,
        wire::OPT_EXTENDED_HEADERS,
        9,  // LIST_META_CONTEXT
        10, // SET_META_CONTEXT
        4,  // PEEK_EXPORT
        0xdead,
    ] {
        Client::send_option(&mut stream, option, b"");
        let reply = Client::option_reply(&mut stream);
        assert_eq!((reply.option, reply.kind), (option, wire::REP_ERR_UNSUP));
    }
    // Options with data are skipped whole.
    Client::send_option(&mut stream, 0xbeef, &[7u8; 5000]);
    assert_eq!(Client::option_reply(&mut stream).kind, wire::REP_ERR_UNSUP);

    // LIST: one export, its name; with data it is invalid.
    Client::send_option(&mut stream, wire::OPT_LIST, b"");
    let server = Client::option_reply(&mut stream);
    assert_eq!(server.kind, wire::REP_SERVER);
    assert_eq!(&server.data[..4], &5u32.to_be_bytes());
    assert_eq!(&server.data[4..], b"disk0");
    assert_eq!(Client::option_reply(&mut stream).kind, wire::REP_ACK);
    Client::send_option(&mut stream, wire::OPT_LIST, b"x");
    assert_eq!(
        Client::option_reply(&mut stream).kind,
        wire::REP_ERR_INVALID
    );

    // GO/INFO whose lengths lie, or that name another export.
    let mut lying = Client::go_data("disk0");
    lying[3] = 200;
    Client::send_option(&mut stream, wire::OPT_GO, &lying);
    assert_eq!(
        Client::option_reply(&mut stream).kind,
        wire::REP_ERR_INVALID
    );
    Client::send_option(&mut stream, wire::OPT_INFO, &[0, 0]);
    assert_eq!(
        Client::option_reply(&mut stream).kind,
        wire::REP_ERR_INVALID
    );
    Client::send_option(&mut stream, wire::OPT_GO, &Client::go_data("nosuch"));
    assert_eq!(
        Client::option_reply(&mut stream).kind,
        wire::REP_ERR_UNKNOWN
    );

    // INFO tells the real size and stays in haggling.
    Client::send_option(&mut stream, wire::OPT_INFO, &Client::go_data("disk0"));
    let mut size = None;
    loop {
        let reply = Client::option_reply(&mut stream);
        assert_eq!(reply.option, wire::OPT_INFO);
        match reply.kind {
            wire::REP_INFO if reply.data[..2] == [0, 0] => {
                size = Some(u64::from_be_bytes(reply.data[2..10].try_into().unwrap()))
            }
            wire::REP_INFO => {}
            wire::REP_ACK => break,
            other => panic!("INFO failed: {other:#x}"),
        }
    }
    assert_eq!(size, Some(SIZE as u64));

    // And after all that, GO by name enters transmission.
    Client::send_option(&mut stream, wire::OPT_GO, &Client::go_data("disk0"));
    let mut client = Client::finish_go(stream);
    assert_eq!(client.size, SIZE as u64);
    support::assert_same_bytes(
        &client.read(0, 4096),
        &s.data[..4096],
        "read after haggling",
    );
    client.disconnect();
    s.still_serving();
}

#[test]
fn abort_is_acknowledged_and_closes() {
    let s = setup("hs-abort", &[]);
    let mut stream = haggling(s.server.port);
    Client::send_option(&mut stream, wire::OPT_ABORT, b"");
    let reply = Client::option_reply(&mut stream);
    assert_eq!((reply.option, reply.kind), (wire::OPT_ABORT, wire::REP_ACK));
    assert!(Client::closed_by_server(&mut stream));
    s.still_serving();
}

#[test]
fn export_name_with_and_without_zeroes() {
    let s = setup("hs-export-name", &[]);
    for (client_flags, reply_len) in [(3u32, 10usize), (1, 134)] {
        let mut stream = Client::greet(s.server.port);
        stream.write_all(&client_flags.to_be_bytes()).unwrap();
        Client::send_option(&mut stream, wire::OPT_EXPORT_NAME, b"");
        let mut reply = vec![0u8; reply_len];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(
            u64::from_be_bytes(reply[..8].try_into().unwrap()),
            SIZE as u64
        );
        assert!(reply[10..].iter().all(|&b| b == 0), "the padding is zeroes");
        let flags = u16::from_be_bytes(reply[8..10].try_into().unwrap());
        let mut client = Client {
            stream,
            size: SIZE as u64,
            flags,
        };
        // Exactly the reply: the next bytes are the answer to a read.
        support::assert_same_bytes(
            &client.read(100, 200),
            &s.data[100..300],
            "read after EXPORT_NAME",
        );
        client.disconnect();
    }
    // An unknown name cannot be answered with an error: the server hangs up.
    let mut stream = haggling(s.server.port);
    Client::send_option(&mut stream, wire::OPT_EXPORT_NAME, b"nosuch");
    assert!(Client::closed_by_server(&mut stream));
    s.still_serving();
}

#[test]
fn a_silent_client_is_timed_out() {
    let s = setup("hs-silent", &["--handshake-timeout", "1"]);
    let mut stream = Client::greet(s.server.port);
    // Say nothing: the server closes after its handshake timeout.
    assert!(
        Client::closed_by_server(&mut stream),
        "a silent client kept its connection"
    );
    let mut stream = haggling(s.server.port);
    assert!(
        Client::closed_by_server(&mut stream),
        "a client stuck haggling kept its connection"
    );
    s.still_serving();
}
