//! The tarball of an export in LXD's layout, written as a stream: `backup/index.yaml`
//! first, then `backup/snapshots/<snap>/…` for each snapshot, then `backup/container/…`
//! (or, optimized, the driver's send streams as `.bin` files).
//!
//! Everything in a volume was written by the container and is hostile: the walk never
//! follows a symlink (every open is `openat` with `O_NOFOLLOW` below a directory already
//! open), reads files by the descriptor it checked, keeps uid/gid as on disk (volumes are
//! stored unshifted), keeps xattrs as PAX `SCHILY.xattr.*` and hard links within a volume,
//! and skips sockets.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};

use crate::{BackupError, Index};

/// What one export holds.
#[derive(Debug, Clone)]
pub struct Plan {
    pub index: Index,
    /// The instance's `backup.yaml` as captured, written as `backup/container/backup.yaml`
    /// in place of whatever file the volume holds.
    pub backup_yaml: String,
    /// The snapshots' volumes, oldest first, by name.
    pub snapshots: Vec<(String, PathBuf)>,
    /// The instance's volume.
    pub container: PathBuf,
    /// Optimized: the driver's streams instead of the trees.
    pub optimized: Option<Optimized>,
}

/// An optimized export: `backup/optimized_header.yaml`, then one stream per volume.
#[derive(Debug, Clone)]
pub struct Optimized {
    pub header_yaml: String,
    /// `(name in the tarball, argv whose stdout is the stream)`: snapshots first
    /// (`backup/snapshots/<snap>.bin`), `backup/container.bin` last.
    pub streams: Vec<(String, Vec<String>)>,
}

/// Called with the bytes of volume data read so far, after each read; an error (a cancel)
/// stops the export.
pub type Tick<'a> = &'a mut dyn FnMut(u64) -> io::Result<()>;

/// Writes the tarball of `plan` into `out` and returns `out`; an error leaves a truncated
/// stream (no tar trailer), which every reader refuses.
pub fn write_backup<W: Write>(out: W, plan: &Plan, tick: Tick<'_>) -> Result<W, BackupError> {
    let mut tar = tar::Builder::new(out);
    let mut w = TarWriter {
        tar: &mut tar,
        read: 0,
        tick,
    };
    let index = plan.index.to_yaml();
    w.file("backup/index.yaml", index.as_bytes(), 0o644)?;
    match &plan.optimized {
        Some(opt) => {
            w.file(
                "backup/optimized_header.yaml",
                opt.header_yaml.as_bytes(),
                0o644,
            )?;
            for (name, argv) in &opt.streams {
                w.command_stream(name, argv)?;
            }
        }
        None => {
            if !plan.snapshots.is_empty() {
                w.dir_entry("backup/snapshots")?;
            }
            for (snap, path) in &plan.snapshots {
                let prefix = PathBuf::from(format!("backup/snapshots/{snap}"));
                w.volume(path, &prefix, None)?;
            }
            w.volume(
                &plan.container,
                Path::new("backup/container"),
                Some(plan.backup_yaml.as_bytes()),
            )?;
        }
    }
    // The trailer is written only after every entry went through.
    tar.into_inner()
        .map_err(|e| BackupError::io("write", "the backup stream", e))
}

/// Bytes of file data a tree holds (what [`write_backup`] reads of it): the total for
/// progress. Follows no symlink; counts a hard-linked file once.
pub fn tree_bytes(path: &Path) -> u64 {
    fn walk(p: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(p) else {
            return 0;
        };
        let mut total = 0;
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                total += walk(&e.path(), seen);
            } else if m.is_file() && (m.nlink() == 1 || seen.insert((m.dev(), m.ino()))) {
                total += m.len();
            }
        }
        total
    }
    walk(path, &mut Default::default())
}

struct TarWriter<'a, 'b, W: Write> {
    tar: &'a mut tar::Builder<W>,
    /// Volume bytes read so far.
    read: u64,
    tick: Tick<'b>,
}

/// Where a hard-linked file was first written, by (device, inode), within one volume.
type Links = HashMap<(u64, u64), PathBuf>;

fn io_err<'p>(path: &'p Path, action: &'static str) -> impl FnOnce(io::Error) -> BackupError + 'p {
    move |e| BackupError::io(action, path, e)
}

fn nix_err<'p>(
    path: &'p Path,
    action: &'static str,
) -> impl FnOnce(nix::Error) -> BackupError + 'p {
    move |e| BackupError::io(action, path, io::Error::from(e))
}

impl<W: Write> TarWriter<'_, '_, W> {
    /// A small file made here (index.yaml, backup.yaml), owned by root.
    fn file(&mut self, name: &str, data: &[u8], mode: u32) -> Result<(), BackupError> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(now());
        h.set_uid(0);
        h.set_gid(0);
        self.tar
            .append_data(&mut h, name, data)
            .map_err(io_err(Path::new(name), "write"))
    }

    /// A directory entry made here (`backup/snapshots`).
    fn dir_entry(&mut self, name: &str) -> Result<(), BackupError> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o700);
        h.set_mtime(now());
        h.set_uid(0);
        h.set_gid(0);
        self.tar
            .append_data(&mut h, name, io::empty())
            .map_err(io_err(Path::new(name), "write"))
    }

    /// One volume's tree under `prefix`; `backup_yaml` replaces the root's `backup.yaml`.
    fn volume(
        &mut self,
        root: &Path,
        prefix: &Path,
        backup_yaml: Option<&[u8]>,
    ) -> Result<(), BackupError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let dir = Dir::open(root, flags, Mode::empty()).map_err(nix_err(root, "open"))?;
        let st = nix::sys::stat::fstat(dir.as_raw_fd()).map_err(nix_err(root, "stat"))?;
        self.header_of(&st, prefix, dir.as_raw_fd(), tar::EntryType::Directory)?;
        let mut links = Links::new();
        self.dir(dir, root, prefix, &mut links, backup_yaml)?;
        if let Some(yaml) = backup_yaml {
            self.file(&format!("{}/backup.yaml", prefix.display()), yaml, 0o400)?;
        }
        Ok(())
    }

    /// The entries of an open directory, in name order, depth first.
    fn dir(
        &mut self,
        mut dir: Dir,
        host: &Path,
        name: &Path,
        links: &mut Links,
        skip_backup_yaml: Option<&[u8]>,
    ) -> Result<(), BackupError> {
        let mut names: Vec<OsString> = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(nix_err(host, "read"))?;
            let n = OsStr::from_bytes(entry.file_name().to_bytes());
            if n != "." && n != ".." {
                names.push(n.to_os_string());
            }
        }
        names.sort();
        let fd = dir.as_raw_fd();
        for n in names {
            // The captured file replaces the live one, and the live one's temporary.
            if skip_backup_yaml.is_some() && (n == "backup.yaml" || n == ".backup.yaml.tmp") {
                continue;
            }
            let (host, name) = (host.join(&n), name.join(&n));
            self.entry(fd, &n, &host, &name, links)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        parent: RawFd,
        n: &OsStr,
        host: &Path,
        name: &Path,
        links: &mut Links,
    ) -> Result<(), BackupError> {
        let st = match fstatat(Some(parent), n, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Gone since the listing: nothing to write.
            Err(nix::Error::ENOENT) => return Ok(()),
            Err(e) => return Err(nix_err(host, "stat")(e)),
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        match kind {
            SFlag::S_IFDIR => {
                let flags =
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let dir = match Dir::openat(Some(parent), n, flags, Mode::empty()) {
                    Ok(dir) => dir,
                    Err(nix::Error::ENOENT) => return Ok(()),
                    Err(e) => return Err(nix_err(host, "open")(e)),
                };
                let st = checked_same(dir.as_raw_fd(), &st, host)?;
                self.header_of(&st, name, dir.as_raw_fd(), tar::EntryType::Directory)?;
                self.dir(dir, host, name, links, None)
            }
            SFlag::S_IFREG => {
                let flags = OFlag::O_RDONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_NONBLOCK
                    | OFlag::O_CLOEXEC
                    | OFlag::O_NOCTTY;
                let fd = match nix::fcntl::openat(Some(parent), n, flags, Mode::empty()) {
                    Ok(fd) => fd,
                    // Gone since its stat (a temporary renamed over its file): skipped.
                    Err(nix::Error::ENOENT) => return Ok(()),
                    Err(e) => return Err(nix_err(host, "open")(e)),
                };
                // SAFETY: `fd` was just opened here and is owned by nothing else.
                let file = unsafe { File::from_raw_fd(fd) };
                let st = checked_same(file.as_raw_fd(), &st, host)?;
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = links.get(&key) {
                        let mut h = self.base_header(&st, tar::EntryType::Link);
                        return self
                            .tar
                            .append_link(&mut h, name, first)
                            .map_err(io_err(host, "write"));
                    }
                    links.insert(key, name.to_path_buf());
                }
                self.header_of(&st, name, file.as_raw_fd(), tar::EntryType::Regular)?;
                self.data(file, st.st_size as u64, host)
            }
            SFlag::S_IFLNK => {
                let target =
                    nix::fcntl::readlinkat(Some(parent), n).map_err(nix_err(host, "read"))?;
                let mut h = self.base_header(&st, tar::EntryType::Symlink);
                self.tar
                    .append_link(&mut h, name, Path::new(&target))
                    .map_err(io_err(host, "write"))
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
                let kind = match kind {
                    SFlag::S_IFCHR => tar::EntryType::Char,
                    SFlag::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = self.base_header(&st, kind);
                let rdev = st.st_rdev;
                h.set_device_major(nix::sys::stat::major(rdev) as u32)
                    .and_then(|()| h.set_device_minor(nix::sys::stat::minor(rdev) as u32))
                    .map_err(io_err(host, "write"))?;
                self.tar
                    .append_data(&mut h, name, io::empty())
                    .map_err(io_err(host, "write"))
            }
            // Sockets (and anything unknown) are skipped, as LXD does.
            _ => Ok(()),
        }
    }

    fn base_header(&self, st: &FileStat, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid as u64);
        h.set_gid(st.st_gid as u64);
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        h
    }

    /// A directory or file header, with its xattrs (read from `fd`) as PAX records first.
    fn header_of(
        &mut self,
        st: &FileStat,
        name: &Path,
        fd: RawFd,
        kind: tar::EntryType,
    ) -> Result<(), BackupError> {
        let xattrs = read_xattrs(fd).map_err(io_err(name, "read xattrs of"))?;
        if !xattrs.is_empty() {
            let records: Vec<(String, &[u8])> = xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{}", k.to_string_lossy()), &v[..]))
                .collect();
            self.tar
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(io_err(name, "write"))?;
        }
        let mut h = self.base_header(st, kind);
        if kind == tar::EntryType::Regular {
            h.set_size(st.st_size as u64);
            // The data follows in `data`: write the header alone.
            let path = name.to_path_buf();
            return self.header_only(h, &path);
        }
        self.tar
            .append_data(&mut h, name, io::empty())
            .map_err(io_err(name, "write"))
    }

    /// Writes a regular file's header (long names included) without its data.
    fn header_only(&mut self, mut h: tar::Header, name: &Path) -> Result<(), BackupError> {
        // The tar crate writes a header and its data together; a reader that yields
        // nothing makes it write the header (and long-name entries) only, and the data
        // follows through `get_mut`, padded by `data`.
        let size = h.size().unwrap_or(0);
        h.set_size(0);
        let mut tmp = tar::Builder::new(Vec::new());
        tmp.mode(tar::HeaderMode::Complete);
        tmp.append_data(&mut h, name, io::empty())
            .map_err(io_err(name, "write"))?;
        let mut bytes = tmp.into_inner().map_err(io_err(name, "write"))?;
        // Drop the trailer (two zero blocks) and set the real size in the last header.
        bytes.truncate(bytes.len() - 1024);
        let last = bytes.len() - 512;
        let mut real = tar::Header::new_gnu();
        real.as_mut_bytes().copy_from_slice(&bytes[last..]);
        real.set_size(size);
        real.set_cksum();
        bytes[last..].copy_from_slice(real.as_bytes());
        self.tar
            .get_mut()
            .write_all(&bytes)
            .map_err(io_err(name, "write"))
    }

    /// Exactly `size` bytes of `file` and the padding to 512; a file that shrank since
    /// its stat is padded with zeros, one that grew is cut, so the stream stays valid.
    fn data(&mut self, file: File, size: u64, host: &Path) -> Result<(), BackupError> {
        let mut src = file.take(size);
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BackupError::io("read", host, e)),
            };
            self.tar
                .get_mut()
                .write_all(&buf[..n])
                .map_err(io_err(host, "write"))?;
            done += n as u64;
            self.read += n as u64;
            (self.tick)(self.read).map_err(io_err(host, "write"))?;
        }
        let zeros = [0u8; 512];
        let mut left = size - done;
        while left > 0 {
            let n = left.min(512) as usize;
            self.tar
                .get_mut()
                .write_all(&zeros[..n])
                .map_err(io_err(host, "write"))?;
            left -= n as u64;
        }
        let pad = (512 - size % 512) % 512;
        self.tar
            .get_mut()
            .write_all(&zeros[..pad as usize])
            .map_err(io_err(host, "write"))
    }

    /// A `.bin` entry from a command's stdout. Its size must be in the header before the
    /// data, so the command runs twice: once counting, once writing; the two must agree
    /// (the volumes are read-only snapshots), else the export fails. No spool file.
    fn command_stream(&mut self, name: &str, argv: &[String]) -> Result<(), BackupError> {
        let path = Path::new(name);
        let size = run_stream(argv, &mut io::sink(), &mut |_| Ok(()))?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o600);
        h.set_mtime(now());
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(size);
        self.header_only(h, path)?;
        let (tar, read, tick) = (&mut *self.tar, &mut self.read, &mut *self.tick);
        let mut limited = Limited {
            inner: tar.get_mut(),
            left: size,
        };
        let sent = run_stream(argv, &mut limited, &mut |n| {
            *read += n;
            tick(*read)
        })?;
        if sent != size {
            return Err(BackupError::Invalid(format!(
                "{} changed between its two passes ({size} then {sent} bytes)",
                argv.join(" ")
            )));
        }
        let pad = (512 - size % 512) % 512;
        self.tar
            .get_mut()
            .write_all(&[0u8; 512][..pad as usize])
            .map_err(io_err(path, "write"))
    }
}

/// A writer that refuses more than `left` bytes (a stream that grew on its second pass).
struct Limited<'a, W: Write> {
    inner: &'a mut W,
    left: u64,
}

impl<W: Write> Write for Limited<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::other(
                "the stream is longer than on its first pass",
            ));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Runs `argv`, copying its stdout into `out`; returns the bytes copied. A failure of
/// the copy or of `tick` kills the command.
fn run_stream(
    argv: &[String],
    out: &mut dyn Write,
    tick: &mut dyn FnMut(u64) -> io::Result<()>,
) -> Result<u64, BackupError> {
    let what = Path::new(argv.first().map(String::as_str).unwrap_or(""));
    let mut child = Command::new(what)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(what, "run"))?;
    let copied = (|| -> io::Result<u64> {
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = match stdout.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            out.write_all(&buf[..n])?;
            total += n as u64;
            tick(n as u64)?;
        }
    })();
    if copied.is_err() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().map_err(io_err(what, "run"))?;
    let total = copied.map_err(io_err(what, "copy the output of"))?;
    if !output.status.success() {
        return Err(BackupError::Invalid(format!(
            "{} failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(total)
}

/// Fails when `fd` is not the object `expected` described (swapped since the stat).
fn checked_same(fd: RawFd, expected: &FileStat, host: &Path) -> Result<FileStat, BackupError> {
    let st = nix::sys::stat::fstat(fd).map_err(nix_err(host, "stat"))?;
    if st.st_ino != expected.st_ino
        || st.st_dev != expected.st_dev
        || (st.st_mode & libc::S_IFMT) != (expected.st_mode & libc::S_IFMT)
    {
        return Err(BackupError::Invalid(format!(
            "{} changed while it was read",
            host.display()
        )));
    }
    Ok(st)
}

/// The extended attributes of an open file, by name.
fn read_xattrs(fd: RawFd) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let len = loop {
        // SAFETY: the buffer is valid for `names.len()` bytes.
        let n = unsafe { libc::flistxattr(fd, names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
        let mut value = vec![0u8; 256];
        let got = loop {
            // SAFETY: `cname` is NUL-terminated and the buffer valid for its length.
            let n = unsafe {
                libc::fgetxattr(fd, cname.as_ptr(), value.as_mut_ptr().cast(), value.len())
            };
            if n >= 0 {
                break Some(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => value.resize(value.len() * 16, 0),
                // Removed since the listing.
                Some(libc::ENODATA) => break None,
                _ => return Err(e),
            }
        };
        if let Some(n) = got {
            value.truncate(n);
            out.push((OsStr::from_bytes(name).to_os_string(), value));
        }
    }
    Ok(out)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn volume(root: &Path, hostname: &str) {
        std::fs::create_dir_all(root.join("rootfs/etc")).unwrap();
        std::fs::write(root.join("rootfs/etc/hostname"), hostname).unwrap();
        std::fs::write(root.join("metadata.yaml"), "architecture: x86_64\n").unwrap();
        std::fs::write(root.join("backup.yaml"), "stale\n").unwrap();
    }

    fn plan(dir: &Path) -> Plan {
        let (snap, main) = (dir.join("snap0"), dir.join("c1"));
        volume(&snap, "old\n");
        volume(&main, "new\n");
        Plan {
            index: Index {
                name: "c1".into(),
                backend: "dir".into(),
                pool: "default".into(),
                snapshots: vec!["snap0".into()],
                kind: "container".into(),
                ..Default::default()
            },
            backup_yaml: "container:\n  name: c1\n".into(),
            snapshots: vec![("snap0".into(), snap)],
            container: main,
            optimized: None,
        }
    }

    fn entries(tarball: &[u8]) -> Vec<(String, tar::EntryType, Vec<u8>)> {
        let mut a = tar::Archive::new(tarball);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let kind = e.header().entry_type();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, kind, data)
            })
            .collect()
    }

    #[test]
    fn the_layout_is_lxds_with_the_index_first_and_the_captured_backup_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path());
        let mut ticks = 0;
        let out = write_backup(Vec::new(), &plan, &mut |_| {
            ticks += 1;
            Ok(())
        })
        .unwrap();
        let list = entries(&out);
        let names: Vec<&str> = list.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names[0], "backup/index.yaml");
        assert_eq!(names[1], "backup/snapshots");
        assert!(!names.contains(&"backup"), "{names:?}");
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap_or(usize::MAX);
        assert!(pos("backup/snapshots/snap0/rootfs/etc/hostname") < pos("backup/container"));
        assert!(
            pos("backup/container/rootfs/etc/hostname") < usize::MAX,
            "{names:?}"
        );
        let file = |n: &str| list.iter().find(|(x, _, _)| x == n).unwrap().2.clone();
        assert_eq!(file("backup/container/rootfs/etc/hostname"), b"new\n");
        assert_eq!(
            file("backup/container/backup.yaml"),
            plan.backup_yaml.as_bytes()
        );
        assert_eq!(
            names
                .iter()
                .filter(|n| **n == "backup/container/backup.yaml")
                .count(),
            1
        );
        assert_eq!(file("backup/snapshots/snap0/backup.yaml"), b"stale\n");
        let index = Index::from_yaml(std::str::from_utf8(&file("backup/index.yaml")).unwrap());
        assert_eq!(index.unwrap().snapshots, vec!["snap0"]);
        assert!(ticks > 0);
    }

    #[test]
    fn symlinks_stay_links_hard_links_stay_links_and_sockets_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path());
        let rootfs = plan.container.join("rootfs");
        symlink("/etc/shadow", rootfs.join("evil")).unwrap();
        std::fs::hard_link(rootfs.join("etc/hostname"), rootfs.join("etc/alias")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(rootfs.join("sock")).unwrap();
        let long = rootfs.join("d".repeat(120)).join("f".repeat(120));
        std::fs::create_dir_all(long.parent().unwrap()).unwrap();
        std::fs::write(&long, "deep").unwrap();
        std::fs::set_permissions(&long, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let out = write_backup(Vec::new(), &plan, &mut |_| Ok(())).unwrap();
        let list = entries(&out);
        let get = |n: &str| list.iter().find(|(x, _, _)| x == n);
        let evil = get("backup/container/rootfs/evil").unwrap();
        assert_eq!(evil.1, tar::EntryType::Symlink);
        assert!(evil.2.is_empty(), "a symlink is never followed");
        // `alias` sorts first: it carries the data, `hostname` links to it.
        let alias = get("backup/container/rootfs/etc/alias").unwrap();
        assert_eq!(
            (alias.1, &alias.2[..]),
            (tar::EntryType::Regular, &b"new\n"[..])
        );
        let hostname = get("backup/container/rootfs/etc/hostname").unwrap();
        assert_eq!(hostname.1, tar::EntryType::Link);
        assert!(get("backup/container/rootfs/sock").is_none());
        let deep = format!(
            "backup/container/rootfs/{}/{}",
            "d".repeat(120),
            "f".repeat(120)
        );
        assert_eq!(get(&deep).unwrap().2, b"deep");
    }

    #[test]
    fn a_cancel_stops_the_stream_without_a_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path());
        let err = write_backup(Vec::new(), &plan, &mut |_| {
            Err(io::Error::other("cancelled"))
        });
        assert!(err.is_err());
    }

    #[test]
    fn a_command_stream_is_sized_by_a_first_pass() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = plan(dir.path());
        plan.optimized = Some(Optimized {
            header_yaml: "subvolumes: []\n".into(),
            streams: vec![(
                "backup/container.bin".into(),
                vec![
                    "sh".into(),
                    "-c".into(),
                    "printf 'x%.0s' $(seq 1 1000)".into(),
                ],
            )],
        });
        let out = write_backup(Vec::new(), &plan, &mut |_| Ok(())).unwrap();
        let list = entries(&out);
        let names: Vec<&str> = list.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "backup/index.yaml",
                "backup/optimized_header.yaml",
                "backup/container.bin"
            ]
        );
        assert_eq!(list[2].2, vec![b'x'; 1000]);
        // A stream that differs between its passes is refused.
        let flaky = dir.path().join("n");
        plan.optimized.as_mut().unwrap().streams[0].1 = vec![
            "sh".into(),
            "-c".into(),
            format!("echo x >> {0}; cat {0}", flaky.display()),
        ];
        assert!(write_backup(Vec::new(), &plan, &mut |_| Ok(())).is_err());
    }
}
