//! The machine's own limits, measured in the same run and at the same sizes as a workload:
//! fio O_DIRECT writes with an fdatasync after each (the durable-write limit), fdatasync
//! latency, and iperf3 over loopback (the network limit for a client on the same host).
//! fio and iperf3 are installed with apt-get if missing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub write_size_bytes: usize,
    /// fio: O_DIRECT io_uring sequential writes of `write_size_bytes`, fdatasync after each.
    pub durable_write_mb_per_s: f64,
    /// fio: 4 KiB writes with fdatasync after each: the latency of the fdatasync alone.
    pub fdatasync_p50_ms: f64,
    pub fdatasync_p99_ms: f64,
    /// iperf3 over 127.0.0.1, one stream.
    pub loopback_mb_per_s: f64,
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Installs `pkg` with apt-get (sudo if not root) when `tool` is missing.
pub fn ensure(tool: &str, pkg: &str) -> Result<(), String> {
    if have(tool) {
        return Ok(());
    }
    eprintln!("spate-bench: installing {pkg} (apt-get)");
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    let mut cmd = if root {
        Command::new("apt-get")
    } else {
        Command::new("sudo")
    };
    if !root {
        cmd.arg("apt-get");
    }
    let ok = cmd
        .args(["install", "-y", "-q", pkg])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok && have(tool) {
        Ok(())
    } else {
        Err(format!(
            "{tool} is missing and `apt-get install {pkg}` failed; install it by hand"
        ))
    }
}

fn json_of(cmd: &mut Command, what: &str) -> Result<serde_json::Value, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{what}: unreadable output: {e}"))
}

fn fio(dir: &Path, bs: usize, size_mib: usize) -> Result<serde_json::Value, String> {
    let file = dir.join("spate-bench-fio.dat");
    let _ = std::fs::remove_file(&file);
    let v = json_of(
        Command::new("fio").args([
            "--name=durable-write",
            &format!("--filename={}", file.display()),
            "--ioengine=io_uring",
            "--direct=1",
            "--rw=write",
            &format!("--bs={bs}"),
            "--fdatasync=1",
            &format!("--size={size_mib}M"),
            "--iodepth=1",
            "--output-format=json",
        ]),
        "fio",
    );
    let _ = std::fs::remove_file(&file);
    v
}

/// Measures the limits on the file system of `dir` for writes of `write_size` bytes.
pub fn measure(dir: &Path, write_size: usize) -> Result<Limits, String> {
    ensure("fio", "fio")?;
    ensure("iperf3", "iperf3")?;
    let bs = write_size.div_ceil(4096).max(1) * 4096;
    let size_mib = (bs * 256 / (1 << 20)).clamp(16, 256);
    let w = fio(dir, bs, size_mib)?;
    let durable = w["jobs"][0]["write"]["bw"].as_f64().unwrap_or(0.0) * 1024.0 / 1e6;
    let s = fio(dir, 4096, 16)?;
    let pct = |p: &str| {
        s["jobs"][0]["sync"]["lat_ns"]["percentile"][p]
            .as_f64()
            .unwrap_or(0.0)
            / 1e6
    };
    let (p50, p99) = (pct("50.000000"), pct("99.000000"));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port for iperf3: {e}"))?
        .port();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start iperf3 -s: {e}"))?;
    std::thread::sleep(Duration::from_millis(300));
    let client = json_of(
        Command::new("iperf3").args(["-c", "127.0.0.1", "-p", &port.to_string(), "-t", "5", "-J"]),
        "iperf3",
    );
    let _ = server.kill();
    let _ = server.wait();
    let client = client?;
    let loopback = client["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 8.0
        / 1e6;
    Ok(Limits {
        write_size_bytes: bs,
        durable_write_mb_per_s: durable,
        fdatasync_p50_ms: p50,
        fdatasync_p99_ms: p99,
        loopback_mb_per_s: loopback,
    })
}
