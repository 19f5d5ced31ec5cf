//! What the tools read about their own process: memory (`/proc/self/status`), open
//! descriptors, write syscalls, CPU time, and the descriptor limit; and what they do to
//! it (trim the heap, reset the peak RSS, pin a thread to a CPU).

use std::time::Duration;

/// Descriptors this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// A `VmXXX:   123 kB` field of /proc/self/status (`VmRSS`, `VmHWM`…).
pub fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Write syscalls of this process so far (`syscw` in /proc/self/io: write(2), writev(2)…).
pub fn syscw() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())
}

fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusive timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of the whole process, in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID).as_nanos() as u64
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    cpu_time(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// The soft and hard descriptor limits (`RLIMIT_NOFILE`), if they can be read.
pub fn nofile_limits() -> Option<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    Some((r.rlim_cur, r.rlim_max))
}

fn set_soft_nofile(soft: u64, hard: u64) -> std::io::Result<()> {
    let r = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft descriptor limit to `want` if the hard limit allows; answers the
/// limit in force, or an explanation (ending with `advice` when the hard limit is too
/// low).
pub fn raise_nofile(want: u64, advice: &str) -> Result<u64, String> {
    let (soft, hard) = nofile_limits().ok_or("getrlimit(RLIMIT_NOFILE) failed")?;
    if soft >= want {
        return Ok(soft);
    }
    if hard < want {
        return Err(format!(
            "this run needs {want} descriptors but the hard limit (RLIMIT_NOFILE) is {hard}: \
             {advice}"
        ));
    }
    set_soft_nofile(want, hard)
        .map_err(|e| format!("setrlimit(RLIMIT_NOFILE, {want}) failed: {e}"))?;
    Ok(want)
}

/// Raises the soft descriptor limit towards `want`, as far as the hard limit allows;
/// answers the limit in force.
pub fn raise_nofile_towards(want: u64) -> u64 {
    let (soft, hard) = nofile_limits().unwrap_or((0, 0));
    let new = want.min(hard);
    if new > soft && set_soft_nofile(new, hard).is_err() {
        return soft;
    }
    new.max(soft)
}

/// Hands the heap's free memory back to the system, so that RSS after a run shows what
/// is still in use rather than what the allocator keeps; answers whether it could
/// (glibc only).
pub fn trim_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory of glibc's own heap.
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Resets the peak RSS (`VmHWM`) to the current RSS, so that a part of a run reports its
/// own peak; answers whether the kernel allowed it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Set (to anything) in a benchmark's environment: threads are not pinned.
pub const NO_PIN_ENV: &str = "SOCKACTOR_BENCH_NO_PIN";

/// Pins the calling thread to one CPU (when the process may use more than one): the
/// sender's runtime thread to the first allowed CPU, the receiver or echo thread to the
/// second, so that a run cannot drift between "both on one CPU" and "one each" regimes.
/// `bench --no-pin` (the environment variable [`NO_PIN_ENV`]) turns it off.
pub fn pin_to_cpu(cpu: usize) {
    if std::env::var_os(NO_PIN_ENV).is_some()
        || std::thread::available_parallelism().map_or(1, |n| n.get()) < 2
    {
        return;
    }
    // The `cpu`-th CPU this process may run on.
    #[cfg(target_os = "linux")]
    unsafe {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size, &mut allowed) != 0 {
            return;
        }
        let Some(target) = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &allowed))
            .nth(cpu)
        else {
            return;
        };
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(target, &mut set);
        libc::sched_setaffinity(0, size, &set);
    }
}
