//! Debian by debootstrap (minbase with systemd, systemd-resolved, dbus and iproute2), made
//! into a container image: systemd as init, DHCP on eth0 by systemd-networkd, DNS servers and
//! search domain from the lease by systemd-resolved, no units for hardware a container lacks,
//! no per-machine identity. debootstrap's result can be cached as a
//! tarball (the test suite's `$HUTCH_TEST_CACHE` layout), so later builds skip it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use nix::fcntl::{Flock, FlockArg};

use super::files::remove_tree;
use super::{dpkg_architecture, require_tool, run, BuildError, BuildOptions, Variant};

const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// A Debian release the builder knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianRelease {
    codename: &'static str,
    version: &'static str,
}

const RELEASES: [(&str, &str); 3] = [("bullseye", "11"), ("bookworm", "12"), ("trixie", "13")];

impl DebianRelease {
    pub fn codename(&self) -> &'static str {
        self.codename
    }

    pub fn version(&self) -> &'static str {
        self.version
    }
}

impl FromStr for DebianRelease {
    type Err = BuildError;

    /// `12` or `bookworm`.
    fn from_str(s: &str) -> Result<Self, BuildError> {
        RELEASES
            .iter()
            .find(|(c, v)| *c == s || *v == s)
            .map(|&(codename, version)| DebianRelease { codename, version })
            .ok_or_else(|| {
                BuildError::Invalid(format!(
                    "unknown Debian release {s:?} (11, 12, 13 or bullseye, bookworm, trixie)"
                ))
            })
    }
}

/// Packages on top of minbase: systemd as init, and what its networking needs (bookworm
/// splits systemd-resolved out of systemd).
fn packages(variant: Variant) -> Vec<&'static str> {
    let mut p = vec![
        "systemd",
        "systemd-sysv",
        "systemd-resolved",
        "dbus",
        "iproute2",
    ];
    if variant == Variant::Cloud {
        p.push("cloud-init");
    }
    p
}

/// The revision of the cache's contents, in its file name: bumped with `packages`, so that a
/// cache made with fewer packages is not reused (`tests/images/debian.sh` writes the same).
const CACHE_REVISION: &str = "r2";

/// The file name of the cached debootstrap result.
fn cache_name(release: &DebianRelease, ext: &str) -> String {
    format!(
        "debian-{}-{}-{CACHE_REVISION}.tar.{ext}",
        release.version,
        dpkg_architecture()
    )
}

/// The cache tarball of debootstrap's result, if the cache holds one.
fn cached_tarball(cache: &Path, release: &DebianRelease) -> Option<PathBuf> {
    ["zst", "gz"]
        .iter()
        .map(|ext| cache.join(cache_name(release, ext)))
        .find(|p| p.metadata().is_ok_and(|m| m.len() > 0))
}

const TAR_OPTS: [&str; 3] = ["--numeric-owner", "--xattrs", "--xattrs-include=*"];

/// debootstrap into `root`, or unpack the cached result. With a cache that lacks it, the
/// result is cached (written aside and renamed, under the lock the test suite's
/// `debian.sh` takes, so concurrent builders debootstrap once).
pub fn build_rootfs(
    root: &Path,
    release: &DebianRelease,
    opts: &BuildOptions,
    work: &Path,
) -> Result<(), BuildError> {
    require_tool("tar", "tar")?;
    let lock = match &opts.debootstrap_cache {
        Some(cache) => {
            fs::create_dir_all(cache).map_err(|e| BuildError::io("create", cache, e))?;
            Some(lock_cache(cache)?)
        }
        None => None,
    };
    if let Some(tarball) = opts
        .debootstrap_cache
        .as_deref()
        .and_then(|c| cached_tarball(c, release))
    {
        drop(lock);
        fs::create_dir(root).map_err(|e| BuildError::io("create", root, e))?;
        let compress = if tarball.extension().is_some_and(|e| e == "zst") {
            "--zstd"
        } else {
            "--gzip"
        };
        return run(
            Command::new("tar")
                .arg("-C")
                .arg(root)
                .args(TAR_OPTS)
                .arg(compress)
                .arg("-xpf")
                .arg(&tarball),
            &format!("unpacking the cached debootstrap {}", tarball.display()),
        );
    }
    require_tool("debootstrap", "debootstrap")?;
    let mirror = if opts.mirror.is_empty() {
        DEFAULT_MIRROR
    } else {
        &opts.mirror
    };
    let result = run(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", packages(opts.variant).join(",")))
            .arg(format!("--arch={}", dpkg_architecture()))
            .arg(release.codename)
            .arg(root)
            .arg(mirror),
        &format!("debootstrap {} from {mirror}", release.codename),
    );
    if let Err(e) = result {
        let _ = remove_tree(root);
        return Err(e);
    }
    if let Some(cache) = &opts.debootstrap_cache {
        let (ext, compress) = if require_tool("zstd", "zstd").is_ok() {
            ("zst", "--zstd")
        } else {
            ("gz", "--gzip")
        };
        let name = cache_name(release, ext);
        let aside = work.join(&name);
        run(
            Command::new("tar")
                .arg("-C")
                .arg(root)
                .args(TAR_OPTS)
                .arg(compress)
                .arg("-cf")
                .arg(&aside)
                .arg("."),
            "caching debootstrap's result",
        )?;
        // Same filesystem or not: copy next to the cache, then rename into place.
        let tmp = cache.join(format!(".{name}.{}", std::process::id()));
        fs::copy(&aside, &tmp).map_err(|e| BuildError::io("write", &tmp, e))?;
        fs::rename(&tmp, cache.join(&name)).map_err(|e| BuildError::io("rename", &tmp, e))?;
        let _ = fs::remove_file(&aside);
    }
    drop(lock);
    Ok(())
}

/// An exclusive lock on the cache, held until the returned value drops.
fn lock_cache(cache: &Path) -> Result<Flock<fs::File>, BuildError> {
    let path = cache.join(".debian.lock");
    let file = fs::File::create(&path).map_err(|e| BuildError::io("create", &path, e))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| BuildError::io("lock", &path, errno.into()))
}

/// Units for hardware or host facilities a container does not have: masked.
const MASKED_UNITS: [&str; 7] = [
    "systemd-journald-audit.socket",
    "getty@tty1.service",
    "systemd-modules-load.service",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "dev-hugepages.mount",
];

/// systemd-networkd's configuration: DHCP on eth0, the lease's domain as search domain (off
/// by default in networkd), so that a bare name `peer` is looked up as `peer.<domain>`.
pub const ETH0_NETWORK: &str =
    "[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n\n[DHCPv4]\nUseDomains=yes\n";

/// Where /etc/resolv.conf points: systemd-resolved's stub, with the search domains from
/// the lease (the link Debian's systemd-resolved package makes).
pub const RESOLV_CONF_LINK: &str = "../run/systemd/resolve/stub-resolv.conf";

/// Makes a debootstrapped tree a container image: networkd with DHCP on eth0 and resolved
/// (enabled as `systemctl enable` would), resolv.conf resolved's, container-irrelevant units
/// masked, no machine identity, apt's caches emptied. Plain file operations: no chroot, no
/// root.
pub fn configure_debian(root: &Path, variant: Variant) -> Result<(), BuildError> {
    let units = root.join("lib/systemd/system");
    if !units.join("systemd-networkd.service").exists() {
        return Err(BuildError::Invalid(format!(
            "{} has no systemd-networkd: not a Debian tree with systemd",
            root.display()
        )));
    }
    if !units.join("systemd-resolved.service").exists() {
        return Err(BuildError::Invalid(format!(
            "{} has no systemd-resolved: debootstrap it with the package",
            root.display()
        )));
    }
    if variant == Variant::Cloud && !root.join("usr/bin/cloud-init").exists() {
        return Err(BuildError::Invalid(
            "the cloud variant needs cloud-init in the tree: build it from a mirror, not a cache without it".into(),
        ));
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| BuildError::io("write", &p, e)
    };
    let write = |rel: &str, content: &str| -> Result<(), BuildError> {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let _ = fs::remove_file(&p);
        fs::write(&p, content).map_err(io(&p))
    };
    let link = |rel: &str, target: &str| -> Result<(), BuildError> {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let _ = fs::remove_file(&p);
        symlink(target, &p).map_err(io(&p))
    };

    write("etc/systemd/network/eth0.network", ETH0_NETWORK)?;
    let etc_units = "etc/systemd/system";
    link(
        &format!("{etc_units}/multi-user.target.wants/systemd-networkd.service"),
        "/lib/systemd/system/systemd-networkd.service",
    )?;
    link(
        &format!("{etc_units}/dbus-org.freedesktop.network1.service"),
        "/lib/systemd/system/systemd-networkd.service",
    )?;
    if units.join("systemd-networkd.socket").exists() {
        link(
            &format!("{etc_units}/sockets.target.wants/systemd-networkd.socket"),
            "/lib/systemd/system/systemd-networkd.socket",
        )?;
    }
    if units.join("systemd-networkd-wait-online.service").exists() {
        link(
            &format!(
                "{etc_units}/network-online.target.wants/systemd-networkd-wait-online.service"
            ),
            "/lib/systemd/system/systemd-networkd-wait-online.service",
        )?;
    }
    link(
        &format!("{etc_units}/sysinit.target.wants/systemd-resolved.service"),
        "/lib/systemd/system/systemd-resolved.service",
    )?;
    link(
        &format!("{etc_units}/dbus-org.freedesktop.resolve1.service"),
        "/lib/systemd/system/systemd-resolved.service",
    )?;
    for unit in MASKED_UNITS {
        link(&format!("{etc_units}/{unit}"), "/dev/null")?;
    }
    // Per-machine identity: systemd makes a machine id at first boot; the hostname and
    // hosts templates write these two at create.
    write("etc/machine-id", "")?;
    let _ = fs::remove_file(root.join("var/lib/dbus/machine-id"));
    write("etc/hostname", "")?;
    write(
        "etc/hosts",
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n",
    )?;
    // Not the build host's, which debootstrap copies in.
    link("etc/resolv.conf", RESOLV_CONF_LINK)?;
    for dir in ["var/lib/apt/lists", "var/cache/apt/archives"] {
        let Ok(entries) = fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_file() && p.file_name().is_some_and(|n| n != "lock") {
                let _ = fs::remove_file(p);
            }
        }
    }
    for bin in ["pkgcache.bin", "srcpkgcache.bin"] {
        let _ = fs::remove_file(root.join("var/cache/apt").join(bin));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_by_number_or_codename() {
        let r: DebianRelease = "12".parse().unwrap();
        assert_eq!((r.codename(), r.version()), ("bookworm", "12"));
        assert_eq!("bookworm".parse::<DebianRelease>().unwrap(), r);
        assert!("sid".parse::<DebianRelease>().is_err());
        assert!(packages(Variant::Default).contains(&"systemd-resolved"));
        assert!(packages(Variant::Cloud).contains(&"cloud-init"));
        assert!(!packages(Variant::Default).contains(&"cloud-init"));
    }

    /// A tree shaped as debootstrap leaves one, enough for `configure_debian`.
    fn fake_debian(root: &Path) {
        let units = root.join("lib/systemd/system");
        fs::create_dir_all(&units).unwrap();
        for u in [
            "systemd-networkd.service",
            "systemd-networkd.socket",
            "systemd-networkd-wait-online.service",
            "systemd-resolved.service",
        ] {
            fs::write(units.join(u), "[Unit]\n").unwrap();
        }
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/hostname"), "buildhost\n").unwrap();
        fs::write(root.join("etc/resolv.conf"), "nameserver 192.0.2.1\n").unwrap();
        fs::write(root.join("etc/machine-id"), "0123\n").unwrap();
        fs::create_dir_all(root.join("var/lib/apt/lists")).unwrap();
        fs::write(root.join("var/lib/apt/lists/deb_Packages"), "x").unwrap();
        fs::write(root.join("var/lib/apt/lists/lock"), "").unwrap();
    }

    #[test]
    fn configuration_enables_networkd_dhcp_resolved_and_strips_identity() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_debian(root);
        configure_debian(root, Variant::Default).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("etc/systemd/network/eth0.network")).unwrap(),
            ETH0_NETWORK
        );
        let wants =
            root.join("etc/systemd/system/multi-user.target.wants/systemd-networkd.service");
        assert_eq!(
            fs::read_link(wants).unwrap(),
            Path::new("/lib/systemd/system/systemd-networkd.service")
        );
        assert!(root
            .join("etc/systemd/system/sockets.target.wants/systemd-networkd.socket")
            .symlink_metadata()
            .is_ok());
        assert_eq!(
            fs::read_link(root.join("etc/systemd/system/getty@tty1.service")).unwrap(),
            Path::new("/dev/null")
        );
        assert_eq!(fs::read_to_string(root.join("etc/machine-id")).unwrap(), "");
        assert_eq!(fs::read_to_string(root.join("etc/hostname")).unwrap(), "");
        assert!(ETH0_NETWORK.contains("UseDomains=yes"));
        assert_eq!(
            fs::read_link(root.join("etc/resolv.conf")).unwrap(),
            Path::new(RESOLV_CONF_LINK)
        );
        assert_eq!(
            fs::read_link(
                root.join("etc/systemd/system/sysinit.target.wants/systemd-resolved.service")
            )
            .unwrap(),
            Path::new("/lib/systemd/system/systemd-resolved.service")
        );
        assert!(root
            .join("etc/systemd/system/dbus-org.freedesktop.resolve1.service")
            .symlink_metadata()
            .is_ok());
        assert!(!root.join("var/lib/apt/lists/deb_Packages").exists());
        assert!(root.join("var/lib/apt/lists/lock").exists());
        // Twice is the same as once.
        configure_debian(root, Variant::Default).unwrap();

        let err = configure_debian(root, Variant::Cloud)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cloud-init"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        assert!(configure_debian(empty.path(), Variant::Default).is_err());
        fs::remove_file(root.join("lib/systemd/system/systemd-resolved.service")).unwrap();
        let err = configure_debian(root, Variant::Default)
            .unwrap_err()
            .to_string();
        assert!(err.contains("systemd-resolved"), "{err}");
    }

    #[test]
    fn the_cache_is_found_in_the_test_suites_layout() {
        let dir = tempfile::tempdir().unwrap();
        let r: DebianRelease = "12".parse().unwrap();
        assert_eq!(cached_tarball(dir.path(), &r), None);
        let name = format!("debian-12-{}-{CACHE_REVISION}.tar.zst", dpkg_architecture());
        let older = format!("debian-12-{}.tar.zst", dpkg_architecture());
        fs::write(dir.path().join(older), b"data").unwrap();
        assert_eq!(
            cached_tarball(dir.path(), &r),
            None,
            "a cache of another revision"
        );
        fs::write(dir.path().join(&name), b"").unwrap();
        assert_eq!(
            cached_tarball(dir.path(), &r),
            None,
            "an empty file is no cache"
        );
        fs::write(dir.path().join(&name), b"data").unwrap();
        assert_eq!(cached_tarball(dir.path(), &r), Some(dir.path().join(name)));
    }
}
