//! The checks: each reads the host, compares with the profile, and says pass, fail or
//! unknown (and why), with the command that would fix a failure.

use std::path::Path;

use crate::device::{data_device, DataDevice};
use crate::host::Host;
use crate::probe;
use crate::profile::Profile;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    /// The host could not tell (a file missing in a container or VM, say); the reason.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    pub have: String,
    pub want: String,
    pub why: String,
    pub status: Status,
    /// What would fix it (for a failure).
    pub fix: Option<String>,
}

/// What the checks need to know beyond the host.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub data_dir: &'a Path,
    pub shards: usize,
    /// Skip the slower checks (the I/O probe) for `spate serve`'s start.
    pub quick: bool,
}

struct Outcome {
    have: String,
    status: Status,
    fix: Option<String>,
}

fn unknown(reason: String) -> Outcome {
    Outcome {
        have: "unknown".into(),
        status: Status::Unknown(reason),
        fix: None,
    }
}

fn verdict(ok: bool, have: String, fix: impl FnOnce() -> String) -> Outcome {
    Outcome {
        status: if ok { Status::Pass } else { Status::Fail },
        fix: (!ok).then(fix),
        have,
    }
}

/// The value shown in brackets in a sysfs choice list ("always [madvise] never").
fn selected(list: &str) -> Option<String> {
    let s = list.find('[')?;
    let e = list[s..].find(']')? + s;
    Some(list[s + 1..e].to_string())
}

fn cpu_governor(host: &Host, want: &str) -> Outcome {
    let cpus: Vec<String> = host
        .list("/sys/devices/system/cpu")
        .into_iter()
        .filter(|c| {
            c.strip_prefix("cpu")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    let mut govs = Vec::new();
    for c in &cpus {
        match host.read(&format!(
            "/sys/devices/system/cpu/{c}/cpufreq/scaling_governor"
        )) {
            Ok(g) => govs.push(g),
            Err(e) => return unknown(format!("{e} (no cpufreq: a VM or a fixed-frequency CPU)")),
        }
    }
    if govs.is_empty() {
        return unknown("no CPUs listed in /sys/devices/system/cpu".into());
    }
    let mut distinct = govs.clone();
    distinct.sort();
    distinct.dedup();
    verdict(distinct == [want], distinct.join(","), || {
        format!("echo {want} | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor (spate tune --apply makes it last)")
    })
}

fn smt(host: &Host, want: &str) -> Outcome {
    match host.read("/sys/devices/system/cpu/smt/control") {
        Err(e) => unknown(e),
        Ok(have) => {
            let ok = match want {
                "any" => true,
                "off" => matches!(
                    have.as_str(),
                    "off" | "forceoff" | "notsupported" | "notimplemented"
                ),
                other => have == other,
            };
            verdict(ok, have, || {
                format!("echo {want} | sudo tee /sys/devices/system/cpu/smt/control, or nosmt on the kernel command line")
            })
        }
    }
}

/// IRQ numbers of a device: its `msi_irqs` directory, found from `dev_dir` upward.
fn irqs_under(host: &Host, dev_dir: &str) -> Vec<String> {
    let Ok(mut p) = std::fs::canonicalize(host.path(dev_dir)) else {
        return Vec::new();
    };
    for _ in 0..4 {
        let msi = p.join("msi_irqs");
        if let Ok(d) = std::fs::read_dir(&msi) {
            let mut v: Vec<String> = d
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort_by_key(|s| s.parse::<u64>().unwrap_or(0));
            return v;
        }
        if !p.pop() {
            break;
        }
    }
    Vec::new()
}

/// The interface of the default route.
fn default_nic(host: &Host) -> Option<String> {
    let routes = host.read("/proc/net/route").ok()?;
    routes
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 1 && f[1] == "00000000")
        .map(|f| f[0].to_string())
}

fn irq_affinity(host: &Host, dev: &Result<DataDevice, String>) -> Outcome {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    if let Ok(d) = dev {
        for disk in &d.disks {
            groups.push((
                disk.clone(),
                irqs_under(host, &format!("/sys/block/{disk}/device")),
            ));
        }
    }
    if let Some(nic) = default_nic(host) {
        groups.push((
            nic.clone(),
            irqs_under(host, &format!("/sys/class/net/{nic}/device")),
        ));
    }
    let groups: Vec<(String, Vec<String>)> = groups
        .into_iter()
        .filter(|(_, irqs)| !irqs.is_empty())
        .collect();
    if groups.is_empty() {
        return unknown("no MSI interrupts found for the data disk or the default-route NIC (virtual devices, or not visible here)".into());
    }
    let mut have = Vec::new();
    let mut bad = Vec::new();
    for (name, irqs) in &groups {
        let mut cpus = std::collections::BTreeSet::new();
        for irq in irqs {
            match host.read(&format!("/proc/irq/{irq}/smp_affinity_list")) {
                Ok(a) => {
                    cpus.insert(a);
                }
                Err(e) => return unknown(e),
            }
        }
        // Spread: several queues are not all pinned to the same single CPU set.
        let spread = irqs.len() < 2 || cpus.len() > 1;
        have.push(format!(
            "{name}: {} irqs on {}",
            irqs.len(),
            cpus.into_iter().collect::<Vec<_>>().join(" | ")
        ));
        if !spread {
            bad.push(name.clone());
        }
    }
    verdict(bad.is_empty(), have.join("; "), || {
        format!("spread the queue interrupts of {} over the cores: run irqbalance, or write one CPU per queue to /proc/irq/N/smp_affinity_list", bad.join(", "))
    })
}

fn disk_queue(
    host: &Host,
    dev: &Result<DataDevice, String>,
    file: &str,
    want: &str,
    choice: bool,
) -> Outcome {
    let d = match dev {
        Ok(d) => d,
        Err(e) => return unknown(e.clone()),
    };
    let mut have = Vec::new();
    let mut ok = true;
    for disk in &d.disks {
        match host.read(&format!("/sys/block/{disk}/queue/{file}")) {
            Ok(v) => {
                let v = if choice { selected(&v).unwrap_or(v) } else { v };
                ok &= v == want;
                have.push(format!("{disk}={v}"));
            }
            Err(e) => return unknown(e),
        }
    }
    let disks = d.disks.join(" ");
    verdict(ok, have.join(" "), || {
        format!("for d in {disks}; do echo {want} | sudo tee /sys/block/$d/queue/{file}; done (spate tune --apply writes a udev rule)")
    })
}

/// A numeric sysctl that must be at least (`min`) or at most (`!min`) the profile's value.
fn bounded(host: &Host, abs: &str, want: &str, sysctl: &str, min: bool) -> Outcome {
    let Ok(w) = want.parse::<u64>() else {
        return unknown(format!("profile value {want:?} is not a number"));
    };
    match host.read(abs) {
        Err(e) => unknown(e),
        Ok(v) => match v.parse::<u64>() {
            Ok(n) => verdict(if min { n >= w } else { n <= w }, v, || {
                format!("sudo sysctl -w {sysctl}={w} (spate tune --apply writes /etc/sysctl.d/60-spate.conf)")
            }),
            Err(_) => unknown(format!("{abs} holds {v:?}, not a number")),
        },
    }
}

/// Bytes of locked memory the shards' io_uring rings want: 3 rings x 10 MiB per shard.
pub fn memlock_needed(shards: usize) -> u64 {
    shards.max(1) as u64 * 3 * 10 * 1024 * 1024
}

fn memlock(host: &Host, shards: usize) -> Outcome {
    let limits = match host.read("/proc/self/limits") {
        Ok(l) => l,
        Err(e) => return unknown(e),
    };
    let Some(line) = limits.lines().find(|l| l.starts_with("Max locked memory")) else {
        return unknown("no 'Max locked memory' line in /proc/self/limits".into());
    };
    let soft = line.split_whitespace().nth(3).unwrap_or("");
    let need = memlock_needed(shards);
    let (ok, have) = match soft {
        "unlimited" => (true, "unlimited".to_string()),
        v => match v.parse::<u64>() {
            Ok(n) => (n >= need, format!("{n} bytes")),
            Err(_) => return unknown(format!("unreadable limit {v:?}")),
        },
    };
    Outcome {
        have,
        status: if ok { Status::Pass } else { Status::Fail },
        fix: (!ok).then(|| {
            format!("LimitMEMLOCK=infinity in the spate unit (spate tune --apply writes the drop-in), or ulimit -l unlimited; {shards} shard(s) want {need} bytes")
        }),
    }
}

fn choice(host: &Host, abs: &str, want: &str, fix: String) -> Outcome {
    match host.read(abs) {
        Err(e) => unknown(e),
        Ok(v) => {
            let have = selected(&v).unwrap_or(v);
            verdict(have == want, have, || fix)
        }
    }
}

fn filesystem(dev: &Result<DataDevice, String>, want: &str) -> Outcome {
    match dev {
        Err(e) => unknown(e.clone()),
        Ok(d) => {
            let ok = want.split(',').any(|w| w.trim() == d.fs_type);
            verdict(ok, format!("{} on {}", d.fs_type, d.mount_point), || {
                format!("put the data directory on {want} (mkfs.xfs on the NVMe device)")
            })
        }
    }
}

fn direct_io(data_dir: &Path) -> Outcome {
    if !data_dir.is_dir() {
        return unknown(format!("{} does not exist yet", data_dir.display()));
    }
    let r = probe::direct_io(data_dir).and_then(|()| probe::io_uring());
    match r {
        Ok(()) => verdict(true, "works".into(), String::new),
        Err(e) => Outcome {
            have: e,
            status: Status::Fail,
            fix: Some("use a local XFS or ext4 file system for the data directory (not tmpfs, overlayfs or NFS), and allow io_uring".into()),
        },
    }
}

/// Runs every check of `profile`.
pub fn run_checks(host: &Host, profile: &Profile, ctx: &Context<'_>) -> Vec<CheckResult> {
    let dev = data_device(host, ctx.data_dir);
    let mut out = Vec::new();
    for (name, expect) in &profile.checks {
        let want = expect.want.as_str();
        let o = match name.as_str() {
            "cpu_governor" => cpu_governor(host, want),
            "smt" => smt(host, want),
            "irq_affinity" => irq_affinity(host, &dev),
            "io_scheduler" => disk_queue(host, &dev, "scheduler", want, true),
            "nomerges" => disk_queue(host, &dev, "nomerges", want, false),
            "aio_max_nr" => bounded(host, "/proc/sys/fs/aio-max-nr", want, "fs.aio-max-nr", true),
            "memlock" => memlock(host, ctx.shards),
            "transparent_hugepages" => choice(
                host,
                "/sys/kernel/mm/transparent_hugepage/enabled",
                want,
                format!("echo {want} | sudo tee /sys/kernel/mm/transparent_hugepage/enabled (spate tune --apply makes it last)"),
            ),
            "swappiness" => bounded(host, "/proc/sys/vm/swappiness", want, "vm.swappiness", false),
            "clocksource" => choice(
                host,
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
                want,
                format!("echo {want} | sudo tee /sys/devices/system/clocksource/clocksource0/current_clocksource, or clocksource={want} on the kernel command line"),
            ),
            "filesystem" => filesystem(&dev, want),
            "direct_io" if ctx.quick => continue,
            "direct_io" => direct_io(ctx.data_dir),
            other => unknown(format!("no such check {other}")),
        };
        let want_shown = match name.as_str() {
            "memlock" => format!("{} bytes", memlock_needed(ctx.shards)),
            "aio_max_nr" => format!(">= {want}"),
            "swappiness" => format!("<= {want}"),
            _ => want.to_string(),
        };
        out.push(CheckResult {
            name: name.clone(),
            have: o.have,
            want: want_shown,
            why: expect.why.clone(),
            status: o.status,
            fix: o.fix,
        });
    }
    out
}

/// The table `spate tune --check` prints.
pub fn table(results: &[CheckResult]) -> String {
    let mut s = String::from("| check | status | have | want | fix |\n|---|---|---|---|---|\n");
    for r in results {
        let status = match &r.status {
            Status::Pass => "pass".to_string(),
            Status::Fail => "FAIL".to_string(),
            Status::Unknown(why) => format!("unknown: {why}"),
        };
        let cell = |t: &str| t.replace('|', "\\|");
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.name,
            cell(&status),
            cell(&r.have),
            cell(&r.want),
            cell(r.fix.as_deref().unwrap_or(""))
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_selected_choice() {
        assert_eq!(
            selected("always [madvise] never").as_deref(),
            Some("madvise")
        );
        assert_eq!(selected("[none] mq-deadline").as_deref(), Some("none"));
        assert_eq!(selected("none"), None);
    }
}
