//! From a data directory to the block devices under it: the mount that holds it (from
//! `/proc/self/mountinfo`: device numbers and file system type), then `/sys/dev/block/M:m`,
//! up from a partition to its disk, and down through device-mapper to the disks beneath.

use std::path::Path;

use crate::host::Host;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDevice {
    pub mount_point: String,
    pub fs_type: String,
    pub major_minor: String,
    /// Whole disks (e.g. `nvme0n1`), after partitions and device-mapper are resolved.
    pub disks: Vec<String>,
}

/// Unescapes mountinfo's octal escapes (`\040` is a space).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// The mount holding `dir` (an absolute, canonical path): (mount point, M:m, fs type).
pub fn mount_of(host: &Host, dir: &Path) -> Result<(String, String, String), String> {
    let info = host.read("/proc/self/mountinfo")?;
    let dir = dir.to_string_lossy();
    let mut best: Option<(String, String, String)> = None;
    for line in info.lines() {
        // id parent M:m root mount-point options [optional...] - fstype source superopts
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.len() < 5 || dash + 1 >= f.len() {
            continue;
        }
        let mp = unescape(f[4]);
        let inside =
            dir == mp || mp == "/" || dir.starts_with(&format!("{}/", mp.trim_end_matches('/')));
        if inside && best.as_ref().is_none_or(|b| mp.len() >= b.0.len()) {
            best = Some((mp, f[2].to_string(), f[dash + 1].to_string()));
        }
    }
    best.ok_or_else(|| format!("no mount in /proc/self/mountinfo holds {dir}"))
}

/// Whole disks behind the block device `name` (a disk, partition or dm device).
fn disks_of(host: &Host, name: &str, depth: usize) -> Vec<String> {
    if depth > 8 {
        return Vec::new();
    }
    let slaves = host.list(&format!("/sys/block/{name}/slaves"));
    if !slaves.is_empty() {
        let mut out: Vec<String> = slaves
            .iter()
            .flat_map(|s| disks_of(host, s, depth + 1))
            .collect();
        out.sort();
        out.dedup();
        return out;
    }
    if host.exists(&format!("/sys/block/{name}")) {
        return vec![name.to_string()];
    }
    // A partition: /sys/class/block/<part> lives inside its disk's directory.
    let class = host.path(&format!("/sys/class/block/{name}"));
    if let Ok(real) = std::fs::canonicalize(&class) {
        if real.join("partition").exists() {
            if let Some(parent) = real.parent().and_then(|p| p.file_name()) {
                return vec![parent.to_string_lossy().into_owned()];
            }
        }
    }
    Vec::new()
}

/// The data directory's mount, file system and disks.
pub fn data_device(host: &Host, data_dir: &Path) -> Result<DataDevice, String> {
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let (mount_point, major_minor, fs_type) = mount_of(host, &dir)?;
    let link = host.path(&format!("/sys/dev/block/{major_minor}"));
    let name = std::fs::canonicalize(&link)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| format!("no block device {major_minor} in /sys/dev/block (a network or virtual file system?)"))?;
    let disks = disks_of(host, &name, 0);
    if disks.is_empty() {
        return Err(format!("cannot find the disk under block device {name}"));
    }
    Ok(DataDevice {
        mount_point,
        fs_type,
        major_minor,
        disks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_spaces() {
        assert_eq!(unescape("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
