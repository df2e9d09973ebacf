//! Tests of the mount plan and its safety checks.

use super::*;
use crate::idmap::IdMap;
use crate::spec::BindMount;

fn spec(privileged: bool) -> ContainerSpec {
    let idmap = (!privileged).then(|| IdMap::single(1_000_000, 65536));
    ContainerSpec::new("c1", "/r", idmap, "hutch/c1")
}

fn targets(ops: &[MountOp]) -> Vec<String> {
    ops.iter()
        .filter_map(|op| match op {
            MountOp::Mount { at, .. } | MountOp::Mkdir { at } => Some(at.display().to_string()),
            MountOp::Bind { target, .. } => Some(target.display().to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn unprivileged_plan_attaches_the_idmapped_tree_and_pivots_last() {
    let ops = plan(
        &spec(false),
        RootMount::IdmappedTree,
        Path::new("/dev/pts/7"),
        &[],
        true,
    );
    assert_eq!(ops[0], MountOp::MakeRslave);
    assert_eq!(ops[1], MountOp::AttachRootTree);
    assert_eq!(ops.last(), Some(&MountOp::PivotRoot));
    let t = targets(&ops);
    for want in [
        "proc",
        "sys",
        "dev",
        "dev/null",
        "dev/pts",
        "dev/console",
        "dev/shm",
        "run",
    ] {
        assert!(t.contains(&want.to_string()), "{want} missing from {t:?}");
    }
    assert!(!t.contains(&"proc/sys".to_string()));
    assert!(ops.contains(&MountOp::Bind {
        source: "/dev/pts/7".into(),
        target: "dev/console".into(),
        readonly: false
    }));
}

#[test]
fn sysfs_is_read_only() {
    let ops = plan(
        &spec(false),
        RootMount::IdmappedTree,
        Path::new("/dev/pts/0"),
        &[],
        false,
    );
    let sys = ops
        .iter()
        .find(|op| {
            matches!(
                op,
                MountOp::Mount {
                    fstype: "sysfs",
                    ..
                }
            )
        })
        .unwrap();
    let MountOp::Mount { flags, .. } = sys else {
        unreachable!()
    };
    assert!(flags.contains(MsFlags::MS_RDONLY));
    assert!(!targets(&ops).contains(&"run".to_string()));
}

#[test]
fn privileged_plan_binds_rootfs_and_protects_proc_sys() {
    let ops = plan(
        &spec(true),
        RootMount::Bind,
        Path::new("/dev/pts/0"),
        &[],
        false,
    );
    assert_eq!(ops[1], MountOp::BindRootfsOnItself);
    let ro = ops
        .iter()
        .position(|op| {
            *op == MountOp::ProtectReadOnly {
                at: "proc/sys".into(),
            }
        })
        .expect("/proc/sys read-only");
    let net = ops
        .iter()
        .position(|op| {
            *op == MountOp::ProtectWritable {
                at: "proc/sys/net".into(),
            }
        })
        .expect("/proc/sys/net writable");
    assert!(ro < net, "the namespaced part is made writable after");
}

#[test]
fn every_container_gets_sysrq_read_only_and_kcore_masked_after_proc() {
    for privileged in [false, true] {
        let root = if privileged {
            RootMount::Bind
        } else {
            RootMount::IdmappedTree
        };
        let ops = plan(&spec(privileged), root, Path::new("/dev/pts/0"), &[], false);
        let at = |want: &MountOp| ops.iter().position(|op| op == want);
        let proc = ops
            .iter()
            .position(|op| matches!(op, MountOp::Mount { fstype: "proc", .. }))
            .unwrap();
        let sysrq = at(&MountOp::ProtectReadOnly {
            at: "proc/sysrq-trigger".into(),
        })
        .expect("sysrq-trigger read-only");
        let kcore = at(&MountOp::Mask {
            at: "proc/kcore".into(),
        })
        .expect("kcore masked");
        assert!(proc < sysrq && proc < kcore);
        let MountOp::Mount { flags, .. } = &ops[proc] else {
            unreachable!()
        };
        let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        assert!(flags.contains(hardened));
        assert_eq!(
            ops.contains(&MountOp::ProtectReadOnly {
                at: "proc/sys".into()
            }),
            privileged
        );
    }
}

#[test]
fn cgroup_steps_land_under_sys_fs_cgroup_after_sysfs() {
    let steps = vec![
        CgroupMountStep::Tmpfs,
        CgroupMountStep::Bind {
            source: "/sys/fs/cgroup/memory/hutch/c1".into(),
            dir: "memory".into(),
        },
        CgroupMountStep::Symlink {
            name: "cpu".into(),
            target: "cpu,cpuacct".into(),
        },
        CgroupMountStep::Cgroup2 {
            dir: "unified".into(),
        },
        CgroupMountStep::ReadOnlyTmpfs,
    ];
    let ops = plan(
        &spec(false),
        RootMount::IdmappedTree,
        Path::new("/dev/pts/0"),
        &steps,
        false,
    );
    let sys_at = ops
        .iter()
        .position(|op| {
            matches!(
                op,
                MountOp::Mount {
                    fstype: "sysfs",
                    ..
                }
            )
        })
        .unwrap();
    let tmpfs_at = ops.iter().position(|op| matches!(op, MountOp::Mount { fstype: "tmpfs", at, .. } if at == Path::new("sys/fs/cgroup"))).unwrap();
    assert!(sys_at < tmpfs_at);
    assert!(ops.contains(&MountOp::Bind {
        source: "/sys/fs/cgroup/memory/hutch/c1".into(),
        target: "sys/fs/cgroup/memory".into(),
        readonly: false
    }));
    assert!(ops.contains(&MountOp::Symlink {
        at: "sys/fs/cgroup/cpu".into(),
        to: "cpu,cpuacct".into()
    }));
    assert!(matches!(
        &ops[tmpfs_at + 4],
        MountOp::RemountReadOnly { .. }
    ));
}

#[test]
fn disk_mounts_come_after_the_system_mounts() {
    let mut s = spec(false);
    s.mounts.push(BindMount {
        source: "/srv/www".into(),
        target: "/var/www".into(),
        readonly: true,
        idmapped: false,
    });
    let ops = plan(
        &s,
        RootMount::IdmappedTree,
        Path::new("/dev/pts/0"),
        &[],
        false,
    );
    let n = ops.len();
    assert_eq!(
        ops[n - 2],
        MountOp::Bind {
            source: "/srv/www".into(),
            target: "var/www".into(),
            readonly: true
        }
    );
}

#[test]
fn mount_targets_refuse_symlinks_on_the_way() {
    let dir = tempfile::tempdir().unwrap();
    symlink("/etc", dir.path().join("evil")).unwrap();
    assert!(ensure_target(dir.path(), Path::new("evil/x"), true).is_err());
    assert!(ensure_target(dir.path(), Path::new("evil"), true).is_err());
    let made = ensure_target(dir.path(), Path::new("a/b/c"), false).unwrap();
    assert!(made.is_file());
    assert!(ensure_target(dir.path(), Path::new("a/b"), true)
        .unwrap()
        .is_dir());
}

#[test]
fn lxcfs_views_come_once_proc_and_sys_are_mounted() {
    let none = plan(
        &spec(false),
        RootMount::Bind,
        Path::new("/dev/pts/0"),
        &[],
        true,
    );
    assert!(!none.iter().any(|op| matches!(op, MountOp::Lxcfs { .. })));
    let mut s = spec(false);
    s.lxcfs = Some("/var/lib/lxcfs".into());
    let ops = plan(&s, RootMount::Bind, Path::new("/dev/pts/0"), &[], true);
    let at = |want: &dyn Fn(&MountOp) -> bool| ops.iter().position(want).unwrap();
    let lxcfs = at(&|op| {
        *op == MountOp::Lxcfs {
            source: "/var/lib/lxcfs".into(),
            nesting: false,
        }
    });
    let proc = at(&|op| matches!(op, MountOp::Mount { fstype: "proc", .. }));
    let sys = at(&|op| {
        matches!(
            op,
            MountOp::Mount {
                fstype: "sysfs",
                ..
            }
        )
    });
    assert!(proc < lxcfs && sys < lxcfs && lxcfs < ops.len() - 1);
}
