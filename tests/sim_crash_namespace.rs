//! The simulator's persistence rules for names and for fsync, one test per
//! rule, each showing what a crash does without the fsync the rule asks for
//! (over many seeds: the outcomes the model allows) and that the fsync
//! prevents it; on the weakest model (the default) and where it differs on
//! the ext4 model. Plus: the crash report names what survived, and the same
//! seed draws the same crash state.

use std::collections::BTreeSet;
use std::future::Future;

use aioctx::fs::{self, Dir, File, OpenOptions};
use aioctx::sim::{FaultAction, FsModel, OpFilter, SimConfig, SimHandle, SimOp};
use aioctx::{Backend, Context};

const SEEDS: u64 = 64;

/// Runs `body` on a fresh simulated context with `config` and `seed`, on a
/// paused runtime of its own.
fn run<T, F: Future<Output = T>>(
    config: SimConfig,
    seed: u64,
    body: impl FnOnce(Context, SimHandle) -> F,
) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(async {
            let ctx = Context::builder()
                .backend(Backend::Sim(config.seed(seed)))
                .build()
                .unwrap();
            let sim = ctx.sim().unwrap();
            body(ctx, sim).await
        })
}

/// The same body over every seed: the set of outcomes.
fn outcomes<T: Ord, F: Future<Output = T>>(
    config: SimConfig,
    body: impl Fn(Context, SimHandle) -> F,
) -> BTreeSet<T> {
    (0..SEEDS)
        .map(|seed| run(config.clone(), seed, &body))
        .collect()
}

async fn create(ctx: &Context, path: &str, data: &[u8]) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(ctx, path)
        .await
        .unwrap();
    file.write_all_at(data.to_vec(), 0).await.0.unwrap();
    file
}

#[test]
fn a_new_name_is_durable_only_after_its_directory_is_fsynced() {
    let created = |sync_dir: bool| {
        move |ctx: Context, sim: SimHandle| async move {
            fs::create_dir(&ctx, "/d").await.unwrap();
            fs::sync_dir(&ctx, "/").await.unwrap();
            let file = create(&ctx, "/d/f", b"data").await;
            file.sync_all().await.unwrap(); // the data, not the name
            if sync_dir {
                fs::sync_dir(&ctx, "/d").await.unwrap();
            }
            sim.crash();
            sim.contents("/d/f")
        }
    };
    let without = outcomes(SimConfig::new(), created(false));
    assert_eq!(
        without,
        BTreeSet::from([None, Some(b"data".to_vec())]),
        "the fsync of the file does not keep its name"
    );
    let with = outcomes(SimConfig::new(), created(true));
    assert_eq!(with, BTreeSet::from([Some(b"data".to_vec())]));
    // ext4 commits the name with the file's fsync.
    let ext4 = outcomes(
        SimConfig::new().fs_model(FsModel::Ext4Ordered),
        created(false),
    );
    assert_eq!(ext4, BTreeSet::from([Some(b"data".to_vec())]));
}

#[test]
fn unsynced_name_changes_survive_in_any_combination_or_a_prefix_on_ext4() {
    let names = |ctx: Context, sim: SimHandle| async move {
        for name in ["/a", "/b", "/c"] {
            drop(create(&ctx, name, b"").await);
        }
        fs::remove_file(&ctx, "/a").await.unwrap();
        sim.crash();
        ["/a", "/b", "/c"].map(|name| sim.contents(name).is_some())
    };
    let weakest = outcomes(SimConfig::new(), names);
    // A later change without an earlier one: c created while b is not.
    assert!(weakest.contains(&[false, false, true]), "{weakest:?}");
    assert!(weakest.len() >= 6, "{weakest:?}");
    let ext4 = outcomes(SimConfig::new().fs_model(FsModel::Ext4Ordered), names);
    // Prefixes of (create a, create b, create c, unlink a) only.
    let prefixes = BTreeSet::from([
        [false, false, false],
        [true, false, false],
        [true, true, false],
        [true, true, true],
        [false, true, true],
    ]);
    assert!(ext4.is_subset(&prefixes) && ext4.len() >= 4, "{ext4:?}");
    // After the directory's fsync, all of them, whatever the seed.
    let synced = outcomes(SimConfig::new(), |ctx, sim| async move {
        for name in ["/a", "/b", "/c"] {
            drop(create(&ctx, name, b"").await);
        }
        fs::remove_file(&ctx, "/a").await.unwrap();
        fs::sync_dir(&ctx, "/").await.unwrap();
        sim.crash();
        ["/a", "/b", "/c"].map(|name| sim.contents(name).is_some())
    });
    assert_eq!(synced, BTreeSet::from([[false, true, true]]));
}

/// Writes a new `/CURRENT` beside the durable old one and renames it over;
/// `fsync_file` and `fsync_dir` say which fsyncs it does.
async fn replace(
    ctx: &Context,
    sim: &SimHandle,
    fsync_file: bool,
    fsync_dir: bool,
) -> Option<Vec<u8>> {
    sim.insert_file("/CURRENT", b"old".to_vec());
    let tmp = create(ctx, "/CURRENT.tmp", b"new").await;
    if fsync_file {
        tmp.sync_all().await.unwrap();
    }
    fs::rename(ctx, "/CURRENT.tmp", "/CURRENT").await.unwrap();
    if fsync_dir {
        fs::sync_dir(ctx, "/").await.unwrap();
    }
    sim.crash();
    sim.contents("/CURRENT")
}

#[test]
fn a_rename_is_atomic_old_or_new_never_neither() {
    let unsynced = outcomes(SimConfig::new(), |ctx, sim| async move {
        replace(&ctx, &sim, true, false).await
    });
    assert_eq!(
        unsynced,
        BTreeSet::from([Some(b"old".to_vec()), Some(b"new".to_vec())])
    );
    let synced = outcomes(SimConfig::new(), |ctx, sim| async move {
        replace(&ctx, &sim, true, true).await
    });
    assert_eq!(synced, BTreeSet::from([Some(b"new".to_vec())]));
}

#[test]
fn data_not_fsynced_before_a_rename_is_lost_while_the_rename_survives() {
    // The directory is fsynced: the rename survives. The file was not:
    // with every unsynced byte lost, the new name is an empty file.
    let unsynced = outcomes(
        SimConfig::new().reorder_unsynced_writes(false),
        |ctx, sim| async move { replace(&ctx, &sim, false, true).await },
    );
    assert_eq!(
        unsynced,
        BTreeSet::from([Some(Vec::new())]),
        "zero-length after the crash"
    );
    // By default each unsynced sector may or may not make it: some seeds
    // show the empty file, others the data.
    let reordered = outcomes(SimConfig::new(), |ctx, sim| async move {
        replace(&ctx, &sim, false, true).await
    });
    assert!(
        reordered.contains(&Some(Vec::new())) && reordered.len() >= 2,
        "{reordered:?}"
    );
    // The fsync before the rename prevents it.
    let synced = outcomes(SimConfig::new(), |ctx, sim| async move {
        replace(&ctx, &sim, true, true).await
    });
    assert_eq!(synced, BTreeSet::from([Some(b"new".to_vec())]));
    // ext4 writes a file renamed over another back first.
    let ext4 = outcomes(
        SimConfig::new().fs_model(FsModel::Ext4Ordered),
        |ctx, sim| async move { replace(&ctx, &sim, false, true).await },
    );
    assert_eq!(ext4, BTreeSet::from([Some(b"new".to_vec())]));
}

#[test]
fn a_removal_may_survive_without_the_rename_before_it() {
    // The old table goes once the manifest naming the new one is in place:
    // without an fsync of the directory between the two, a crash may keep
    // the removal and lose the rename.
    let retire = |fsync_between: bool| {
        move |ctx: Context, sim: SimHandle| async move {
            sim.insert_file("/CURRENT", b"table-1".to_vec());
            sim.insert_file("/table-1", b"rows".to_vec());
            let table = create(&ctx, "/table-2", b"rows").await;
            table.sync_all().await.unwrap();
            let tmp = create(&ctx, "/CURRENT.tmp", b"table-2").await;
            tmp.sync_all().await.unwrap();
            fs::rename(&ctx, "/CURRENT.tmp", "/CURRENT").await.unwrap();
            if fsync_between {
                fs::sync_dir(&ctx, "/").await.unwrap();
            }
            fs::remove_file(&ctx, "/table-1").await.unwrap();
            sim.crash();
            let current = String::from_utf8(sim.contents("/CURRENT").unwrap()).unwrap();
            sim.contents(format!("/{current}")).is_some()
        }
    };
    let unsynced = outcomes(SimConfig::new(), retire(false));
    assert!(
        unsynced.contains(&false),
        "CURRENT names a removed table on some seed"
    );
    let synced = outcomes(SimConfig::new(), retire(true));
    assert_eq!(synced, BTreeSet::from([true]));
    // On ext4 names persist in order: never the removal without the rename.
    let ext4 = outcomes(
        SimConfig::new().fs_model(FsModel::Ext4Ordered),
        retire(false),
    );
    assert_eq!(ext4, BTreeSet::from([true]));
}

#[test]
fn a_rename_between_directories_is_durable_with_either_directorys_fsync() {
    for fsynced in ["/from", "/to"] {
        let kept = outcomes(SimConfig::new(), |ctx, sim| async move {
            sim.insert_file("/from/f", b"f".to_vec());
            sim.insert_file("/to/.keep", Vec::new());
            fs::rename(&ctx, "/from/f", "/to/f").await.unwrap();
            fs::sync_dir(&ctx, fsynced).await.unwrap();
            sim.crash();
            (
                sim.contents("/from/f").is_some(),
                sim.contents("/to/f").is_some(),
            )
        });
        assert_eq!(kept, BTreeSet::from([(false, true)]), "fsync of {fsynced}");
    }
    let unsynced = outcomes(SimConfig::new(), |ctx, sim| async move {
        sim.insert_file("/from/f", b"f".to_vec());
        sim.insert_file("/to/.keep", Vec::new());
        fs::rename(&ctx, "/from/f", "/to/f").await.unwrap();
        sim.crash();
        (
            sim.contents("/from/f").is_some(),
            sim.contents("/to/f").is_some(),
        )
    });
    // One name or the other, never both, never neither.
    assert_eq!(unsynced, BTreeSet::from([(true, false), (false, true)]));
}

#[test]
fn a_failed_fsync_drops_its_data_and_a_retry_reports_success() {
    let fsync_fault = |nth| {
        SimConfig::new().fault(
            OpFilter::op(SimOp::Fsync).path("/log"),
            nth,
            FaultAction::Errno(libc::EIO),
        )
    };
    let sequence = |ctx: Context, sim: SimHandle| async move {
        let log = create(&ctx, "/log", b"first").await;
        fs::sync_dir(&ctx, "/").await.unwrap();
        let first = log.sync_all().await.map_err(|e| e.raw_os_error());
        log.write_all_at(b"+second".to_vec(), 5).await.0.unwrap();
        let failed = log.sync_all().await.map_err(|e| e.raw_os_error());
        let retried = log.sync_all().await.map_err(|e| e.raw_os_error());
        // The page cache still has it: reads see it until the crash.
        let (n, before) = log.read_at(Vec::with_capacity(64), 0).await;
        n.unwrap();
        sim.crash();
        let after = sim.contents("/log").unwrap();
        (first, failed, retried, before, after)
    };
    let faulted = outcomes(fsync_fault(2), sequence);
    assert_eq!(
        faulted,
        BTreeSet::from([(
            Ok(()),
            Err(Some(libc::EIO)),
            Ok(()),
            b"first+second".to_vec(),
            b"first".to_vec(),
        )]),
        "EIO once, then success, and the data it failed to write is gone"
    );
    // Without the fault, the same sequence keeps it.
    let clean = outcomes(SimConfig::new(), sequence);
    assert_eq!(
        clean,
        BTreeSet::from([(
            Ok(()),
            Ok(()),
            Ok(()),
            b"first+second".to_vec(),
            b"first+second".to_vec()
        )])
    );
    // The error reaches every fd open on the file when it happened, once
    // each: the kernel's errseq.
    let other_fd = run(fsync_fault(1), 0, |ctx, _sim| async move {
        let a = create(&ctx, "/log", b"x").await;
        let b = File::open(&ctx, "/log").await.unwrap();
        let via_a = a.sync_all().await.map_err(|e| e.raw_os_error());
        let via_b = b.sync_all().await.map_err(|e| e.raw_os_error());
        let again_b = b.sync_all().await.map_err(|e| e.raw_os_error());
        let later = File::open(&ctx, "/log").await.unwrap();
        let via_later = later.sync_all().await.map_err(|e| e.raw_os_error());
        (via_a, via_b, again_b, via_later)
    });
    assert_eq!(
        other_fd,
        (Err(Some(libc::EIO)), Err(Some(libc::EIO)), Ok(()), Ok(()))
    );
}

#[test]
fn the_crash_report_says_what_survived_and_replays_the_same() {
    let state = |seed| {
        run(
            SimConfig::new().reorder_unsynced_writes(true),
            seed,
            |ctx, sim| async move {
                let dir = {
                    fs::create_dir(&ctx, "/db").await.unwrap();
                    fs::sync_dir(&ctx, "/").await.unwrap();
                    Dir::open(&ctx, "/db").await.unwrap()
                };
                let log = create(&ctx, "/db/LOG", &[7; 2048]).await;
                dir.sync_all().await.unwrap();
                log.write_all_at(vec![8; 1024], 2048).await.0.unwrap();
                drop(create(&ctx, "/db/tmp", b"t").await);
                fs::rename(&ctx, "/db/tmp", "/db/CURRENT").await.unwrap();
                sim.crash();
                sim.crash_reports()
            },
        )
    };
    let reports = state(3);
    assert_eq!(
        reports,
        state(3),
        "the same seed draws the same crash state"
    );
    let report = &reports[0];
    let printed = report.to_string();
    let db = &report.directories[0];
    assert_eq!(db.path, std::path::Path::new("/db"), "{printed}");
    let changes: Vec<&str> = db.changes.iter().map(|c| c.what.as_str()).collect();
    assert_eq!(
        changes,
        ["create /db/tmp", "rename /db/tmp -> /db/CURRENT"],
        "{printed}"
    );
    let log = report
        .files
        .iter()
        .find(|f| f.path.ends_with("LOG"))
        .expect(&printed);
    assert_eq!(log.sizes, [0, 2048, 3072], "never fsynced: {printed}");
    let unsynced: u64 = log
        .kept
        .iter()
        .chain(&log.lost)
        .map(|r| r.end - r.start)
        .sum();
    assert_eq!(
        unsynced,
        2048 + 1024,
        "every sector written since the fsync: {printed}"
    );
    assert!(printed.contains("directory /db") && printed.contains("rename /db/tmp -> /db/CURRENT"));
    // Some other seed draws differently.
    assert!(
        (0..16).any(|seed| state(seed) != reports),
        "the seed decides"
    );
}
