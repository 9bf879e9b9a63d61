//! The handshake: fixed newstyle negotiation with `NO_ZEROES`, then option
//! haggling until the client picks the export (`GO` or `EXPORT_NAME`),
//! aborts, or breaks the protocol.
//!
//! Served: `EXPORT_NAME`, `GO` and `INFO` (export size and flags, name,
//! block sizes), `LIST`, `ABORT`. Every other option — `STARTTLS`,
//! `STRUCTURED_REPLY`, `EXTENDED_HEADERS`, the metadata contexts — is
//! answered `NBD_REP_ERR_UNSUP` and haggling goes on, as real clients
//! expect (qemu asks for extended headers and structured replies before
//! `GO`). So transmission uses simple replies only.
//!
//! Runs on the connection's own task, never in the accept loop; the caller
//! bounds it with a timeout.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::disk::Export;
use crate::proto;

/// Option data longer than this is taken as an attack: the connection is
/// closed rather than the data read. (The protocol caps strings at 4096.)
const MAX_OPTION_DATA: u32 = 64 << 10;

/// How haggling ended.
#[derive(Debug)]
pub enum Outcome {
    /// The export was chosen: transmission begins.
    Transmission,
    /// The client aborted (and was acknowledged) or hung up.
    Closed,
    /// The client broke the protocol; the reason is for the log.
    Refused(String),
}

/// Runs the handshake on `stream`.
///
/// # Errors
///
/// Socket errors; a client that disconnects mid-option is `Closed`.
pub async fn negotiate(stream: &mut TcpStream, export: &Export) -> io::Result<Outcome> {
    stream.write_all(&proto::server_greeting()).await?;
    let client_flags = match read_u32(stream).await? {
        Some(flags) => flags,
        None => return Ok(Outcome::Closed),
    };
    let known = proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES;
    if client_flags & !known != 0 {
        return Ok(Outcome::Refused(format!(
            "unknown client flags {client_flags:#x}"
        )));
    }
    let no_zeroes = client_flags & proto::FLAG_C_NO_ZEROES != 0;

    let mut reply = Vec::with_capacity(256);
    loop {
        let mut header = [0u8; 16];
        if !read_full(stream, &mut header).await? {
            return Ok(Outcome::Closed);
        }
        let magic = u64::from_be_bytes(header[0..8].try_into().unwrap());
        let option = u32::from_be_bytes(header[8..12].try_into().unwrap());
        let length = u32::from_be_bytes(header[12..16].try_into().unwrap());
        if magic != proto::IHAVEOPT {
            return Ok(Outcome::Refused(format!("bad option magic {magic:#x}")));
        }
        if length > MAX_OPTION_DATA {
            return Ok(Outcome::Refused(format!(
                "option {option} with {length} bytes of data"
            )));
        }
        let mut data = vec![0u8; length as usize];
        if !read_full(stream, &mut data).await? {
            return Ok(Outcome::Closed);
        }

        reply.clear();
        match option {
            proto::OPT_EXPORT_NAME => {
                if !export.answers_to(&data) {
                    // No way to send an error to EXPORT_NAME: hang up.
                    return Ok(Outcome::Refused(format!(
                        "unknown export {:?}",
                        String::from_utf8_lossy(&data)
                    )));
                }
                reply.extend_from_slice(&export.size.to_be_bytes());
                reply.extend_from_slice(&export.transmission_flags().to_be_bytes());
                if !no_zeroes {
                    reply.extend_from_slice(&[0u8; 124]);
                }
                stream.write_all(&reply).await?;
                return Ok(Outcome::Transmission);
            }
            proto::OPT_ABORT => {
                proto::option_reply(&mut reply, option, proto::REP_ACK, &[]);
                // The client may already be gone; that is fine.
                let _ = stream.write_all(&reply).await;
                return Ok(Outcome::Closed);
            }
            proto::OPT_LIST if data.is_empty() => {
                let name = export.name.as_bytes();
                let mut server = (name.len() as u32).to_be_bytes().to_vec();
                server.extend_from_slice(name);
                proto::option_reply(&mut reply, option, proto::REP_SERVER, &server);
                proto::option_reply(&mut reply, option, proto::REP_ACK, &[]);
            }
            proto::OPT_LIST => {
                proto::option_reply(
                    &mut reply,
                    option,
                    proto::REP_ERR_INVALID,
                    b"LIST takes no data",
                );
            }
            proto::OPT_INFO | proto::OPT_GO => match parse_info_request(&data) {
                None => proto::option_reply(
                    &mut reply,
                    option,
                    proto::REP_ERR_INVALID,
                    b"malformed INFO/GO request",
                ),
                Some((name, _)) if !export.answers_to(name) => proto::option_reply(
                    &mut reply,
                    option,
                    proto::REP_ERR_UNKNOWN,
                    b"no such export",
                ),
                Some((_, requests)) => {
                    let info = proto::info_export(export.size, export.transmission_flags());
                    proto::option_reply(&mut reply, option, proto::REP_INFO, &info);
                    if requests.contains(&proto::INFO_NAME) {
                        let name = proto::info_name(&export.name);
                        proto::option_reply(&mut reply, option, proto::REP_INFO, &name);
                    }
                    // Sent whether asked or not (clients ignore what they
                    // did not ask for): minimum 1, since unaligned requests
                    // are served, and the maximum payload we accept.
                    let sizes =
                        proto::info_block_size(1, export.preferred_block(), proto::MAX_PAYLOAD);
                    proto::option_reply(&mut reply, option, proto::REP_INFO, &sizes);
                    proto::option_reply(&mut reply, option, proto::REP_ACK, &[]);
                    if option == proto::OPT_GO {
                        stream.write_all(&reply).await?;
                        return Ok(Outcome::Transmission);
                    }
                }
            },
            _ => proto::option_reply(&mut reply, option, proto::REP_ERR_UNSUP, &[]),
        }
        stream.write_all(&reply).await?;
    }
}

/// The export name and information requests of an `INFO` or `GO`, or
/// `None` if the lengths inside do not add up.
fn parse_info_request(data: &[u8]) -> Option<(&[u8], Vec<u16>)> {
    let name_len = u32::from_be_bytes(data.get(0..4)?.try_into().ok()?) as usize;
    let name = data.get(4..4usize.checked_add(name_len)?)?;
    let rest = &data[4 + name_len..];
    let count = u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?) as usize;
    let list = rest.get(2..)?;
    if list.len() != count * 2 {
        return None;
    }
    let requests = list
        .chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
        .collect();
    Some((name, requests))
}

/// Fills `buf`; `false` if the client hung up first.
async fn read_full(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<bool> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(false),
        Err(e) => Err(e),
    }
}

async fn read_u32(stream: &mut TcpStream) -> io::Result<Option<u32>> {
    let mut bytes = [0u8; 4];
    Ok(read_full(stream, &mut bytes)
        .await?
        .then(|| u32::from_be_bytes(bytes)))
}
