//! Thread bindings: which context [`current`] returns on each thread. A
//! thread's bindings are a stack, innermost last: [`BindGuard`]s from
//! [`Context::bind`](crate::Context::bind), the home thread's binding to its
//! own context, and the member a [`Pool`](crate::Pool) gave the thread.
//! Imports the handle only.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::sync::{Arc, Weak};

use crate::context::handle::{Context, Owner};

/// One entry of a thread's binding stack.
enum Binding {
    /// From [`Context::bind`]: a handle, kept alive by the binding.
    Handle(Context),
    /// A context this thread belongs to without holding it: its home
    /// thread's own context, or a pool member the thread was given. Weak, so
    /// the binding does not keep the context alive.
    Weak(Weak<Owner>),
}

impl Binding {
    fn context(&self) -> Option<Context> {
        match self {
            Binding::Handle(context) => Some(context.clone()),
            Binding::Weak(owner) => owner.upgrade().map(|owner| Context { owner }),
        }
    }
}

thread_local! {
    /// This thread's bindings, innermost last, each with its id.
    static BOUND: RefCell<Vec<(u64, Binding)>> = const { RefCell::new(Vec::new()) };
    static NEXT_BINDING: Cell<u64> = const { Cell::new(0) };
}

fn push_binding(binding: Binding) -> u64 {
    let id = NEXT_BINDING.with(|next| {
        let id = next.get();
        next.set(id + 1);
        id
    });
    BOUND.with(|bound| {
        let mut bound = bound.borrow_mut();
        // Forget weak bindings whose context is gone.
        bound.retain(|(_, b)| !matches!(b, Binding::Weak(owner) if owner.strong_count() == 0));
        bound.push((id, binding));
    });
    id
}

fn remove_binding(id: u64) {
    // Taken out under the borrow, dropped after it: dropping a context's
    // last handle may run arbitrary code.
    let removed = BOUND.with(|bound| {
        let mut bound = bound.borrow_mut();
        let at = bound.iter().rposition(|(entry, _)| *entry == id)?;
        Some(bound.remove(at))
    });
    drop(removed);
}

/// The context the calling thread should submit to: the most recent
/// [`Context::bind`] guard's, else the context whose home thread this is, else
/// the context a [`Pool`](crate::Pool) gave this thread
/// ([`Pool::bind_thread`](crate::Pool::bind_thread)), else `None`.
pub fn current() -> Option<Context> {
    BOUND.with(|bound| {
        bound
            .borrow()
            .iter()
            .rev()
            .find_map(|(_, binding)| binding.context())
    })
}

/// Binds the calling thread to `context` until the guard is dropped; see
/// [`Context::bind`].
pub(crate) fn bind(context: &Context) -> BindGuard {
    BindGuard {
        id: push_binding(Binding::Handle(context.clone())),
        _not_send: PhantomData,
    }
}

/// Binds the calling thread, the home of `owner`'s context, to that context:
/// weakly, until the guard is dropped (or, if it is forgotten, until the
/// context is gone).
pub(crate) fn bind_home(owner: &Arc<Owner>) -> HomeBinding {
    HomeBinding {
        id: push_binding(Binding::Weak(Arc::downgrade(owner))),
        _not_send: PhantomData,
    }
}

/// Binds the calling thread, weakly and for good, to `owner`'s context: a
/// pool's choice for this thread. Lapses when the context is gone.
pub(crate) fn bind_weakly(owner: &Arc<Owner>) {
    push_binding(Binding::Weak(Arc::downgrade(owner)));
}

/// Runs `f` on the caller's thread with `context` bound and its runtime
/// entered, so `current()`, `tokio::spawn` and Tokio timers work inside.
pub(crate) fn with_context<R>(context: &Context, f: impl FnOnce() -> R) -> R {
    let _bound = bind(context);
    let _runtime = context.state().runtime().enter();
    f()
}

/// Keeps the calling thread bound to a context; see [`Context::bind`].
#[must_use = "the thread is unbound when the guard is dropped"]
#[derive(Debug)]
pub struct BindGuard {
    id: u64,
    /// Bindings are per thread: the guard must be dropped where it was made.
    _not_send: PhantomData<*const ()>,
}

impl Drop for BindGuard {
    fn drop(&mut self) {
        remove_binding(self.id);
    }
}

/// A home thread's binding to its own context; see [`bind_home`].
#[derive(Debug)]
pub(crate) struct HomeBinding {
    id: u64,
    _not_send: PhantomData<*const ()>,
}

impl Drop for HomeBinding {
    fn drop(&mut self) {
        remove_binding(self.id);
    }
}
