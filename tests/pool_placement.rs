//! Where a pool puts work: threads spread evenly over the members, a pool
//! task submits to its own member's ring, `current()` inside a pool task is
//! its member, every worker of a runtime bound with `thread_binder` finds a
//! member, and a file's ops go to the submitting thread's member.

pub mod support;

use std::collections::HashMap;
use std::sync::Arc;

use aioctx::Context;
use aioctx::fs::File;

#[test]
fn threads_spread_evenly_over_the_members() {
    let Some(pool) = support::pool(3) else { return };
    let threads: usize = 10;
    let picks: Vec<_> = (0..threads)
        .map(|_| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let first = pool.thread_member().home_thread();
                // Sticky: the same member every time.
                assert_eq!(pool.thread_member().home_thread(), first);
                first
            })
        })
        .map(|t| t.join().unwrap())
        .collect();
    let mut per_member: HashMap<_, usize> = HashMap::new();
    for pick in picks {
        *per_member.entry(pick).or_default() += 1;
    }
    let most = *per_member.values().max().unwrap();
    assert!(
        most <= threads.div_ceil(3),
        "a member got {most} of {threads} threads: {per_member:?}"
    );
}

#[test]
fn pool_tasks_submit_locally_and_see_their_member() {
    let Some(pool) = support::pool(2) else { return };
    let before = pool.total_metrics();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            pool.spawn(async {
                let ctx = aioctx::current().expect("a pool task has a current context");
                assert!(ctx.is_home_thread(), "current() is the task's own member");
                for _ in 0..10 {
                    ctx.nop().await.unwrap();
                }
                ctx.home_thread()
            })
        })
        .collect();
    let homes: Vec<_> = tasks.into_iter().map(|t| t.join().unwrap()).collect();
    // Round-robin: both members ran tasks.
    for member in pool.members() {
        assert_eq!(
            homes.iter().filter(|&&h| h == member.home_thread()).count(),
            4
        );
    }
    let after = pool.total_metrics();
    assert_eq!(after.ops_local - before.ops_local, 80);
    assert_eq!(after.ops_foreign, before.ops_foreign);
}

#[test]
fn thread_binder_gives_every_runtime_worker_a_member() {
    let Some(pool) = support::pool(2) else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .on_thread_start(pool.thread_binder())
        .build()
        .unwrap();
    let found = runtime.block_on(async {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                tokio::spawn(async {
                    let ctx = aioctx::current().expect("a bound worker has a member");
                    ctx.nop().await.unwrap();
                    ctx.home_thread()
                })
            })
            .collect();
        let mut found = Vec::new();
        for task in tasks {
            found.push(task.await.unwrap());
        }
        found
    });
    let members: Vec<_> = pool.members().iter().map(Context::home_thread).collect();
    assert!(found.iter().all(|home| members.contains(home)));
}

#[test]
fn a_files_ops_go_to_the_submitting_threads_member() {
    let Some(pool) = support::pool(2) else { return };
    let path = support::TempPath::new("pool-file");
    std::fs::write(&path.0, vec![5u8; 4096]).unwrap();
    let opener = pool.members()[0].clone();
    let file = Arc::new(opener.block_on(File::open(&opener, &path.0)).unwrap());
    let before = pool.metrics();
    // A task on each member reads through the same file.
    for member in pool.members() {
        let file = file.clone();
        member
            .spawn(async move {
                for _ in 0..10 {
                    let (n, _) = file.read_at(Vec::with_capacity(512), 0).await;
                    assert_eq!(n.unwrap(), 512);
                }
            })
            .join()
            .unwrap();
    }
    let after = pool.metrics();
    for (before, after) in before.iter().zip(&after) {
        assert_eq!(
            after.ops_local - before.ops_local,
            10,
            "local on each member"
        );
        assert_eq!(
            after.ops_foreign, before.ops_foreign,
            "no hop between rings"
        );
    }
    // A plain thread's reads go to its sticky member, through the inbox.
    let sticky = pool.thread_member().clone();
    let foreign_before = sticky.metrics().ops_foreign;
    let (n, _) = sticky.block_on(file.read_at(Vec::with_capacity(512), 0));
    assert_eq!(n.unwrap(), 512);
    assert_eq!(sticky.metrics().ops_foreign, foreign_before + 1);
}
