//! Process-level primitives for background work: leaving the caller's
//! session, lowering this process's priority and scheduling policy, and
//! starting a child that is not waited for and inherits nothing but its
//! stdio. The policy (who runs in the background, and when) belongs to
//! the callers.

use std::fs::File;
use std::io;
use std::process::{Command, Stdio};

/// Makes this process the leader of a new session, detached from the
/// caller's terminal and process group: signals sent to the caller's session
/// (a shutdown) are no longer ours. Fails harmlessly when already a leader.
pub fn detach_session() {
    let _ = rustix::process::setsid();
}

/// Lowers this process's priority by `by` nice steps, for itself and the
/// threads it starts from here on, so that foreground work goes first when
/// they compete for a CPU. Needs no privilege.
pub fn lower_priority(by: i32) {
    let niceness = rustix::process::nice(by).unwrap_or(by);
    // With autogroup scheduling (Linux's default when the kernel has it),
    // the nice value above only ranks threads inside their session's
    // group, and a process that left its session (`detach_session`) has a
    // group of its own: the group's nice is what ranks it against the
    // caller's session, so it gets the same value. Without autogroup the
    // file is absent or ignored.
    let _ = std::fs::write("/proc/self/autogroup", niceness.to_string());
}

/// SCHED_BATCH for the calling thread and those it starts: the scheduler
/// takes them for CPU-bound work and lets a waking task preempt them
/// sooner. Needs no privilege.
#[allow(unsafe_code)]
pub fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread with a valid parameter.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
}

/// The idle I/O class (`ionice -c 3`) for this process and the threads it
/// starts from here on: its disk reads are served only when no other
/// process wants the disk. Needs no privilege; harmless where the I/O
/// scheduler ignores classes.
#[allow(unsafe_code)]
pub fn idle_io() {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    // SAFETY: plain syscall on this process with valid arguments.
    let _ = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
}

/// Starts `cmd` without waiting for it: stdin and stdout on /dev/null,
/// stderr to `stderr`, and no other descriptor of this process inherited.
/// It outlives this process; init (or the nearest subreaper) reaps it.
pub fn spawn_detached(mut cmd: Command, stderr: File) -> io::Result<()> {
    close_inherited_on_exec();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()?;
    Ok(())
}

/// Marks every descriptor above stderr close-on-exec, so a child does not
/// keep open what this process's own parent handed down to it (for
/// restore_command: WAL and relation files, pipes of PostgreSQL's startup
/// process).
#[allow(unsafe_code)]
fn close_inherited_on_exec() {
    let Ok(rd) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: `fd` was listed as open in this process a moment ago; the
        // borrow lives only for this fcntl. If it was closed meanwhile the
        // call fails with EBADF; if the number was reused, the new
        // descriptor becomes close-on-exec, which is harmless here (this
        // process opens its own files close-on-exec anyway, and gives its
        // children their stdio by dup2).
        let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if let Ok(flags) = rustix::io::fcntl_getfd(bfd) {
            let _ = rustix::io::fcntl_setfd(bfd, flags | rustix::io::FdFlags::CLOEXEC);
        }
    }
}
