//! A small raw-socket NBD client written from the protocol text,
//! independent of the server's own code, for the cases real clients never
//! produce.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::wire::{
    CMD_DISC, CMD_FLUSH, CMD_READ, CMD_WRITE, IHAVEOPT, NBDMAGIC, OPT_GO, REP_ACK, REP_INFO,
    REPLY_MAGIC, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC,
};

/// One option reply.
#[derive(Debug)]
pub struct OptionReply {
    pub option: u32,
    pub kind: u32,
    pub data: Vec<u8>,
}

/// A raw NBD client over a blocking socket, for the cases real clients
/// never produce.
pub struct Client {
    pub stream: TcpStream,
    pub size: u64,
    pub flags: u16,
}

impl Client {
    /// Connects and reads the greeting; returns the socket before the client
    /// flags are sent.
    pub fn greet(port: u16) -> TcpStream {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut greeting = [0u8; 18];
        stream.read_exact(&mut greeting).expect("greeting");
        assert_eq!(
            u64::from_be_bytes(greeting[0..8].try_into().unwrap()),
            NBDMAGIC
        );
        assert_eq!(
            u64::from_be_bytes(greeting[8..16].try_into().unwrap()),
            IHAVEOPT
        );
        let handshake_flags = u16::from_be_bytes(greeting[16..18].try_into().unwrap());
        assert_eq!(handshake_flags, 0b11, "FIXED_NEWSTYLE | NO_ZEROES");
        stream
    }

    /// Sends an option.
    pub fn send_option(stream: &mut TcpStream, option: u32, data: &[u8]) {
        let mut out = IHAVEOPT.to_be_bytes().to_vec();
        out.extend_from_slice(&option.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
        stream.write_all(&out).expect("send option");
    }

    /// Reads one option reply.
    pub fn option_reply(stream: &mut TcpStream) -> OptionReply {
        let mut header = [0u8; 20];
        stream.read_exact(&mut header).expect("option reply header");
        assert_eq!(
            u64::from_be_bytes(header[0..8].try_into().unwrap()),
            REPLY_MAGIC
        );
        let option = u32::from_be_bytes(header[8..12].try_into().unwrap());
        let kind = u32::from_be_bytes(header[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(header[16..20].try_into().unwrap());
        let mut data = vec![0u8; len as usize];
        stream.read_exact(&mut data).expect("option reply data");
        OptionReply { option, kind, data }
    }

    /// The data of `NBD_OPT_GO`/`INFO` for `name`, asking for block sizes.
    pub fn go_data(name: &str) -> Vec<u8> {
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&3u16.to_be_bytes());
        data
    }

    /// Connects with `NBD_OPT_GO` on the default export.
    pub fn connect(port: u16) -> Client {
        let mut stream = Client::greet(port);
        stream.write_all(&3u32.to_be_bytes()).unwrap();
        Client::send_option(&mut stream, OPT_GO, &Client::go_data(""));
        Client::finish_go(stream)
    }

    /// Reads the replies to a GO until its ACK.
    pub fn finish_go(mut stream: TcpStream) -> Client {
        let (mut size, mut flags) = (None, 0);
        loop {
            let reply = Client::option_reply(&mut stream);
            assert_eq!(reply.option, OPT_GO);
            match reply.kind {
                REP_INFO if reply.data[0..2] == [0, 0] => {
                    size = Some(u64::from_be_bytes(reply.data[2..10].try_into().unwrap()));
                    flags = u16::from_be_bytes(reply.data[10..12].try_into().unwrap());
                }
                REP_INFO => {}
                REP_ACK => break,
                other => panic!("GO failed with reply {other:#x}"),
            }
        }
        Client {
            stream,
            size: size.expect("GO succeeded without NBD_INFO_EXPORT"),
            flags,
        }
    }

    /// Sends one request (and its payload) without waiting.
    pub fn send(
        &mut self,
        flags: u16,
        kind: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) {
        let mut out = Vec::with_capacity(28 + payload.len());
        out.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&cookie.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        self.stream.write_all(&out).expect("send request");
    }

    /// Reads one simple reply header: (cookie, error).
    pub fn reply(&mut self) -> (u64, u32) {
        let mut header = [0u8; 16];
        self.stream.read_exact(&mut header).expect("reply header");
        assert_eq!(
            u32::from_be_bytes(header[0..4].try_into().unwrap()),
            SIMPLE_REPLY_MAGIC,
            "simple reply magic"
        );
        (
            u64::from_be_bytes(header[8..16].try_into().unwrap()),
            u32::from_be_bytes(header[4..8].try_into().unwrap()),
        )
    }

    /// Reads `len` bytes of reply data.
    pub fn data(&mut self, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        self.stream.read_exact(&mut data).expect("reply data");
        data
    }

    /// One request, its reply's error (and data for a successful read).
    pub fn call(
        &mut self,
        flags: u16,
        kind: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) -> (u32, Vec<u8>) {
        let cookie = 0x5eed_0000 ^ offset ^ u64::from(kind) << 48;
        self.send(flags, kind, cookie, offset, len, payload);
        let (got, error) = self.reply();
        assert_eq!(got, cookie, "reply for another request");
        let data = if kind == CMD_READ && error == 0 {
            self.data(len as usize)
        } else {
            Vec::new()
        };
        (error, data)
    }

    #[track_caller]
    pub fn read(&mut self, offset: u64, len: u32) -> Vec<u8> {
        let (error, data) = self.call(0, CMD_READ, offset, len, &[]);
        assert_eq!(error, 0, "read {len} at {offset}");
        data
    }

    #[track_caller]
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let (error, _) = self.call(0, CMD_WRITE, offset, data.len() as u32, data);
        assert_eq!(error, 0, "write {} at {offset}", data.len());
    }

    #[track_caller]
    pub fn flush(&mut self) {
        let (error, _) = self.call(0, CMD_FLUSH, 0, 0, &[]);
        assert_eq!(error, 0, "flush");
    }

    /// `NBD_CMD_DISC`, then waits for the server to close.
    pub fn disconnect(mut self) {
        self.send(0, CMD_DISC, 0, 0, 0, &[]);
        let mut rest = Vec::new();
        let _ = self.stream.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "the server sent {} bytes after DISC",
            rest.len()
        );
    }

    /// Whether the server has closed the connection (reads EOF or a reset
    /// within the read timeout).
    pub fn closed_by_server(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        loop {
            match stream.read(&mut byte) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}
