//! What a home thread offers beyond `spawn`: `!Send` tasks with
//! `spawn_local`, and pinning to a CPU.

pub mod support;

use std::rc::Rc;

use aioctx::Context;

#[test]
fn spawn_local_runs_non_send_futures_on_the_home_thread() {
    let Some(ctx) = support::context() else {
        return;
    };
    let inner = ctx.clone();
    let sum = ctx
        .spawn(async move {
            let ctx = inner;
            // An Rc cannot cross threads: this task must stay here.
            let shared = Rc::new(41);
            let local = ctx.clone();
            let handle = ctx.spawn_local(async move {
                local.nop().await.unwrap();
                *shared + 1
            });
            handle.await.unwrap()
        })
        .join()
        .unwrap();
    assert_eq!(sum, 42);
    let off_home = std::panic::catch_unwind(|| drop(ctx.spawn_local(async {})));
    assert!(off_home.is_err(), "spawn_local off the home thread panics");
}

#[test]
fn pin_to_cpu_pins_the_home_thread() {
    let cpu = 0;
    let Some(ctx) = support::build(Context::builder().pin_to_cpu(cpu)) else {
        return;
    };
    let allowed = ctx
        .spawn(async {
            // SAFETY: a zeroed cpu_set_t is a valid empty set.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: sched_getaffinity of this thread into a set of its size.
            let ret = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
            assert_eq!(ret, 0);
            (0..libc::CPU_SETSIZE as usize)
                // SAFETY: `cpu < CPU_SETSIZE`.
                .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap();
    assert_eq!(allowed, vec![cpu]);
    let refused = Context::builder().pin_to_cpu(100_000).build();
    assert_eq!(refused.unwrap_err().raw_os_error(), Some(libc::EINVAL));
}
