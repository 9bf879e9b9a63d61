//! A pool on the sim backend, built inside a paused current-thread runtime,
//! runs deterministically: the same seed gives the same completion log on
//! every member, run after run.

use std::time::Duration;

use aioctx::fs::OpenOptions;
use aioctx::sim::{Completion, Latency, SimConfig};
use aioctx::{Backend, Context, Pool};

fn run(seed: u64) -> Vec<Vec<Completion>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = Pool::builder()
            .contexts(3)
            .context_builder(Context::builder().backend(Backend::Sim(
                SimConfig::new().seed(seed).latency(Latency::Uniform {
                    min: Duration::from_micros(10),
                    max: Duration::from_millis(3),
                }),
            )))
            .build()
            .unwrap();
        let tasks: Vec<_> = (0..9u64)
            .map(|t| {
                let ctx = pool.members()[(t % 3) as usize].clone();
                tokio::spawn(async move {
                    let file = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .open(&ctx, format!("/f{t}"))
                        .await
                        .unwrap();
                    for i in 0..4u64 {
                        let (n, _) = file.write_at(vec![t as u8; 8], i * 8).await;
                        n.unwrap();
                        file.sync_data().await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        pool.members()
            .iter()
            .map(|ctx| ctx.sim().unwrap().completions())
            .collect()
    })
}

#[test]
fn same_seed_same_logs_on_every_member() {
    let first = run(7);
    assert!(first.iter().all(|log| log.len() == 3 * 9));
    for _ in 0..5 {
        assert_eq!(run(7), first);
    }
    assert_ne!(run(8), first, "another seed, another schedule");
}
