//! `spate tune --apply`: what survives a reboot, written as files (a sysctl file, a udev rule
//! for the data disks, a systemd drop-in for the spate unit and a boot-time unit for the
//! sysfs settings), each written only if its content changes, so running it twice changes
//! nothing; then the running host is brought in line where it can be.

use std::path::Path;
use std::process::Command;

use crate::device::data_device;
use crate::host::Host;
use crate::profile::Profile;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub changed: bool,
}

fn write_if_changed(host: &Host, abs: &str, content: &str) -> Result<Change, String> {
    let p = host.path(abs);
    let same = std::fs::read_to_string(&p).is_ok_and(|old| old == content);
    if !same {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(&p, content).map_err(|e| format!("cannot write {abs}: {e}"))?;
    }
    Ok(Change {
        path: abs.to_string(),
        changed: !same,
    })
}

fn want<'a>(profile: &'a Profile, check: &str, default: &'a str) -> &'a str {
    profile.want(check).map_or(default, |e| e.want.as_str())
}

/// The CPUs this process may run on, as a systemd CPUAffinity list.
fn allowed_cpus() -> String {
    // SAFETY: sched_getaffinity fills the set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return String::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|c| libc::CPU_ISSET(*c, &set))
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Writes the files; on the real host also reloads sysctl and udev. Needs root there.
pub fn apply(host: &Host, profile: &Profile, data_dir: &Path) -> Result<Vec<Change>, String> {
    // SAFETY: geteuid has no preconditions.
    if host.is_real() && unsafe { libc::geteuid() } != 0 {
        return Err("spate tune --apply changes system files: run it as root (sudo)".into());
    }
    let mut changes = Vec::new();
    let sysctl = format!(
        "# Written by spate tune --apply (profile {}).\nfs.aio-max-nr = {}\nvm.swappiness = {}\n",
        profile.name,
        want(profile, "aio_max_nr", "1048576"),
        want(profile, "swappiness", "1"),
    );
    changes.push(write_if_changed(
        host,
        "/etc/sysctl.d/60-spate.conf",
        &sysctl,
    )?);

    let cpus = allowed_cpus();
    let mut dropin =
        String::from("# Written by spate tune --apply.\n[Service]\nLimitMEMLOCK=infinity\n");
    if !cpus.is_empty() {
        dropin.push_str(&format!("CPUAffinity={cpus}\n"));
    }
    changes.push(write_if_changed(
        host,
        "/etc/systemd/system/spate.service.d/60-spate-tune.conf",
        &dropin,
    )?);

    if let Ok(dev) = data_device(host, data_dir) {
        let mut rules = String::from("# Written by spate tune --apply: the data disks of Spate.\n");
        for d in &dev.disks {
            rules.push_str(&format!(
                "ACTION==\"add|change\", KERNEL==\"{d}\", ATTR{{queue/scheduler}}=\"{}\", ATTR{{queue/nomerges}}=\"{}\"\n",
                want(profile, "io_scheduler", "none"),
                want(profile, "nomerges", "2"),
            ));
        }
        changes.push(write_if_changed(
            host,
            "/etc/udev/rules.d/60-spate-io.rules",
            &rules,
        )?);
    }

    let unit = format!(
        "# Written by spate tune --apply: sysfs settings that do not survive a reboot.\n[Unit]\nDescription=Spate host tuning\nBefore=spate.service\n\n[Service]\nType=oneshot\nExecStart=/bin/sh -c 'for g in /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; do [ -w \"$g\" ] && echo {} > \"$g\"; done; [ -w /sys/kernel/mm/transparent_hugepage/enabled ] && echo {} > /sys/kernel/mm/transparent_hugepage/enabled; true'\n\n[Install]\nWantedBy=multi-user.target\n",
        want(profile, "cpu_governor", "performance"),
        want(profile, "transparent_hugepages", "madvise"),
    );
    changes.push(write_if_changed(
        host,
        "/etc/systemd/system/spate-tune.service",
        &unit,
    )?);

    if host.is_real() {
        // Bring the running system in line; each is best effort and says so if it fails.
        let run = |cmd: &str, args: &[&str]| match Command::new(cmd).args(args).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: {cmd} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: cannot run {cmd}: {e}"),
        };
        run("sysctl", &["-p", "/etc/sysctl.d/60-spate.conf"]);
        run("udevadm", &["control", "--reload"]);
        run(
            "udevadm",
            &["trigger", "--subsystem-match=block", "--action=change"],
        );
        run("systemctl", &["daemon-reload"]);
        run("systemctl", &["enable", "--now", "spate-tune.service"]);
    }
    Ok(changes)
}
