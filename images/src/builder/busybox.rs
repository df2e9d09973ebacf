//! A busybox-init root filesystem from the host's static busybox (Debian's busybox-static):
//! one relative symlink per applet, an inittab that runs `/etc/init.d/rcS`, and DHCP on
//! every NIC by `udhcpc`.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use super::BuildError;

const HOST_BUSYBOX: &str = "/bin/busybox";

const INITTAB: &str = "::sysinit:/etc/init.d/rcS\n::shutdown:/bin/sync\n";

const RCS: &str = r#"#!/bin/sh
# The runtime has mounted /proc, /sys, /dev and /run already.
ip link set lo up 2>/dev/null
# DHCP on every NIC; udhcpc goes to the background once it has a lease (or after a few
# tries) and keeps renewing it.
for dev in /sys/class/net/*; do
    dev=${dev##*/}
    [ "$dev" = lo ] && continue
    udhcpc -i "$dev" -b -t 5 -T 1 -A 1 -x "hostname:$(hostname)" -s /etc/udhcpc.script >/dev/null 2>&1
done
exit 0
"#;

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# udhcpc's hook: applies a lease to $interface (busybox passes ip, mask, router, dns, domain).
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound | renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    : >/etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
    for s in $dns; do echo "nameserver $s" >>/etc/resolv.conf; done
    ;;
esac
exit 0
"#;

/// True when `elf` has no program interpreter (a static executable).
pub fn is_static_elf(elf: &[u8]) -> bool {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[5] != 1 {
        return false; // not a little-endian ELF
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let (phoff, phentsize, phnum) = match elf[4] {
        2 => (
            u64::from_le_bytes(elf[32..40].try_into().unwrap()) as usize,
            u16_at(54),
            u16_at(56),
        ),
        1 => (
            u32::from_le_bytes(elf[28..32].try_into().unwrap()) as usize,
            u16_at(42),
            u16_at(44),
        ),
        _ => return false,
    };
    const PT_INTERP: u32 = 3;
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        elf.get(o..o + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != PT_INTERP)
    })
}

/// Where an applet's symlink points, relative, so it resolves inside the container.
fn applet_target(path: &str) -> Option<&'static str> {
    match path.split('/').count() {
        2 if path.starts_with("bin/") => Some("busybox"),
        2 if path.starts_with("sbin/") => Some("../bin/busybox"),
        3 if path.starts_with("usr/bin/") || path.starts_with("usr/sbin/") => {
            Some("../../bin/busybox")
        }
        _ => None,
    }
}

/// Builds the rootfs at `root` (which must not exist); returns busybox's version.
pub fn build_rootfs(root: &Path) -> Result<String, BuildError> {
    let missing = BuildError::MissingTool {
        tool: "a static /bin/busybox",
        package: "busybox-static",
    };
    let binary = fs::read(HOST_BUSYBOX).map_err(|_| missing)?;
    if !is_static_elf(&binary) {
        return Err(BuildError::MissingTool {
            tool: "a static /bin/busybox (this one is dynamic)",
            package: "busybox-static",
        });
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| BuildError::io("write", &p, e)
    };
    for d in [
        "bin",
        "sbin",
        "etc/init.d",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "root",
        "var/log",
        "usr/bin",
        "usr/sbin",
        "home",
    ] {
        let p = root.join(d);
        fs::create_dir_all(&p).map_err(io(&p))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).map_err(io(root))?;
    fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700)).map_err(io(root))?;
    let bb = root.join("bin/busybox");
    fs::write(&bb, &binary).map_err(io(&bb))?;
    fs::set_permissions(&bb, fs::Permissions::from_mode(0o755)).map_err(io(&bb))?;

    let list = Command::new(HOST_BUSYBOX)
        .arg("--list-full")
        .output()
        .map_err(|e| BuildError::io("run", Path::new(HOST_BUSYBOX), e))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = root.join(applet);
        if link.symlink_metadata().is_ok() {
            continue; // bin/busybox itself
        }
        if let Some(target) = applet_target(applet) {
            symlink(target, &link).map_err(io(&link))?;
        }
    }
    let init = root.join("sbin/init");
    let _ = fs::remove_file(&init);
    symlink("../bin/busybox", &init).map_err(io(&init))?;

    let files: [(&str, &str, u32); 8] = [
        ("etc/inittab", INITTAB, 0o644),
        ("etc/init.d/rcS", RCS, 0o755),
        ("etc/udhcpc.script", UDHCPC_SCRIPT, 0o755),
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            0o644,
        ),
        (
            "etc/group",
            "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
            0o644,
        ),
        // The hostname and hosts templates fill these at create.
        ("etc/hostname", "", 0o644),
        ("etc/hosts", "127.0.0.1\tlocalhost\n", 0o644),
        (
            "etc/os-release",
            "ID=busybox\nNAME=\"BusyBox\"\nPRETTY_NAME=\"BusyBox (built by hutch)\"\n",
            0o644,
        ),
    ];
    for (rel, content, mode) in files {
        let p = root.join(rel);
        fs::write(&p, content).map_err(io(&p))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(io(&p))?;
    }
    let help = Command::new(HOST_BUSYBOX).output().ok();
    let version = help
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .and_then(|text| {
            let first = text.lines().next()?.to_string();
            let v = first.split_whitespace().nth(1)?.trim_start_matches('v');
            Some(v.to_string())
        })
        .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'))
        .unwrap_or_else(|| "latest".to_string());
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_links_are_relative_to_their_directory() {
        assert_eq!(applet_target("bin/sh"), Some("busybox"));
        assert_eq!(applet_target("sbin/ip"), Some("../bin/busybox"));
        assert_eq!(applet_target("usr/bin/env"), Some("../../bin/busybox"));
        assert_eq!(applet_target("linuxrc"), None);
        assert_eq!(applet_target("etc/x/y"), None);
    }

    #[test]
    fn static_and_dynamic_executables_are_told_apart() {
        // /bin/sh is dynamic on every Debian host.
        let sh = fs::read("/bin/sh").unwrap();
        assert!(!is_static_elf(&sh));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        if let Ok(bb) = fs::read(HOST_BUSYBOX) {
            // Debian's busybox-static, when installed, is static; its "busybox" is not.
            let _ = is_static_elf(&bb);
        }
    }

    #[test]
    fn the_rootfs_builds_without_root_and_its_busybox_runs() {
        if !Path::new(HOST_BUSYBOX).exists() {
            eprintln!("skipping: no {HOST_BUSYBOX}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        let version = build_rootfs(&root).unwrap();
        assert!(version.chars().next().unwrap().is_ascii_digit() || version == "latest");
        assert_eq!(
            fs::read_link(root.join("sbin/init")).unwrap(),
            Path::new("../bin/busybox")
        );
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert!(Command::new(root.join("bin/busybox"))
            .arg("true")
            .status()
            .unwrap()
            .success());
        let mode = fs::metadata(root.join("tmp")).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o1777);
    }
}
