//! A short scheduler slice for the calling thread: what Linux offers a thread whose every
//! wake-up is someone waiting.
//!
//! Linux's fair scheduler (EEVDF, since 6.6) gives each runnable thread a virtual deadline one
//! slice after it becomes eligible, and runs the earliest. Since 6.12 a thread may ask for its
//! own slice (`sched_attr::sched_runtime` with a fair policy, clamped to 0.1–100 ms; the
//! default is a few milliseconds). A thread that asks for a short one gets an early deadline
//! each time it wakes, so it preempts whatever runs (the kernel's `PREEMPT_SHORT`), and is
//! preempted in turn once it has used its slice: its share of the CPU is unchanged, only
//! *when* it runs moves. On a machine whose cores are all busy, that is the difference between
//! answering a request in a tenth of a millisecond and waiting out another thread's slice.
//!
//! Kernels before 6.12 ignore the request; other systems have no such call
//! ([`std::io::ErrorKind::Unsupported`]).

use std::io;
use std::time::Duration;

/// The shortest slice Linux grants (shorter requests are raised to it).
pub const SHORTEST: Duration = Duration::from_micros(100);

/// Asks for `slice` as the calling thread's time slice, keeping its policy, nice value and
/// priority. Threads it starts later get the default slice (`SCHED_FLAG_RESET_ON_FORK`):
/// a blocking pool spawned from a server thread is not a latency-sensitive thread.
#[cfg(target_os = "linux")]
pub fn request(slice: Duration) -> io::Result<()> {
    let mut attr = sys::get()?;
    attr.sched_runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    // Only the flag asked for: any other the kernel reported (utilisation clamps) would need
    // fields beyond the first version of the struct.
    attr.sched_flags = sys::RESET_ON_FORK;
    sys::set(&attr)
}

#[cfg(not(target_os = "linux"))]
pub fn request(_slice: Duration) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "only Linux lets a thread ask for its time slice"))
}

/// `sched_getattr(2)` and `sched_setattr(2)` on the calling thread: libc declares them, glibc
/// does not wrap them.
#[cfg(target_os = "linux")]
mod sys {
    use std::io;

    pub const RESET_ON_FORK: u64 = libc::SCHED_FLAG_RESET_ON_FORK as u64;

    /// The calling thread.
    const THIS_THREAD: libc::pid_t = 0;

    fn size() -> u32 {
        // 48 bytes, the first version of the struct, which every kernel with the call reads.
        std::mem::size_of::<libc::sched_attr>() as u32
    }

    pub fn get() -> io::Result<libc::sched_attr> {
        let mut attr = libc::sched_attr {
            size: size(),
            sched_policy: 0,
            sched_flags: 0,
            sched_nice: 0,
            sched_priority: 0,
            sched_runtime: 0,
            sched_deadline: 0,
            sched_period: 0,
        };
        // SAFETY: the kernel writes at most `size()` bytes into `attr`, a whole `sched_attr`
        // that outlives the call; flags must be 0.
        #[allow(unsafe_code)]
        let done = unsafe { libc::syscall(libc::SYS_sched_getattr, THIS_THREAD, &mut attr as *mut libc::sched_attr, size(), 0u32) };
        if done == 0 {
            Ok(attr)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn set(attr: &libc::sched_attr) -> io::Result<()> {
        // SAFETY: the kernel reads `attr.size` bytes from `attr`, a whole `sched_attr` that
        // outlives the call; flags must be 0.
        #[allow(unsafe_code)]
        let done = unsafe { libc::syscall(libc::SYS_sched_setattr, THIS_THREAD, attr as *const libc::sched_attr, 0u32) };
        if done == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_gets_the_slice_it_asked_for_and_keeps_its_nice_value_and_policy() {
        std::thread::spawn(|| {
            // A nice value of its own, which the request must not reset: one above the
            // runner's, which needs no privilege.
            let mut attr = sys::get().unwrap();
            attr.sched_nice = (attr.sched_nice + 1).min(19);
            attr.sched_policy = libc::SCHED_BATCH as u32;
            sys::set(&attr).unwrap();
            let before = sys::get().unwrap();
            request(Duration::from_micros(300)).unwrap();
            let after = sys::get().unwrap();
            assert_eq!((after.sched_nice, after.sched_policy), (before.sched_nice, libc::SCHED_BATCH as u32));
            assert_eq!(after.sched_flags & sys::RESET_ON_FORK, sys::RESET_ON_FORK);
            // Kernels before 6.12 keep no slice for fair threads and report 0.
            let kernel: Vec<u32> = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().split(['.', '-']).take(2).map(|p| p.parse().unwrap_or(0)).collect();
            if kernel >= vec![6, 12] {
                assert_eq!(after.sched_runtime, 300_000);
            }
        })
        .join()
        .unwrap();
    }
}
