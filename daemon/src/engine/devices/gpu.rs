//! GPU devices (`gputype=physical`): the host's display controllers found through
//! /sys/bus/pci, chosen by `id` (DRM card number), `pci`, `vendorid` and `productid`, and
//! passed in as device nodes (`unix`): each card's DRM nodes (/dev/dri/cardN, renderDN),
//! and for NVIDIA its /dev/nvidiaN and the driver's shared nodes. With the instance key
//! `nvidia.runtime`, the host's driver libraries and `nvidia-smi` are mounted read-only.
//! What the host has is read behind [`GpuHost`], so tests fake it.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use hutch_runtime::BindMount;

use super::unix::{owner, Node};
use super::validate::{invalid, opt as o, Kind, Opt};
use super::{opt, Options};
use crate::error::{DaemonError, Result};

/// The options of `gpu` devices.
pub(super) const OPTIONS: &[Opt] = &[
    o("type", Kind::Any),
    o("gputype", Kind::GpuType),
    o("id", Kind::Number),
    o("pci", Kind::Any),
    o("vendorid", Kind::Hex),
    o("productid", Kind::Hex),
    o("uid", Kind::Number),
    o("gid", Kind::Number),
    o("mode", Kind::Mode),
];

/// Options LXD knows for GPUs of other types, which hutch does not implement.
pub(super) const UNSUPPORTED: &[&str] = &["mdev", "mig.", "parent"];

/// The NVIDIA driver's nodes every NVIDIA card needs, beside its own /dev/nvidiaN.
const NVIDIA_SHARED: &[&str] = &[
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
];

const NVIDIA_VENDOR: &str = "10de";

/// What the host has, read from /sys, /proc, /dev and `ldconfig -p`.
pub(super) trait GpuHost {
    /// The names in a directory, sorted; none when it is missing.
    fn list(&self, dir: &Path) -> Vec<String>;
    /// A file's text.
    fn read(&self, path: &Path) -> Option<String>;
    /// The numbers of the character device node at `path`.
    fn char_node(&self, path: &Path) -> Option<(u32, u32)>;
    /// Whether a file exists.
    fn exists(&self, path: &Path) -> bool;
    /// What `ldconfig -p` prints.
    fn ldconfig(&self) -> String;
}

/// The real host.
pub(super) struct SysHost;

impl GpuHost for SysHost {
    fn list(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    fn char_node(&self, path: &Path) -> Option<(u32, u32)> {
        let m = std::fs::metadata(path).ok()?;
        m.file_type()
            .is_char_device()
            .then(|| (libc::major(m.rdev()), libc::minor(m.rdev())))
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn ldconfig(&self) -> String {
        ["ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"]
            .iter()
            .find_map(|p| std::process::Command::new(p).arg("-p").output().ok())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// One display controller of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Gpu {
    /// PCI address (`0000:01:00.0`).
    pub pci: String,
    /// Vendor and product ids, 4 lower-case hex digits.
    pub vendor: String,
    pub product: String,
    /// DRM card number, when a DRM driver drives it.
    pub drm_id: Option<u32>,
    /// Its DRM nodes (/dev/dri/card0, /dev/dri/renderD128).
    pub drm_nodes: Vec<PathBuf>,
    /// The minor of /dev/nvidiaN, for cards the NVIDIA driver drives.
    pub nvidia_minor: Option<u32>,
}

fn hex_id(text: Option<String>) -> String {
    let t = text.unwrap_or_default();
    t.trim().trim_start_matches("0x").to_ascii_lowercase()
}

/// The display controllers (PCI class 0x03) of the host.
pub(super) fn discover(host: &dyn GpuHost) -> Vec<Gpu> {
    let bus = Path::new("/sys/bus/pci/devices");
    let mut out = Vec::new();
    for addr in host.list(bus) {
        let base = bus.join(&addr);
        let class = host.read(&base.join("class")).unwrap_or_default();
        if !class.trim().starts_with("0x03") {
            continue;
        }
        let mut gpu = Gpu {
            pci: addr.clone(),
            vendor: hex_id(host.read(&base.join("vendor"))),
            product: hex_id(host.read(&base.join("device"))),
            drm_id: None,
            drm_nodes: Vec::new(),
            nvidia_minor: None,
        };
        for n in host.list(&base.join("drm")) {
            if let Some(id) = n.strip_prefix("card").and_then(|i| i.parse().ok()) {
                gpu.drm_id = Some(id);
                gpu.drm_nodes.push(Path::new("/dev/dri").join(&n));
            } else if n.starts_with("renderD") {
                gpu.drm_nodes.push(Path::new("/dev/dri").join(&n));
            }
        }
        if gpu.vendor == NVIDIA_VENDOR {
            let info = Path::new("/proc/driver/nvidia/gpus")
                .join(&addr)
                .join("information");
            gpu.nvidia_minor = host.read(&info).and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("Device Minor:"))
                    .and_then(|v| v.trim().parse().ok())
            });
        }
        out.push(gpu);
    }
    out
}

/// A PCI address with its domain (`01:00.0` is `0000:01:00.0`), lower-case.
fn full_pci(addr: &str) -> String {
    let a = addr.trim().to_ascii_lowercase();
    if a.matches(':').count() == 1 {
        format!("0000:{a}")
    } else {
        a
    }
}

/// Whether `gpu` is one device `dev` asks for (every filter set must match).
fn matches(gpu: &Gpu, dev: &Options) -> bool {
    let id_ok =
        opt(dev, "id").is_none_or(|id| gpu.drm_id.map(|d| d.to_string()).as_deref() == Some(id));
    let pci_ok = opt(dev, "pci").is_none_or(|p| full_pci(p) == full_pci(&gpu.pci));
    let vendor_ok = opt(dev, "vendorid").is_none_or(|v| v.to_ascii_lowercase() == gpu.vendor);
    let product_ok = opt(dev, "productid").is_none_or(|v| v.to_ascii_lowercase() == gpu.product);
    id_ok && pci_ok && vendor_ok && product_ok
}

/// The device nodes GPU device `devname` passes in: those of every matching card. A host
/// without a matching card is an error naming what was asked for.
pub(super) fn nodes(host: &dyn GpuHost, devname: &str, dev: &Options) -> Result<Vec<Node>> {
    if let Some(t) = opt(dev, "gputype").filter(|t| *t != "physical") {
        return Err(invalid(
            devname,
            format!("gputype {t:?} is not supported by hutch (only physical)"),
        ));
    }
    let gpus: Vec<Gpu> = discover(host)
        .into_iter()
        .filter(|g| matches(g, dev))
        .collect();
    if gpus.is_empty() {
        let asked: Vec<String> = ["id", "pci", "vendorid", "productid"]
            .iter()
            .filter_map(|k| opt(dev, k).map(|v| format!("{k}={v}")))
            .collect();
        return Err(invalid(
            devname,
            match asked.is_empty() {
                true => "no GPU found on this host".into(),
                false => format!("no GPU matching {} found on this host", asked.join(" ")),
            },
        ));
    }
    let (uid, gid, mode) = owner(devname, dev)?;
    let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
    for g in &gpus {
        paths.extend(g.drm_nodes.iter().cloned());
        if let Some(minor) = g.nvidia_minor {
            paths.insert(PathBuf::from(format!("/dev/nvidia{minor}")));
        }
        if g.vendor == NVIDIA_VENDOR {
            paths.extend(NVIDIA_SHARED.iter().map(PathBuf::from));
        }
    }
    let mut out = Vec::new();
    for p in paths {
        // A node the driver did not make (nvidia-modeset without modesetting) is skipped.
        if let Some((major, minor)) = host.char_node(&p) {
            out.push(Node {
                target: p,
                block: false,
                major,
                minor,
                uid,
                gid,
                mode,
            });
        }
    }
    if out.is_empty() {
        return Err(invalid(
            devname,
            "the matching GPU has no device nodes (is its driver loaded?)".into(),
        ));
    }
    Ok(out)
}

/// `nvidia.runtime`: the host's NVIDIA driver libraries (`libnvidia*` and `libcuda*` as
/// `ldconfig -p` lists them) and `nvidia-smi`, each mounted read-only at its own path.
/// LXD asks nvidia-container-cli for this list; hutch reads the linker cache, so a
/// library outside it (and the firmware) is not passed.
pub(super) fn nvidia_runtime_mounts(host: &dyn GpuHost) -> Result<Vec<BindMount>> {
    let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
    for line in host.ldconfig().lines() {
        let Some((name, path)) = line.split_once("=>") else {
            continue;
        };
        let name = name.trim();
        if name.starts_with("libnvidia") || name.starts_with("libcuda") {
            let p = PathBuf::from(path.trim());
            if p.is_absolute() && host.exists(&p) {
                paths.insert(p);
            }
        }
    }
    for bin in ["/usr/bin/nvidia-smi"] {
        if host.exists(Path::new(bin)) {
            paths.insert(PathBuf::from(bin));
        }
    }
    if paths.is_empty() {
        return Err(DaemonError::BadRequest(
            "nvidia.runtime: no NVIDIA driver (libnvidia*, libcuda* or nvidia-smi) found on the host"
                .into(),
        ));
    }
    Ok(paths
        .into_iter()
        .map(|p| BindMount {
            source: p.clone(),
            target: p,
            readonly: true,
            idmapped: false,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A host of files and nodes given as tables.
    #[derive(Default)]
    struct FakeHost {
        files: BTreeMap<PathBuf, String>,
        nodes: BTreeMap<PathBuf, (u32, u32)>,
        ldconfig: String,
    }

    impl FakeHost {
        fn file(mut self, path: &str, text: &str) -> Self {
            self.files.insert(path.into(), text.into());
            self
        }
        fn node(mut self, path: &str, major: u32, minor: u32) -> Self {
            self.nodes.insert(path.into(), (major, minor));
            self
        }
        /// A display controller at `addr`, with DRM nodes `drm`.
        fn card(self, addr: &str, vendor: &str, product: &str, drm: &[&str]) -> Self {
            let base = format!("/sys/bus/pci/devices/{addr}");
            let mut h = self
                .file(&format!("{base}/class"), "0x030000\n")
                .file(&format!("{base}/vendor"), &format!("0x{vendor}\n"))
                .file(&format!("{base}/device"), &format!("0x{product}\n"));
            for n in drm {
                h = h.file(&format!("{base}/drm/{n}/dev"), "");
            }
            h
        }
    }

    impl GpuHost for FakeHost {
        fn list(&self, dir: &Path) -> Vec<String> {
            let names: BTreeSet<String> = self
                .files
                .keys()
                .filter_map(|p| p.strip_prefix(dir).ok())
                .filter_map(|rest| rest.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            names.into_iter().collect()
        }
        fn read(&self, path: &Path) -> Option<String> {
            self.files.get(path).cloned()
        }
        fn char_node(&self, path: &Path) -> Option<(u32, u32)> {
            self.nodes.get(path).copied()
        }
        fn exists(&self, path: &Path) -> bool {
            self.files.contains_key(path) || self.nodes.contains_key(path)
        }
        fn ldconfig(&self) -> String {
            self.ldconfig.clone()
        }
    }

    fn dev(pairs: &[(&str, &str)]) -> Options {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// An Intel card (card0, renderD128) and an NVIDIA one (card1, renderD129, minor 0).
    fn two_cards() -> FakeHost {
        FakeHost::default()
            .card("0000:00:02.0", "8086", "3e92", &["card0", "renderD128"])
            .card("0000:01:00.0", "10de", "2335", &["card1", "renderD129"])
            .file("/sys/bus/pci/devices/0000:00:1f.3/class", "0x040300\n")
            .file(
                "/proc/driver/nvidia/gpus/0000:01:00.0/information",
                "Model: NVIDIA H200\nDevice Minor: \t 0\n",
            )
            .node("/dev/dri/card0", 226, 0)
            .node("/dev/dri/renderD128", 226, 128)
            .node("/dev/dri/card1", 226, 1)
            .node("/dev/dri/renderD129", 226, 129)
            .node("/dev/nvidia0", 195, 0)
            .node("/dev/nvidiactl", 195, 255)
            .node("/dev/nvidia-uvm", 508, 0)
    }

    fn targets(nodes: &[Node]) -> Vec<String> {
        nodes
            .iter()
            .map(|n| n.target.display().to_string())
            .collect()
    }

    #[test]
    fn display_controllers_are_found_by_class() {
        let gpus = discover(&two_cards());
        assert_eq!(gpus.len(), 2, "{gpus:?}");
        assert_eq!(gpus[0].vendor, "8086");
        assert_eq!(gpus[0].drm_id, Some(0));
        assert_eq!(gpus[1].product, "2335");
        assert_eq!(gpus[1].nvidia_minor, Some(0));
        assert_eq!(gpus[0].nvidia_minor, None);
    }

    #[test]
    fn filters_choose_the_cards() {
        let h = two_cards();
        let intel = nodes(&h, "g", &dev(&[("type", "gpu"), ("vendorid", "8086")])).unwrap();
        assert_eq!(targets(&intel), ["/dev/dri/card0", "/dev/dri/renderD128"]);
        let nv = nodes(&h, "g", &dev(&[("type", "gpu"), ("pci", "01:00.0")])).unwrap();
        assert_eq!(
            targets(&nv),
            [
                "/dev/dri/card1",
                "/dev/dri/renderD129",
                "/dev/nvidia-uvm",
                "/dev/nvidia0",
                "/dev/nvidiactl"
            ]
        );
        assert_eq!(
            nv.iter()
                .find(|n| n.target.ends_with("nvidia0"))
                .unwrap()
                .major,
            195
        );
        let by_id = nodes(&h, "g", &dev(&[("type", "gpu"), ("id", "1")])).unwrap();
        assert_eq!(by_id, nv);
        let all = nodes(&h, "g", &dev(&[("type", "gpu"), ("mode", "0666")])).unwrap();
        assert_eq!(all.len(), 7);
        assert!(all
            .iter()
            .all(|n| n.mode == 0o666 && n.uid == 0 && !n.block));
    }

    #[test]
    fn no_matching_gpu_is_a_clear_error() {
        let h = two_cards();
        let err = nodes(&h, "g", &dev(&[("type", "gpu"), ("productid", "ffff")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no GPU matching productid=ffff"), "{err}");
        let err = nodes(&FakeHost::default(), "g", &dev(&[("type", "gpu")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no GPU found"), "{err}");
        let err = nodes(&h, "g", &dev(&[("type", "gpu"), ("gputype", "mig")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("only physical"), "{err}");
    }

    #[test]
    fn the_nvidia_runtime_mounts_the_driver_read_only() {
        let mut h = FakeHost::default()
            .file("/usr/lib/x86_64-linux-gnu/libcuda.so.1", "")
            .file("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1", "")
            .file("/usr/bin/nvidia-smi", "");
        h.ldconfig = "3 libs found in cache `/etc/ld.so.cache'\n\
            \tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1\n\
            \tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1\n\
            \tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6\n"
            .into();
        let m = nvidia_runtime_mounts(&h).unwrap();
        let t: Vec<String> = m.iter().map(|b| b.target.display().to_string()).collect();
        assert_eq!(
            t,
            [
                "/usr/bin/nvidia-smi",
                "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
                "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"
            ]
        );
        assert!(m.iter().all(|b| b.readonly && b.source == b.target));
        let err = nvidia_runtime_mounts(&FakeHost::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no NVIDIA driver"), "{err}");
    }
}
