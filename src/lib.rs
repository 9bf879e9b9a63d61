//! aioctx: io_uring AioContexts for Tokio (work in progress).
