//! Pins the calling thread to one CPU, as the broker pins its shards.

/// Pins to `cpu` modulo the CPUs this process may use; returns the CPU, or None if it failed.
pub fn pin_to(cpu: usize) -> Option<usize> {
    // SAFETY: the sets are plain bitmaps the kernel fills and reads.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return None;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|c| libc::CPU_ISSET(*c, &allowed))
            .collect();
        let target = *cpus.get(cpu % cpus.len().max(1))?;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(target, &mut set);
        (libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0)
            .then_some(target)
    }
}
