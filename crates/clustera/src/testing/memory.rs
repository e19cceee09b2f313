//! A process's resident memory, as Linux reports it in `/proc/PID/status`: what the memory
//! benchmarks and the memory-budget tests measure a kernel process by.

/// Resident memory of one process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessMemory {
    /// Resident now (`VmRSS`).
    pub rss_kb: u64,
    /// The highest resident size since the process started (`VmHWM`).
    pub peak_kb: u64,
}

/// Reads `pid`'s resident memory. Fails if the process is gone or the system is not Linux.
pub fn process_memory(pid: u32) -> std::io::Result<ProcessMemory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no {name} in /proc/{pid}/status")))
    };
    Ok(ProcessMemory {
        rss_kb: field("VmRSS:")?,
        peak_kb: field("VmHWM:")?,
    })
}
