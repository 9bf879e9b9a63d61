//! `Backend::Auto` really falls back: in a child process whose seccomp filter
//! makes `io_uring_setup` fail with `EPERM` (as a container runtime's does),
//! a context built with `Auto` reports the fallback and does real I/O, and
//! one built with `Uring` fails with the setup error.

pub mod support;

use std::process::Command;

use aioctx::fs::OpenOptions;
use aioctx::{Backend, Context};

const CHILD_ENV: &str = "AIOCTX_SECCOMP_CHILD";
const TEST_NAME: &str = "auto_falls_back_when_seccomp_denies_io_uring";

/// Makes `io_uring_setup` fail with `EPERM` for this thread and the threads
/// it spawns afterwards (the home thread).
fn deny_io_uring_setup() {
    // Classic BPF over `struct seccomp_data { int nr; u32 arch; ... }`.
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const RET_ERRNO: u32 = 0x0005_0000; // SECCOMP_RET_ERRNO
    const RET_ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
    let stmt = |code, k| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k, jt, jf| libc::sock_filter {
        code: JEQ_K,
        jt,
        jf,
        k,
    };
    let mut program = [
        stmt(LD_W_ABS, 4),                          // A = arch
        jeq(ARCH, 1, 0),                            // our arch? skip next
        stmt(RET_K, RET_ALLOW),                     // a foreign ABI: leave it
        stmt(LD_W_ABS, 0),                          // A = syscall number
        jeq(libc::SYS_io_uring_setup as u32, 0, 1), // io_uring_setup?
        stmt(RET_K, RET_ERRNO | libc::EPERM as u32),
        stmt(RET_K, RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: prctl with integer arguments; required before an unprivileged
    // seccomp filter.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(
        ret,
        0,
        "PR_SET_NO_NEW_PRIVS: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fprog` points at `program`, both live for the call; the kernel
    // copies the filter.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        )
    };
    assert_eq!(
        ret,
        0,
        "PR_SET_SECCOMP: {}",
        std::io::Error::last_os_error()
    );
}

fn child() {
    deny_io_uring_setup();

    let err = Context::builder()
        .backend(Backend::Uring)
        .build()
        .expect_err("io_uring_setup is denied");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");

    let ctx = Context::builder().backend(Backend::Auto).build().unwrap();
    assert_eq!(ctx.backend(), "fallback");
    assert_eq!(ctx.metrics().backend, "fallback");
    assert!(format!("{ctx:?}").contains("fallback"));

    let path = support::TempPath::new("seccomp");
    ctx.block_on(async {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .open(&ctx, &path.0)
            .await
            .unwrap();
        let (n, _) = file.write_at(b"round trip".to_vec(), 3).await;
        assert_eq!(n.unwrap(), 10);
        file.sync_all().await.unwrap();
        let (n, buf) = file.read_at(Vec::with_capacity(32), 0).await;
        assert_eq!(n.unwrap(), 13);
        assert_eq!(&buf[3..], b"round trip");
        file.close().await.unwrap();
    });
    println!("child: fallback round trip ok");
}

#[test]
fn auto_falls_back_when_seccomp_denies_io_uring() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child();
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("child: fallback round trip ok"),
        "child failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}
