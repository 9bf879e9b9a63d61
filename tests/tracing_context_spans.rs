//! Every context logs inside a span of its own, `aioctx.context`, carrying
//! its id, its pool member index and its backend, and announces itself once
//! at `info` with the ring flags it got. Before, two pool members logged the
//! same "context ready" line at `debug`, with nothing to tell them apart.

pub mod support;

use aioctx::sim::SimConfig;
use aioctx::{Backend, Context};
use tracing::Level;

use support::trace;

const READY: &str = "aioctx context ready";

#[test]
fn pool_members_announce_themselves_with_their_member_index() {
    trace::install();
    let Some(pool) = support::pool(2) else {
        return;
    };
    let mut members = Vec::new();
    for (index, member) in pool.members().iter().enumerate() {
        let ready = trace::named(member.id(), READY);
        assert_eq!(ready.len(), 1, "one ready event per member: {ready:?}");
        let ready = &ready[0];
        assert_eq!(ready.context_field("member"), Some(&*index.to_string()));
        assert_eq!(ready.context_field("backend"), Some(member.backend()));
        members.push(ready.context_field("member").unwrap().to_owned());
    }
    assert_ne!(members[0], members[1], "two members, two indexes");
    assert_ne!(pool.members()[0].id(), pool.members()[1].id());
}

#[test]
fn ring_flags_are_announced_at_info_once_per_context() {
    trace::install();
    let Some(ctx) = support::build(Context::builder().entries(16)) else {
        return;
    };
    ctx.block_on(ctx.nop()).unwrap();
    let ready = trace::named(ctx.id(), READY);
    assert_eq!(ready.len(), 1, "{ready:?}");
    let ready = &ready[0];
    assert_eq!(ready.level, Level::INFO);
    assert_eq!(ready.context_field("member"), None, "not in a pool");
    assert_eq!(ready.context_field("backend"), Some(ctx.backend()));
    if !support::on_ring(&ctx) {
        return;
    }
    let flags = ctx.ring_flags();
    let field = |name| ready.field(name).map(str::to_owned);
    assert_eq!(field("entries").as_deref(), Some("16"));
    assert_eq!(
        field("single_issuer"),
        Some(flags.single_issuer.to_string())
    );
    assert_eq!(
        field("defer_taskrun"),
        Some(flags.defer_taskrun.to_string())
    );
    assert_eq!(field("coop_taskrun"), Some(flags.coop_taskrun.to_string()));
    assert_eq!(field("sqpoll"), Some(flags.sqpoll.to_string()));
    assert_eq!(
        field("registered_ring_fd"),
        Some(flags.registered_ring_fd.to_string())
    );
}

#[test]
fn contexts_have_distinct_ids_in_their_debug_output() {
    trace::install();
    let (Some(a), Some(b)) = (support::context(), support::context()) else {
        return;
    };
    assert_ne!(a.id(), b.id());
    assert!(format!("{a:?}").contains(&format!("id: {}", a.id())));
}

/// A home thread spawned by the crate enters the span for its whole life:
/// a task spawned onto the context logs inside it too.
#[test]
fn the_home_thread_runs_inside_the_context_span() {
    trace::install();
    let Some(ctx) = support::context() else {
        return;
    };
    ctx.block_on(ctx.spawn(async { tracing::info!("from a home task") }))
        .unwrap();
    assert_eq!(trace::named(ctx.id(), "from a home task").len(), 1);
}

/// A local context's home is the caller's thread: the span is entered
/// while it runs the home (`block_on`), not around the rest of its work.
#[test]
fn a_local_context_enters_its_span_while_it_runs_the_home() {
    trace::install();
    let Some(local) = support::build_local(Context::builder()) else {
        return;
    };
    let id = local.context().id();
    assert_eq!(trace::named(id, READY).len(), 1);
    local.block_on(async { tracing::info!("inside block_on") });
    tracing::info!("outside block_on");
    assert_eq!(trace::named(id, "inside block_on").len(), 1);
    assert!(trace::named(id, "outside block_on").is_empty());
}

/// A simulator on the caller's runtime has no home thread: its driver task
/// and its alarm run in the span. The failed open below completes there.
#[tokio::test(start_paused = true)]
async fn a_sim_on_the_callers_runtime_logs_in_its_span() {
    trace::install();
    let ctx = Context::builder()
        .backend(Backend::Sim(SimConfig::new().seed(7)))
        .build()
        .unwrap();
    assert_eq!(trace::named(ctx.id(), READY).len(), 1);
    let error = aioctx::fs::File::open(&ctx, "/missing").await.unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::ENOENT));
    let failed = trace::named(ctx.id(), "aioctx op failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].context_field("backend"), Some("sim"));
    assert_eq!(failed[0].field("errno"), Some("2"));
}
