//! What one scrape reads of the host once, for every container: the interface counters of
//! the host's namespace (the host ends of the containers' veths), the block devices'
//! names, the mounts, and the host's memory; and the daemon's own process figures. Each
//! reader takes its file's path, so tests run on text.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A small kernel file (cgroup, proc) as text: open, read, close, without the size
/// query and the second read `read_to_string` makes. A pseudo-file shorter than the
/// buffer comes whole in one read; a longer one is read on to its end.
pub fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    loop {
        let n = f.read(&mut buf[len..]).ok()?;
        len += n;
        if n == 0 || len < buf.len() {
            break;
        }
        buf.resize(buf.len() * 2, 0);
    }
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

/// One interface's counters, as `/proc/net/dev` lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errs: u64,
    pub rx_drop: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errs: u64,
    pub tx_drop: u64,
}

impl NetCounters {
    /// The counters as seen from the other end of a veth: what one end sends, the other
    /// receives.
    pub fn swapped(&self) -> NetCounters {
        NetCounters {
            rx_bytes: self.tx_bytes,
            rx_packets: self.tx_packets,
            rx_errs: self.tx_errs,
            rx_drop: self.tx_drop,
            tx_bytes: self.rx_bytes,
            tx_packets: self.rx_packets,
            tx_errs: self.rx_errs,
            tx_drop: self.rx_drop,
        }
    }
}

/// `/proc/net/dev`: every interface of the reader's namespace, by name.
pub fn parse_net_dev(text: &str) -> HashMap<String, NetCounters> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            if f.len() < 12 {
                return None;
            }
            Some((
                name.trim().to_string(),
                NetCounters {
                    rx_bytes: f[0],
                    rx_packets: f[1],
                    rx_errs: f[2],
                    rx_drop: f[3],
                    tx_bytes: f[8],
                    tx_packets: f[9],
                    tx_errs: f[10],
                    tx_drop: f[11],
                },
            ))
        })
        .collect()
}

/// `/proc/partitions`: block device names by `major:minor`.
pub fn parse_partitions(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                [major, minor, _, name] if major.parse::<u32>().is_ok() => {
                    Some((format!("{major}:{minor}"), name.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

/// A mount of the host: where, what, of which type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mountpoint: PathBuf,
    pub source: String,
    pub fstype: String,
}

/// `/proc/self/mountinfo`, in order (a later mount over the same place wins).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mountpoint = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?.to_string();
            let source = right.next()?.to_string();
            Some(Mount {
                mountpoint: PathBuf::from(unescape_octal(mountpoint)),
                source: unescape_octal(&source),
                fstype,
            })
        })
        .collect()
}

/// mountinfo's `\040`-style escapes undone.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = (b[i] == b'\\' && i + 4 <= b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 4]).ok())
            .flatten()
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount that holds `path`: the last of those whose mountpoint is the longest prefix.
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts.iter().filter(|m| path.starts_with(&m.mountpoint)) {
        if best.is_none_or(|b| m.mountpoint.as_os_str().len() >= b.mountpoint.as_os_str().len()) {
            best = Some(m);
        }
    }
    best
}

/// Sizes of the filesystem holding a path, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    pub avail: u64,
    pub free: u64,
    pub size: u64,
}

/// `statfs` of `path` (one system call, no mount or namespace entered).
pub fn fs_usage(path: &Path) -> Option<FsUsage> {
    let s = nix::sys::statfs::statfs(path).ok()?;
    let bs = s.block_size() as u64;
    Some(FsUsage {
        avail: s.blocks_available() * bs,
        free: s.blocks_free() * bs,
        size: s.blocks() * bs,
    })
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_mem_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What the daemon's own process uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessStats {
    pub threads: u64,
    pub resident_bytes: u64,
    pub open_fds: u64,
}

/// `Threads:` and `VmRSS:` of a `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:") * 1024)
}

/// The daemon's threads, resident memory and open descriptors, from `proc` (`/proc/self`).
pub fn process_stats(proc: &Path) -> ProcessStats {
    let (threads, resident_bytes) = std::fs::read_to_string(proc.join("status"))
        .map(|t| parse_status(&t))
        .unwrap_or_default();
    let open_fds = std::fs::read_dir(proc.join("fd")).map_or(0, |d| d.count() as u64);
    ProcessStats {
        threads,
        resident_bytes,
        open_fds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  123456     100    0    0    0     0          0         0   123456     100    0    0    0     0       0          0
vethab12:    1000      10    1    2    0     0          0         0     2000      20    3    4    0     0       0          0
";

    #[test]
    fn net_dev_is_read_by_interface() {
        let got = parse_net_dev(NET_DEV);
        assert_eq!(got.len(), 2);
        let v = &got["vethab12"];
        assert_eq!(
            v,
            &NetCounters {
                rx_bytes: 1000,
                rx_packets: 10,
                rx_errs: 1,
                rx_drop: 2,
                tx_bytes: 2000,
                tx_packets: 20,
                tx_errs: 3,
                tx_drop: 4,
            }
        );
        let inside = v.swapped();
        assert_eq!((inside.rx_bytes, inside.tx_bytes), (2000, 1000));
        assert_eq!((inside.rx_drop, inside.tx_errs), (4, 1));
    }

    #[test]
    fn partitions_name_devices() {
        let got = parse_partitions(
            "major minor  #blocks  name\n\n   7        0    8927397 loop0\n 254        0  268435456 vda\n",
        );
        assert_eq!(got["254:0"], "vda");
        assert_eq!(got["7:0"], "loop0");
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn the_mount_of_a_path_is_the_longest_prefix() {
        let mounts = parse_mountinfo(
            "22 1 254:1 / / rw - ext4 /dev/vda1 rw\n\
             90 22 7:3 / /var/lib/hutch/storage-pools/default rw,nosuid - btrfs /dev/loop3 rw\n\
             91 22 0:50 / /mnt/with\\040space rw - tmpfs tmpfs rw\n",
        );
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[2].mountpoint, Path::new("/mnt/with space"));
        let m = mount_of(
            &mounts,
            Path::new("/var/lib/hutch/storage-pools/default/containers/c1"),
        )
        .unwrap();
        assert_eq!(
            (m.source.as_str(), m.fstype.as_str()),
            ("/dev/loop3", "btrfs")
        );
        assert_eq!(mount_of(&mounts, Path::new("/etc")).unwrap().fstype, "ext4");
    }

    #[test]
    fn small_files_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 10, 8191, 8192, 8193, 40000] {
            let p = dir.path().join(format!("f{len}"));
            let text: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            std::fs::write(&p, &text).unwrap();
            assert_eq!(read_small(&p).as_deref(), Some(text.as_str()), "{len}");
        }
        assert_eq!(read_small(&dir.path().join("missing")), None);
        assert!(read_small(Path::new("/proc/self/status"))
            .unwrap()
            .contains("Threads:"));
    }

    #[test]
    fn host_memory_and_process_figures_are_read() {
        assert_eq!(
            parse_mem_total("MemTotal:       24683584 kB\nMemFree: 1 kB\n"),
            Some(24683584 * 1024)
        );
        assert_eq!(
            parse_status("Name:\thutchd\nVmRSS:\t   20480 kB\nThreads:\t9\n"),
            (9, 20480 * 1024)
        );
        let me = process_stats(Path::new("/proc/self"));
        assert!(
            me.threads >= 1 && me.open_fds >= 1 && me.resident_bytes > 0,
            "{me:?}"
        );
    }
}
