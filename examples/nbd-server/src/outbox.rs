//! Replies waiting for the socket, in the order their requests completed:
//! each a simple-reply header plus, for a read, the range of its buffer to
//! send. [`Outbox::write_to`] sends as many as fit in one `writev`, picking
//! up mid-reply where the last one stopped, and hands every buffer whose
//! bytes are all on the wire back to the pool.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use tokio::net::TcpStream;

use crate::bufpool::{BufPool, Buffer};
use crate::proto;

/// Replies gathered into one `writev`.
const MAX_REPLIES_PER_WRITE: usize = 256;

/// Replies waiting for the socket, in completion order.
#[derive(Default)]
pub struct Outbox {
    queue: VecDeque<Reply>,
    /// Bytes of the front reply already sent.
    sent: usize,
    /// Bytes queued, for the cap on clients that do not read.
    pub bytes: usize,
}

struct Reply {
    header: [u8; proto::SIMPLE_REPLY_LEN],
    /// Read data: the buffer and the range of it to send.
    data: Option<(Buffer, usize, usize)>,
}

impl Reply {
    fn len(&self) -> usize {
        proto::SIMPLE_REPLY_LEN + self.data.as_ref().map_or(0, |(_, _, len)| *len)
    }
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn push(
        &mut self,
        header: [u8; proto::SIMPLE_REPLY_LEN],
        data: Option<(Buffer, usize, usize)>,
    ) {
        let reply = Reply { header, data };
        self.bytes += reply.len();
        self.queue.push_back(reply);
    }

    /// One `writev` of the queued replies; sent data buffers go back to
    /// `pool`.
    pub fn write_to(&mut self, stream: &TcpStream, pool: &mut BufPool) -> io::Result<usize> {
        let mut slices = Vec::with_capacity(2 * MAX_REPLIES_PER_WRITE.min(self.queue.len()));
        let mut skip = self.sent;
        for reply in self.queue.iter().take(MAX_REPLIES_PER_WRITE) {
            let data: &[u8] = match &reply.data {
                Some((buf, start, len)) => &buf[*start..*start + *len],
                None => &[],
            };
            for part in [&reply.header[..], data] {
                if skip >= part.len() {
                    skip -= part.len();
                } else {
                    slices.push(IoSlice::new(&part[skip..]));
                    skip = 0;
                }
            }
        }
        let written = stream.try_write_vectored(&slices)?;
        drop(slices);
        self.advance(written, pool);
        Ok(written)
    }

    fn advance(&mut self, written: usize, pool: &mut BufPool) {
        self.bytes -= written;
        let mut position = self.sent + written;
        while let Some(front) = self.queue.front() {
            let len = front.len();
            if position < len {
                break;
            }
            position -= len;
            if let Some((buf, _, _)) = self.queue.pop_front().and_then(|reply| reply.data) {
                pool.give(buf);
            }
        }
        self.sent = position;
    }

    pub fn clear(&mut self, pool: &mut BufPool) {
        for reply in self.queue.drain(..) {
            if let Some((buf, _, _)) = reply.data {
                pool.give(buf);
            }
        }
        self.sent = 0;
        self.bytes = 0;
    }
}
