//! The real probe: does O_DIRECT work in the data directory (write, fdatasync, read back a
//! block), and can this process create an io_uring?

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const BLOCK: usize = 4096;

/// A block-aligned buffer (O_DIRECT needs aligned memory).
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new() -> Option<Self> {
        let layout = std::alloc::Layout::from_size_align(BLOCK, BLOCK).ok()?;
        // SAFETY: a non-zero size layout.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(Self { ptr, layout })
    }
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` holds `layout.size()` bytes we own.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Writes, fdatasyncs and reads back one block with O_DIRECT in `dir`.
pub fn direct_io(dir: &Path) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let path = dir.join(".spate-tune-probe");
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .map_err(|e| format!("O_DIRECT open of {} failed: {e}", path.display()))?;
        let mut buf = Aligned::new().ok_or("cannot allocate an aligned buffer")?;
        buf.bytes().fill(0x5a);
        f.write_all(buf.bytes())
            .map_err(|e| format!("O_DIRECT write failed: {e}"))?;
        f.sync_data()
            .map_err(|e| format!("fdatasync failed: {e}"))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        let mut back = Aligned::new().ok_or("cannot allocate an aligned buffer")?;
        f.read_exact(back.bytes())
            .map_err(|e| format!("O_DIRECT read failed: {e}"))?;
        if back.bytes().iter().any(|b| *b != 0x5a) {
            return Err("O_DIRECT read returned other bytes than were written".to_string());
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Creates (and closes) a small io_uring.
pub fn io_uring() -> Result<(), String> {
    // struct io_uring_params is 120 bytes; zeroed asks for defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and fills `params`; the fd it returns is closed here.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("io_uring_setup failed: {e} (kernel too old, or disabled by sysctl kernel.io_uring_disabled or a seccomp profile)"));
    }
    // SAFETY: closing the descriptor we just got.
    unsafe { libc::close(fd as i32) };
    Ok(())
}
