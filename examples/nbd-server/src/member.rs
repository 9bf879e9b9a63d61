//! A pool member as the server uses it: its context, the image as seen from
//! it, its registered buffers, and how many connections it serves now.
//!
//! Everything a connection touches lives on its member: the socket is
//! registered with the member's runtime, the disk ops go to the member's
//! ring through the member's [`Disk`], and request buffers come from the
//! member's [`FixedClasses`], which no other member's connections use, so
//! every fixed op is submitted on the ring its buffer is registered with.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aioctx::Context;

use crate::bufpool::FixedClasses;
use crate::disk::{Disk, Export, ImageFiles};

/// How the members reach the image and hold request buffers.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub files: ImageFiles,
    /// Whether to register buffers with each member's ring.
    pub registered_buffers: bool,
}

/// One member of the pool.
#[derive(Debug)]
pub struct Member {
    pub index: usize,
    pub context: Context,
    pub disk: Arc<Disk>,
    pub buffers: Option<Arc<FixedClasses>>,
    /// Connections this member serves now. Only placement reads it, and a
    /// stale count only places one connection less evenly: `Relaxed`.
    live: AtomicUsize,
}

impl Member {
    /// Prepares member `index` (its context from the pool) to serve `export`.
    ///
    /// # Errors
    ///
    /// A sentence saying what could not be set up.
    pub async fn start(
        index: usize,
        context: &Context,
        export: &Arc<Export>,
        setup: Setup,
    ) -> Result<Member, String> {
        let disk = export
            .disk_on(context, setup.files)
            .await
            .map_err(|e| format!("cannot open the image on context {index}: {e}"))?;
        let buffers = if setup.registered_buffers {
            let classes = FixedClasses::register(context)
                .await
                .map_err(|e| format!("cannot allocate registered buffers: {e}"))?;
            Some(Arc::new(classes))
        } else {
            None
        };
        Ok(Member {
            index,
            context: context.clone(),
            disk: Arc::new(disk),
            buffers,
            live: AtomicUsize::new(0),
        })
    }

    /// Connections served now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Counts a connection in; [`Member::leave`] counts it out.
    pub fn join(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
    }

    pub fn leave(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}
