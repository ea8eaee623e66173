//! `spate tune` from the command line: exit codes, the table, --apply twice, bad input.

mod common;

use common::spate;

#[test]
fn check_apply_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (root_s, data_s) = (root.to_str().unwrap(), data.to_str().unwrap());

    // An empty /proc and /sys: every check unknown, with its reason; not all pass: exit 1.
    let out = spate()
        .args(["tune", "--check", "--root", root_s, "--data-dir", data_s])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("| swappiness | unknown: cannot read /proc/sys/vm/swappiness"),
        "{stdout}"
    );
    assert!(stdout.contains("profile production:"), "{stdout}");

    // A host whose every check passes exits 0: a profile that asks only for what holds.
    std::fs::create_dir_all(root.join("proc/sys/vm")).unwrap();
    std::fs::write(root.join("proc/sys/vm/swappiness"), "0\n").unwrap();
    let profile = dir.path().join("one.toml");
    std::fs::write(&profile, "[swappiness]\nwant = \"1\"\nwhy = \"test\"\n").unwrap();
    let out = spate()
        .args([
            "tune",
            "--check",
            "--root",
            root_s,
            "--data-dir",
            data_s,
            "--profile",
            profile.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // --apply writes its files, then finds nothing to change.
    let apply = || {
        spate()
            .args(["tune", "--apply", "--root", root_s, "--data-dir", data_s])
            .output()
            .unwrap()
    };
    let first = String::from_utf8_lossy(&apply().stdout).to_string();
    assert!(
        first.contains("changed   /etc/sysctl.d/60-spate.conf"),
        "{first}"
    );
    let second = String::from_utf8_lossy(&apply().stdout).to_string();
    assert!(
        !second.contains("changed  ") && second.contains("unchanged /etc/sysctl.d/60-spate.conf"),
        "{second}"
    );

    // Bad input: an unknown profile, and neither --check nor --apply.
    let out = spate()
        .args(["tune", "--check", "--profile", "fastest"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("not a built-in profile (production, benchmark)"));
    let out = spate().args(["tune"]).output().unwrap();
    assert!(!out.status.success());
}
