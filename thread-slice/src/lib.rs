//! A short scheduler slice for the calling thread: what Linux offers a thread whose every
//! wake-up is someone waiting.
//!
//! Linux's fair scheduler (EEVDF, since 6.6) gives each runnable thread a virtual deadline one
//! slice after it becomes eligible, and runs the earliest. Since 6.12 a thread may ask for its
//! own slice (`sched_attr::sched_runtime` with `SCHED_OTHER`, clamped to 0.1–100 ms; the default
//! is a few milliseconds). A thread that asks for a short one gets an early deadline each time
//! it wakes, so it preempts whatever runs (the kernel's `PREEMPT_SHORT`), and is preempted in
//! turn once it has used its slice: its share of the CPU is unchanged, only *when* it runs
//! moves. On a machine whose cores are all busy, that is the difference between answering a
//! request in a tenth of a millisecond and waiting out another thread's slice.
//!
//! Older kernels ignore the request; other systems have no such call
//! ([`std::io::ErrorKind::Unsupported`]).

use std::io;
use std::time::Duration;

/// The shortest slice Linux grants (shorter requests are raised to it).
pub const SHORTEST: Duration = Duration::from_micros(100);

/// Asks for `slice` as the calling thread's time slice, keeping its policy (`SCHED_OTHER`) and
/// its nice value.
#[cfg(target_os = "linux")]
pub fn request(slice: Duration) -> io::Result<()> {
    let nice = nice()?;
    let attr = libc::sched_attr {
        size: u32::try_from(std::mem::size_of::<libc::sched_attr>()).map_err(io::Error::other)?,
        sched_policy: u32::try_from(libc::SCHED_OTHER).map_err(io::Error::other)?,
        sched_flags: 0,
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: `sched_setattr(2)` reads `attr.size` bytes from the pointer, which is a whole
    // `sched_attr` living across the call; pid 0 is the calling thread; flags must be 0.
    #[allow(unsafe_code)]
    let done = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const libc::sched_attr, 0) };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// This thread's nice value, which `sched_setattr` would otherwise reset.
#[cfg(target_os = "linux")]
fn nice() -> io::Result<i32> {
    // `/proc/thread-self/stat`'s 19th field; the 2nd, the command, is in parentheses and may
    // hold spaces, so count from the last `)`.
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after
        .split_whitespace()
        .nth(16)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no nice value in /proc/thread-self/stat"))
}

#[cfg(not(target_os = "linux"))]
pub fn request(_slice: Duration) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "only Linux lets a thread ask for its time slice"))
}

#[cfg(all(test, target_os = "linux"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The slice the kernel holds for the calling thread, read back with `sched_getattr(2)`.
    #[allow(unsafe_code)]
    fn slice_now() -> (u64, i32) {
        // SAFETY: all-zero is a valid `sched_attr` (integers only).
        let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
        let size = u32::try_from(std::mem::size_of::<libc::sched_attr>()).unwrap();
        // SAFETY: the kernel writes at most `size` bytes into `attr`, which outlives the call.
        let done = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut libc::sched_attr, size, 0) };
        assert_eq!(done, 0, "{}", io::Error::last_os_error());
        (attr.sched_runtime, attr.sched_nice)
    }

    #[test]
    fn a_thread_gets_the_slice_it_asked_for_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            // A nice value of its own, which the request must not reset to 0.
            // SAFETY: plain integer arguments; `gettid` names this thread.
            #[allow(unsafe_code)]
            let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 3) };
            assert_eq!(niced, 0, "{}", io::Error::last_os_error());
            let before = slice_now();
            assert_eq!(before.1, 3);
            request(Duration::from_micros(300)).unwrap();
            let (slice, nice) = slice_now();
            // Kernels before 6.12 keep their own slice and report it.
            let kernel: Vec<u32> = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().split(['.', '-']).take(2).map(|p| p.parse().unwrap_or(0)).collect();
            if kernel >= vec![6, 12] {
                assert_eq!(slice, 300_000);
            }
            assert_eq!(nice, before.1);
        })
        .join()
        .unwrap();
    }
}
