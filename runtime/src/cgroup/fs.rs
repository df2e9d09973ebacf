//! The tiny I/O seam under the cgroup drivers: the real cgroupfs, and an in-memory fake.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// File operations the cgroup drivers need. Paths are absolute host paths.
pub trait CgroupFs: Send + Sync + std::fmt::Debug {
    /// The whole content of a cgroup file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes `value` to a cgroup file in one write(2).
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    /// Creates a directory; succeeds when it already exists.
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty cgroup directory; succeeds when it does not exist.
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Changes the owner of a cgroup directory or file.
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// Whether a cgroup directory or file exists.
    fn exists(&self, path: &Path) -> bool;
    /// The sub-directories (child cgroups) of `path`.
    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
}

/// The host's cgroup filesystems.
#[derive(Debug, Default)]
pub struct RealCgroupFs;

impl CgroupFs for RealCgroupFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        fs::read_to_string(path)
    }
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // One write(2) per value: cgroupfs parses each write on its own.
        use std::io::Write;
        fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all(value.as_bytes())
    }
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        match fs::create_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }
    fn rmdir(&self, path: &Path) -> io::Result<()> {
        match fs::remove_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(io::Error::from)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                out.push(entry.path());
            }
        }
        Ok(out)
    }
}

/// An in-memory cgroupfs for unit tests: directories, files, a log of writes, and
/// injected failures.
#[derive(Debug, Default)]
pub struct FakeCgroupFs {
    inner: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    dirs: BTreeSet<PathBuf>,
    files: BTreeMap<PathBuf, String>,
    writes: Vec<(PathBuf, String)>,
    chowns: Vec<(PathBuf, u32, u32)>,
    fail_write: Option<(usize, i32)>,
    /// Files whose writes fail with the given errno.
    fail_files: BTreeMap<PathBuf, i32>,
    /// Values the next reads of a file return, one per read, before its content does.
    queued_reads: BTreeMap<PathBuf, VecDeque<String>>,
}

impl FakeCgroupFs {
    /// An empty filesystem: not even `/` exists until a directory or file is added.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a directory (and its parents).
    pub fn add_dir(&self, path: impl AsRef<Path>) {
        let mut s = self.inner.lock().unwrap();
        for p in path.as_ref().ancestors() {
            s.dirs.insert(p.to_path_buf());
        }
    }
    /// Adds a file with content (and its directory).
    pub fn add_file(&self, path: impl AsRef<Path>, content: &str) {
        if let Some(parent) = path.as_ref().parent() {
            self.add_dir(parent);
        }
        self.inner
            .lock()
            .unwrap()
            .files
            .insert(path.as_ref().to_path_buf(), content.to_string());
    }
    /// Every write so far, in order.
    pub fn writes(&self) -> Vec<(PathBuf, String)> {
        self.inner.lock().unwrap().writes.clone()
    }
    /// Every chown so far, in order.
    pub fn chowns(&self) -> Vec<(PathBuf, u32, u32)> {
        self.inner.lock().unwrap().chowns.clone()
    }
    /// Makes the `n`th write from now (0-based) fail with `errno`.
    pub fn fail_nth_write(&self, n: usize, errno: i32) {
        let mut s = self.inner.lock().unwrap();
        let base = s.writes.len();
        s.fail_write = Some((base + n, errno));
    }
    /// Makes every write to `path` fail with `errno`.
    pub fn fail_writes_to(&self, path: impl AsRef<Path>, errno: i32) {
        self.inner
            .lock()
            .unwrap()
            .fail_files
            .insert(path.as_ref().to_path_buf(), errno);
    }
    /// Current content of a file.
    pub fn content(&self, path: impl AsRef<Path>) -> Option<String> {
        self.inner.lock().unwrap().files.get(path.as_ref()).cloned()
    }
    /// Whether a directory exists.
    pub fn has_dir(&self, path: impl AsRef<Path>) -> bool {
        self.inner.lock().unwrap().dirs.contains(path.as_ref())
    }
    /// Makes the next reads of `path` return `values`, one per read, as a kernel file
    /// changes while it is polled; later reads see the file's content again.
    pub fn queue_reads(&self, path: impl AsRef<Path>, values: &[&str]) {
        self.inner
            .lock()
            .unwrap()
            .queued_reads
            .entry(path.as_ref().to_path_buf())
            .or_default()
            .extend(values.iter().map(|v| v.to_string()));
    }
    /// How many queued reads of `path` have not happened yet.
    pub fn pending_reads(&self, path: impl AsRef<Path>) -> usize {
        self.inner
            .lock()
            .unwrap()
            .queued_reads
            .get(path.as_ref())
            .map_or(0, VecDeque::len)
    }
}

impl CgroupFs for FakeCgroupFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        let mut s = self.inner.lock().unwrap();
        if let Some(v) = s.queued_reads.get_mut(path).and_then(VecDeque::pop_front) {
            return Ok(v);
        }
        s.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        let mut s = self.inner.lock().unwrap();
        if let Some((n, errno)) = s.fail_write {
            if n == s.writes.len() {
                s.fail_write = None;
                s.writes
                    .push((path.to_path_buf(), format!("FAILED {value}")));
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        if let Some(errno) = s.fail_files.get(path).copied() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        if !s.dirs.contains(path.parent().unwrap_or(Path::new("/"))) {
            return Err(io::ErrorKind::NotFound.into());
        }
        s.writes.push((path.to_path_buf(), value.to_string()));
        s.files.insert(path.to_path_buf(), value.to_string());
        Ok(())
    }
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.inner.lock().unwrap();
        if !s.dirs.contains(path.parent().unwrap_or(Path::new("/"))) {
            return Err(io::ErrorKind::NotFound.into());
        }
        s.dirs.insert(path.to_path_buf());
        Ok(())
    }
    fn rmdir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.inner.lock().unwrap();
        if s.dirs.iter().any(|d| d.parent() == Some(path)) {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        let procs = s
            .files
            .get(&path.join("cgroup.procs"))
            .cloned()
            .unwrap_or_default();
        if !procs.trim().is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        s.dirs.remove(path);
        s.files.retain(|f, _| f.parent() != Some(path));
        Ok(())
    }
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        let mut s = self.inner.lock().unwrap();
        if !s.dirs.contains(path) && !s.files.contains_key(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        s.chowns.push((path.to_path_buf(), uid, gid));
        Ok(())
    }
    fn exists(&self, path: &Path) -> bool {
        let s = self.inner.lock().unwrap();
        s.dirs.contains(path) || s.files.contains_key(path)
    }
    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let s = self.inner.lock().unwrap();
        if !s.dirs.contains(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(s.dirs
            .iter()
            .filter(|d| d.parent() == Some(path))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_fs_mkdir_and_rmdir_are_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let fs = RealCgroupFs;
        let dir = tmp.path().join("c1");
        fs.mkdir(&dir).unwrap();
        fs.mkdir(&dir).unwrap();
        fs.write(&dir.join("pids.max"), "max").unwrap_err();
        std::fs::write(dir.join("pids.max"), "").unwrap();
        fs.write(&dir.join("pids.max"), "50").unwrap();
        assert_eq!(fs.read(&dir.join("pids.max")).unwrap(), "50");
        fs.mkdir(&dir.join("sub")).unwrap();
        assert_eq!(fs.subdirs(&dir).unwrap(), vec![dir.join("sub")]);
        fs.rmdir(&dir.join("sub")).unwrap();
        fs.rmdir(&dir.join("sub")).unwrap();
        assert!(fs.exists(&dir) && !fs.exists(&dir.join("sub")));
        let me = nix::unistd::geteuid().as_raw();
        let group = nix::unistd::getegid().as_raw();
        fs.chown(&dir, me, group).unwrap();
    }

    #[test]
    fn fake_fails_the_nth_write_and_keeps_going() {
        let fs = FakeCgroupFs::new();
        fs.add_dir("/cg");
        fs.write(Path::new("/cg/a"), "1").unwrap();
        fs.fail_nth_write(1, libc::EINVAL);
        fs.write(Path::new("/cg/b"), "2").unwrap();
        let err = fs.write(Path::new("/cg/c"), "3").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        fs.write(Path::new("/cg/d"), "4").unwrap();
        let log: Vec<String> = fs.writes().into_iter().map(|(_, v)| v).collect();
        assert_eq!(log, ["1", "2", "FAILED 3", "4"]);
        assert_eq!(fs.content("/cg/c"), None);
        // Writes need the directory, as on cgroupfs.
        assert!(fs.write(Path::new("/nope/x"), "1").is_err());
    }

    #[test]
    fn fake_rmdir_refuses_busy_cgroups() {
        let fs = FakeCgroupFs::new();
        fs.add_file("/cg/c1/cgroup.procs", "7\n");
        fs.add_dir("/cg/c2/child");
        let busy = |p: &str| fs.rmdir(Path::new(p)).unwrap_err().raw_os_error();
        assert_eq!(busy("/cg/c1"), Some(libc::EBUSY));
        assert_eq!(busy("/cg/c2"), Some(libc::EBUSY));
        fs.rmdir(Path::new("/cg/c2/child")).unwrap();
        fs.rmdir(Path::new("/cg/c2")).unwrap();
        fs.rmdir(Path::new("/cg/gone")).unwrap();
        fs.queue_reads("/cg/c1/cgroup.procs", &["1\n"]);
        assert_eq!(fs.read(Path::new("/cg/c1/cgroup.procs")).unwrap(), "1\n");
        assert_eq!(fs.read(Path::new("/cg/c1/cgroup.procs")).unwrap(), "7\n");
    }
}
