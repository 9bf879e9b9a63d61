//! SQPOLL: ops complete after the kernel's polling thread has gone idle,
//! submitted from the home thread and from a foreign thread.

mod support;

use std::time::Duration;

use aioctx::Context;

#[test]
fn ops_complete_after_the_poller_went_idle() {
    let Some(ctx) = support::build(
        Context::builder()
            .backend(aioctx::Backend::Uring)
            .sqpoll(Duration::from_millis(5)),
    ) else {
        return;
    };
    if !support::on_ring(&ctx) {
        return;
    }
    if !ctx.ring_flags().sqpoll {
        return eprintln!(
            "skipping: the kernel refused SQPOLL ({:?})",
            ctx.ring_flags()
        );
    }
    assert!(
        !ctx.ring_flags().defer_taskrun,
        "SQPOLL excludes DEFER_TASKRUN"
    );
    let path = support::TempPath::new("sqpoll");
    std::fs::write(&path.0, b"polled").unwrap();
    for _ in 0..3 {
        // Past the idle time: the poller sleeps and must be woken.
        std::thread::sleep(Duration::from_millis(30));
        ctx.block_on(ctx.nop()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let inner = ctx.clone();
        let path = path.0.clone();
        let data = ctx
            .spawn(async move {
                let file = aioctx::fs::File::open(&inner, &path).await.unwrap();
                let (n, data) = file.read_at(Vec::with_capacity(8), 0).await;
                n.unwrap();
                data
            })
            .join()
            .unwrap();
        assert_eq!(data, b"polled");
    }
}
