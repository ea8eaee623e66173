//! Every check against a fake /proc and /sys tree: passing, failing, and unknown when the
//! files are missing; the data disk found through a partition and through device-mapper;
//! `--apply` writing its files once; and the real probe on this machine.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use spate_tuning::checks::{run_checks, Context};
use spate_tuning::{Host, Profile, Status};

const PCI_DISK: &str = "sys/devices/pci0000:00/0000:00:01.0";
const PCI_NIC: &str = "sys/devices/pci0000:00/0000:00:03.0";

fn put(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn link(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, p).unwrap();
}

struct Fake {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
}

/// A well-tuned NVMe host; `dm` puts the data partition under device-mapper.
fn good_host(dm: bool) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let data = std::fs::canonicalize(&data).unwrap();
    let r = &root;
    let dev = if dm { "253:0" } else { "259:2" };
    put(
        r,
        "proc/self/mountinfo",
        &format!(
            "1 0 0:20 / / rw - overlay overlay rw\n25 1 {dev} / {} rw,noatime shared:1 - xfs /dev/x rw\n",
            data.display()
        ),
    );
    // The disk, its partition, and the links the kernel makes.
    let disk = format!("{PCI_DISK}/nvme/nvme0/nvme0n1");
    put(r, &format!("{disk}/nvme0n1p2/partition"), "2");
    put(
        r,
        &format!("{disk}/queue/scheduler"),
        "[none] mq-deadline kyber",
    );
    put(r, &format!("{disk}/queue/nomerges"), "2");
    link(
        r,
        "sys/block/nvme0n1",
        &format!("../{}", disk.trim_start_matches("sys/")),
    );
    link(
        r,
        "sys/class/block/nvme0n1p2",
        &format!("../../{}/nvme0n1p2", disk.trim_start_matches("sys/")),
    );
    link(
        r,
        "sys/dev/block/259:2",
        &format!("../../{}/nvme0n1p2", disk.trim_start_matches("sys/")),
    );
    link(r, &format!("{disk}/device"), "../../nvme0");
    if dm {
        put(r, "sys/devices/virtual/block/dm-0/slaves/nvme0n1p2", "");
        link(r, "sys/block/dm-0", "../devices/virtual/block/dm-0");
        link(r, "sys/dev/block/253:0", "../../devices/virtual/block/dm-0");
    }
    // Interrupts: the disk's queues and the NIC's, spread over two CPUs.
    for (irq, cpu) in [(33, "0"), (34, "1"), (35, "0-1")] {
        put(r, &format!("{PCI_DISK}/msi_irqs/{irq}"), "msix");
        put(r, &format!("proc/irq/{irq}/smp_affinity_list"), cpu);
    }
    for (irq, cpu) in [(40, "0"), (41, "1")] {
        put(r, &format!("{PCI_NIC}/msi_irqs/{irq}"), "msix");
        put(r, &format!("proc/irq/{irq}/smp_affinity_list"), cpu);
    }
    link(
        r,
        "sys/class/net/eth0/device",
        "../../../devices/pci0000:00/0000:00:03.0",
    );
    put(
        r,
        "proc/net/route",
        "Iface\tDestination\tGateway\tFlags\n eth0\t00000000\t0101A8C0\t0003\n",
    );
    for c in ["cpu0", "cpu1"] {
        put(
            r,
            &format!("sys/devices/system/cpu/{c}/cpufreq/scaling_governor"),
            "performance",
        );
    }
    put(r, "sys/devices/system/cpu/smt/control", "off");
    put(r, "proc/sys/fs/aio-max-nr", "1048576");
    put(r, "proc/sys/vm/swappiness", "1");
    put(
        r,
        "sys/kernel/mm/transparent_hugepage/enabled",
        "always madvise [never]",
    );
    put(
        r,
        "sys/devices/system/clocksource/clocksource0/current_clocksource",
        "tsc",
    );
    put(
        r,
        "proc/self/limits",
        "Limit                     Soft Limit           Hard Limit           Units\nMax locked memory         unlimited            unlimited            bytes\n",
    );
    Fake {
        _dir: dir,
        root,
        data,
    }
}

fn check(f: &Fake, profile: &str) -> Vec<spate_tuning::CheckResult> {
    let p = Profile::load(profile).unwrap();
    run_checks(
        &Host::at(&f.root),
        &p,
        &Context {
            data_dir: &f.data,
            shards: 2,
            quick: false,
        },
    )
}

fn status_of<'a>(r: &'a [spate_tuning::CheckResult], name: &str) -> &'a spate_tuning::CheckResult {
    r.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}"))
}

#[test]
fn a_tuned_host_passes_every_check() {
    for dm in [false, true] {
        let f = good_host(dm);
        let r = check(&f, "benchmark");
        for c in &r {
            assert_eq!(c.status, Status::Pass, "dm={dm} {c:?}");
        }
        assert_eq!(
            status_of(&r, "io_scheduler").have,
            "nvme0n1=none",
            "the disk under the {}",
            if dm { "dm device" } else { "partition" }
        );
        assert!(status_of(&r, "filesystem").have.starts_with("xfs on "));
    }
}

#[test]
fn each_check_fails_with_a_fix() {
    let f = good_host(false);
    let r = &f.root;
    put(
        r,
        "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
        "powersave",
    );
    put(r, "sys/devices/system/cpu/smt/control", "on");
    for irq in [33, 34, 35] {
        put(r, &format!("proc/irq/{irq}/smp_affinity_list"), "0");
    }
    put(
        r,
        &format!("{PCI_DISK}/nvme/nvme0/nvme0n1/queue/scheduler"),
        "none [mq-deadline] kyber",
    );
    put(
        r,
        &format!("{PCI_DISK}/nvme/nvme0/nvme0n1/queue/nomerges"),
        "0",
    );
    put(r, "proc/sys/fs/aio-max-nr", "65536");
    put(r, "proc/sys/vm/swappiness", "60");
    put(
        r,
        "sys/kernel/mm/transparent_hugepage/enabled",
        "[always] madvise never",
    );
    put(
        r,
        "sys/devices/system/clocksource/clocksource0/current_clocksource",
        "hpet",
    );
    put(
        r,
        "proc/self/limits",
        "Max locked memory         8388608              8388608              bytes\n",
    );
    let data = f.data.display().to_string();
    put(
        r,
        "proc/self/mountinfo",
        &format!("25 1 259:2 / {data} rw - btrfs /dev/x rw\n"),
    );
    let res = check(&f, "benchmark");
    let expect = [
        ("cpu_governor", "performance,powersave", "scaling_governor"),
        ("smt", "on", "smt/control"),
        ("irq_affinity", "nvme0n1: 3 irqs on 0", "irqbalance"),
        ("io_scheduler", "nvme0n1=mq-deadline", "udev rule"),
        ("nomerges", "nvme0n1=0", "nomerges"),
        ("aio_max_nr", "65536", "fs.aio-max-nr=1048576"),
        ("swappiness", "60", "vm.swappiness=1"),
        (
            "transparent_hugepages",
            "always",
            "transparent_hugepage/enabled",
        ),
        ("clocksource", "hpet", "clocksource=tsc"),
        ("memlock", "8388608 bytes", "LimitMEMLOCK=infinity"),
        ("filesystem", "btrfs on", "xfs"),
    ];
    for (name, have, fix) in expect {
        let c = status_of(&res, name);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.have.starts_with(have), "{name}: have {:?}", c.have);
        assert!(
            c.fix.as_deref().unwrap_or("").contains(fix),
            "{name}: fix {:?}",
            c.fix
        );
    }
    // Production accepts SMT.
    assert_eq!(
        status_of(&check(&f, "production"), "smt").status,
        Status::Pass
    );
}

#[test]
fn missing_files_are_unknown_with_a_reason_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("empty-root");
    std::fs::create_dir_all(&root).unwrap();
    let res = run_checks(
        &Host::at(&root),
        &Profile::load("production").unwrap(),
        &Context {
            data_dir: dir.path(),
            shards: 2,
            quick: false,
        },
    );
    for c in &res {
        if c.name == "direct_io" || c.name == "smt" {
            continue; // the probe is real; smt wants "any" in production but still reads the file
        }
        match &c.status {
            Status::Unknown(why) => assert!(!why.is_empty(), "{c:?}"),
            other => panic!("{}: expected unknown, got {other:?}", c.name),
        }
    }
    assert!(matches!(status_of(&res, "smt").status, Status::Unknown(_)));
    // Unreadable (a directory where a file should be) is unknown too.
    std::fs::create_dir_all(root.join("proc/sys/vm/swappiness")).unwrap();
    let res = check(
        &Fake {
            _dir: tempfile::tempdir().unwrap(),
            root: root.clone(),
            data: dir.path().to_path_buf(),
        },
        "production",
    );
    assert!(matches!(
        status_of(&res, "swappiness").status,
        Status::Unknown(_)
    ));
}

#[test]
fn apply_writes_lasting_files_once() {
    let f = good_host(false);
    let p = Profile::load("production").unwrap();
    let first = spate_tuning::apply::apply(&Host::at(&f.root), &p, &f.data).unwrap();
    assert!(first.iter().all(|c| c.changed), "{first:?}");
    let sysctl = std::fs::read_to_string(f.root.join("etc/sysctl.d/60-spate.conf")).unwrap();
    assert!(sysctl.contains("fs.aio-max-nr = 1048576") && sysctl.contains("vm.swappiness = 1"));
    let dropin = std::fs::read_to_string(
        f.root
            .join("etc/systemd/system/spate.service.d/60-spate-tune.conf"),
    )
    .unwrap();
    assert!(dropin.contains("LimitMEMLOCK=infinity") && dropin.contains("CPUAffinity="));
    let rules = std::fs::read_to_string(f.root.join("etc/udev/rules.d/60-spate-io.rules")).unwrap();
    assert!(rules.contains("KERNEL==\"nvme0n1\"") && rules.contains("queue/scheduler}=\"none\""));
    let unit =
        std::fs::read_to_string(f.root.join("etc/systemd/system/spate-tune.service")).unwrap();
    assert!(unit.contains("scaling_governor") && unit.contains("Type=oneshot"));
    let second = spate_tuning::apply::apply(&Host::at(&f.root), &p, &f.data).unwrap();
    assert!(second.iter().all(|c| !c.changed), "idempotent: {second:?}");
}

#[test]
fn the_real_probe_works_on_this_machine() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    spate_tuning::probe::direct_io(dir.path()).unwrap();
    spate_tuning::probe::io_uring().unwrap();
    // And it says so when O_DIRECT cannot work: a directory that does not exist.
    assert!(spate_tuning::probe::direct_io(&dir.path().join("missing")).is_err());
}
