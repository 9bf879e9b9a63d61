//! The `nbd-server` example's server, one file per part; the program
//! (`examples/nbd-server.rs`) parses the options, starts the pool and its
//! members, and runs [`server::run`] until a signal. The tests check the wire
//! format against [`proto`] and drive the program over sockets.
//!
//! | file | owns |
//! |---|---|
//! | `options.rs` | the command line |
//! | `proto.rs` | the NBD wire format |
//! | `handshake.rs` | option haggling |
//! | `server.rs` | listening, accepting, which member serves a connection, shutdown |
//! | `member.rs` | one pool member: its context, disk, registered buffers, connections |
//! | `connection.rs` | the transmission phase: receive, run, reply |
//! | `outbox.rs` | replies waiting for the socket, sent by `writev` |
//! | `request.rs` | checking one request and running it |
//! | `disk.rs` | the export and its I/O (O_DIRECT alignment, read-modify-write) |
//! | `bufpool.rs` | request buffers: registered per member, plain per connection |

mod bufpool;
mod connection;
pub mod disk;
mod handshake;
pub mod member;
pub mod options;
mod outbox;
pub mod proto;
mod request;
pub mod server;
