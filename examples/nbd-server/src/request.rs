//! One transmission request, from header to reply: [`plan`] checks it
//! against the export (flags, bounds with checked arithmetic, read-only)
//! and either answers at once or makes a [`Job`]; [`execute`] runs the job's
//! disk ops and produces its [`Done`]. Nothing here touches the socket.
//!
//! Errors follow the protocol: unknown commands and flags `EINVAL`; a read
//! or trim past the end `EINVAL`, a write or write-zeroes past it
//! `ENOSPC`; any write to a read-only export `EPERM`. A zero-length request
//! succeeds without touching the disk.

use std::io;
use std::sync::Arc;

use crate::bufpool::{BufPool, Buffer};
use crate::disk::{Disk, Export};
use crate::proto::{self, Request};

/// What to do with a request.
#[derive(Debug)]
pub enum Plan {
    /// Reply now with this error (0: success, no data); `recycle` is a
    /// payload buffer the request no longer needs.
    Reply { error: u32, recycle: Option<Buffer> },
    /// Run this on the disk.
    Job(Job),
    /// `NBD_CMD_DISC`: finish what is in flight, then close.
    Disconnect,
}

/// A checked request, ready for the disk.
#[derive(Debug)]
pub struct Job {
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
    pub kind: JobKind,
    /// Bytes of buffer this job holds, for the connection's in-flight cap.
    pub charge: usize,
}

#[derive(Debug)]
pub enum JobKind {
    Read {
        buf: Buffer,
    },
    Write {
        buf: Buffer,
        fua: bool,
    },
    Flush,
    Trim {
        fua: bool,
    },
    WriteZeroes {
        may_trim: bool,
        fast: bool,
        fua: bool,
    },
}

/// A finished job: its reply and what to give back to the pool.
#[derive(Debug)]
pub struct Done {
    pub cookie: u64,
    pub error: u32,
    /// Read data: the buffer and the range of it to send.
    pub data: Option<(Buffer, usize, usize)>,
    /// A buffer whose reply carries no data.
    pub recycle: Option<Buffer>,
    pub charge: usize,
    /// The disk's own error, for the log (not a request the export refused).
    pub io_error: Option<io::Error>,
}

/// Checks `request` (whose payload, for a write, is `payload`, laid out as
/// [`Export::layout`] says) and decides what to do with it.
pub fn plan(
    request: &Request,
    export: &Export,
    payload: Option<Buffer>,
    pool: &mut BufPool,
) -> Plan {
    let refuse = |error: u32, recycle: Option<Buffer>| Plan::Reply { error, recycle };
    let allowed = match request.kind {
        proto::CMD_READ | proto::CMD_WRITE | proto::CMD_FLUSH | proto::CMD_TRIM => {
            proto::CMD_FLAG_FUA
        }
        proto::CMD_WRITE_ZEROES => {
            proto::CMD_FLAG_FUA | proto::CMD_FLAG_NO_HOLE | proto::CMD_FLAG_FAST_ZERO
        }
        proto::CMD_DISC => return Plan::Disconnect,
        _ => return refuse(proto::EINVAL, payload),
    };
    if request.flags & !allowed != 0 {
        return refuse(proto::EINVAL, payload);
    }
    let fua = request.flags & proto::CMD_FLAG_FUA != 0;
    let writes = matches!(
        request.kind,
        proto::CMD_WRITE | proto::CMD_TRIM | proto::CMD_WRITE_ZEROES
    );
    if writes && export.read_only {
        return refuse(proto::EPERM, payload);
    }
    let in_bounds = request
        .offset
        .checked_add(u64::from(request.length))
        .is_some_and(|end| end <= export.size);
    if !in_bounds && request.kind != proto::CMD_FLUSH {
        let error = match request.kind {
            proto::CMD_WRITE | proto::CMD_WRITE_ZEROES => proto::ENOSPC,
            _ => proto::EINVAL,
        };
        return refuse(error, payload);
    }
    if request.kind == proto::CMD_READ && request.length > proto::MAX_PAYLOAD {
        return refuse(proto::EINVAL, payload);
    }
    if request.length == 0 && request.kind != proto::CMD_FLUSH {
        return refuse(0, payload);
    }
    let len = request.length as usize;
    let (kind, charge) = match request.kind {
        proto::CMD_READ => {
            let (_, covering) = export.layout(request.offset, len);
            let buf = pool.take(covering);
            let charge = buf.capacity();
            (JobKind::Read { buf }, charge)
        }
        proto::CMD_WRITE => {
            let buf = payload.expect("a write's payload comes with it");
            let charge = buf.capacity();
            (JobKind::Write { buf, fua }, charge)
        }
        proto::CMD_FLUSH => (JobKind::Flush, 0),
        proto::CMD_TRIM => (JobKind::Trim { fua }, 0),
        proto::CMD_WRITE_ZEROES => (
            JobKind::WriteZeroes {
                may_trim: request.flags & proto::CMD_FLAG_NO_HOLE == 0,
                fast: request.flags & proto::CMD_FLAG_FAST_ZERO != 0,
                fua,
            },
            0,
        ),
        _ => unreachable!("unknown commands were refused above"),
    };
    Plan::Job(Job {
        cookie: request.cookie,
        offset: request.offset,
        length: request.length,
        kind,
        charge,
    })
}

/// Runs `job` on `disk`.
pub async fn execute(disk: Arc<Disk>, job: Job) -> Done {
    let Job {
        cookie,
        offset,
        length,
        kind,
        charge,
    } = job;
    let len = length as usize;
    let mut done = Done {
        cookie,
        error: 0,
        data: None,
        recycle: None,
        charge,
        io_error: None,
    };
    let result = match kind {
        JobKind::Read { buf } => {
            let (result, buf) = disk.read(offset, len, buf).await;
            match result {
                Ok(()) => {
                    let (head, _) = disk.export.layout(offset, len);
                    done.data = Some((buf, head, len));
                }
                Err(_) => done.recycle = Some(buf),
            }
            result
        }
        JobKind::Write { buf, fua } => {
            let (result, buf) = disk.write(offset, len, buf, fua).await;
            done.recycle = Some(buf);
            result
        }
        JobKind::Flush => disk.flush().await,
        JobKind::Trim { fua } => disk.trim(offset, u64::from(length), fua).await,
        JobKind::WriteZeroes {
            may_trim,
            fast,
            fua,
        } => {
            disk.write_zeroes(offset, u64::from(length), may_trim, fast, fua)
                .await
        }
    };
    if let Err(e) = result {
        done.error = proto::error_value(&e);
        // A fast zero refused is an answer, not a disk failure.
        if done.error != proto::ENOTSUP {
            done.io_error = Some(e);
        }
    }
    done
}
