//! What a benchmarked process cost: peak RSS and CPU seconds (shared by the benches).
#![allow(dead_code)] // each bench uses a part of it

use std::process::Child;

/// How a finished child ran: exit status, peak RSS (MB), CPU seconds (user + system).
pub struct Usage {
    pub status: i32,
    pub rss_mb: f64,
    pub cpu_s: f64,
}

/// Waits for a child and reads its resource usage from `wait4` (which `Child::wait` cannot).
pub fn wait_rusage(child: Child) -> Usage {
    let mut status = 0;
    // SAFETY: plain syscall on our own child; both out-pointers are valid locals.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    std::mem::forget(child); // reaped above
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        status: libc::WEXITSTATUS(status),
        rss_mb: usage.ru_maxrss as f64 / 1024.0,
        cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
    }
}

/// SIGTERM, then `wait_rusage`.
#[allow(dead_code)] // not every bench stops its children
pub fn terminate(child: Child) -> Usage {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_rusage(child)
}

/// CPU seconds (user + system) a running process has used so far, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    f.iter().sum::<f64>() / hz
}

/// This process's peak RSS so far (MB), from `/proc/self/status` (`VmHWM`).
#[allow(dead_code)] // not every bench measures itself
pub fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}
