//! The console: a pty whose slave is init's stdio and /dev/console, and a bounded log of
//! what the container wrote to it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::pty::{openpty, Winsize};

use crate::error::{Result, RuntimeError};
use crate::sys;

/// The two ends of a container's console.
#[derive(Debug)]
pub struct ConsolePty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    /// Host path of the slave, bind-mounted at /dev/console.
    pub slave_path: PathBuf,
}

/// Opens a console pty (80x25) with the slave owned by the container's root and tty group.
pub fn open(owner_uid: u32, tty_gid: u32) -> Result<ConsolePty> {
    let size = Winsize {
        ws_row: 25,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty =
        openpty(Some(&size), None).map_err(|e| RuntimeError::sys("open the console pty", e))?;
    sys::set_cloexec(pty.master.as_raw_fd(), true)
        .map_err(|e| RuntimeError::sys("set cloexec", e))?;
    sys::set_cloexec(pty.slave.as_raw_fd(), true)
        .map_err(|e| RuntimeError::sys("set cloexec", e))?;
    let slave_path = fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd()))
        .map_err(|e| RuntimeError::io("resolve", "console pty slave", e))?;
    nix::unistd::fchown(
        pty.slave.as_raw_fd(),
        Some(owner_uid.into()),
        Some(tty_gid.into()),
    )
    .map_err(|e| RuntimeError::sys("chown the console pty", e))?;
    Ok(ConsolePty {
        master: pty.master,
        slave: pty.slave,
        slave_path,
    })
}

/// A log file that never grows past `limit` bytes: when full it becomes `<name>.1` (the
/// previous one is dropped) and a new file starts, so at most twice the limit is kept.
#[derive(Debug)]
pub struct BoundedLog {
    path: PathBuf,
    file: File,
    size: u64,
    limit: u64,
}

impl BoundedLog {
    /// Opens (appending to) the log at `path`.
    pub fn open(path: &Path, limit: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| RuntimeError::io("open", path, e))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(BoundedLog {
            path: path.to_path_buf(),
            file,
            size,
            limit: limit.max(1024),
        })
    }

    /// Appends `data`, rotating first when it would pass the limit.
    pub fn append(&mut self, data: &[u8]) -> Result<()> {
        if self.size + data.len() as u64 > self.limit {
            self.rotate()?;
        }
        let keep = &data[data.len().saturating_sub(self.limit as usize)..];
        self.file
            .write_all(keep)
            .map_err(|e| RuntimeError::io("write", &self.path, e))?;
        self.size += keep.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let old = rotated_path(&self.path);
        fs::rename(&self.path, &old).map_err(|e| RuntimeError::io("rotate", &self.path, e))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| RuntimeError::io("open", &self.path, e))?;
        self.size = 0;
        Ok(())
    }
}

/// The previous generation of a bounded log.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".1");
    path.with_file_name(name)
}

/// The whole console log, oldest first.
pub fn read_log(path: &Path) -> Result<Vec<u8>> {
    let mut out = fs::read(rotated_path(path)).unwrap_or_default();
    match fs::read(path) {
        Ok(data) => out.extend(data),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(RuntimeError::io("read", path, e)),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_stays_within_twice_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut log = BoundedLog::open(&path, 1024).unwrap();
        for i in 0..100u8 {
            log.append(&[b'a' + (i % 26); 100]).unwrap();
        }
        let total =
            fs::metadata(&path).unwrap().len() + fs::metadata(rotated_path(&path)).unwrap().len();
        assert!(total <= 2048, "{total}");
        let all = read_log(&path).unwrap();
        assert_eq!(*all.last().unwrap(), b'a' + (99 % 26));
    }

    #[test]
    fn a_huge_write_keeps_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = BoundedLog::open(&path, 1024).unwrap();
        let mut data = vec![b'x'; 5000];
        data.push(b'!');
        log.append(&data).unwrap();
        let all = read_log(&path).unwrap();
        assert_eq!(all.len(), 1024);
        assert_eq!(*all.last().unwrap(), b'!');
    }

    #[test]
    fn missing_log_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_log(&dir.path().join("none.log")).unwrap().is_empty());
    }
}
