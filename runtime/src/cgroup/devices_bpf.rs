//! The devices allowlist on cgroup2, where there is no devices controller: a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program, built from the same rules the v1 controller gets
//! ([`DEVICE_ALLOW`]), attached to the container's cgroup. Without it, root in a privileged
//! container on a unified host could mknod and read the host's disks.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

use super::values::DEVICE_ALLOW;
use crate::error::{Result, RuntimeError};

/// `bpf_cgroup_dev_ctx.access_type`: the device type in the low 16 bits...
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
/// ...and the access in the high ones.
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
/// The name hutch's filters are loaded under, to tell them from a nested container's.
const PROG_NAME: &[u8] = b"hutch_devices";
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Programs of nested cgroups (a nesting container's own) run too, and all must allow.
const BPF_F_ALLOW_MULTI: u32 = 2;

/// One allowlist rule: `None` is `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    kind: i32,
    major: Option<u32>,
    minor: Option<u32>,
    access: i32,
}

/// Whether `rule` is a devices allowlist rule.
pub(super) fn is_rule(rule: &str) -> bool {
    parse_rule(rule).is_some()
}

/// A v1 rule (`c 1:3 rwm`, `b *:* m`).
fn parse_rule(rule: &str) -> Option<Rule> {
    let mut parts = rule.split_whitespace();
    let kind = match parts.next()? {
        "c" => DEV_CHAR,
        "b" => DEV_BLOCK,
        _ => return None,
    };
    let (major, minor) = parts.next()?.split_once(':')?;
    let num = |s: &str| match s {
        "*" => Some(None),
        n => n.parse().ok().map(Some),
    };
    let mut access = 0;
    for c in parts.next()?.chars() {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return None,
        };
    }
    Some(Rule {
        kind,
        major: num(major)?,
        minor: num(minor)?,
        access,
    })
}

/// One eBPF instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes used here.
const LDX_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const AND32_K: u8 = 0x54; // dst &= imm
const RSH32_K: u8 = 0x74; // dst >>= imm
const MOV64_K: u8 = 0xb7; // dst = imm
const MOV64_X: u8 = 0xbf; // dst = src
const JNE_K: u8 = 0x55; // if dst != imm: skip off
const JNE_X: u8 = 0x5d; // if dst != src: skip off
const EXIT: u8 = 0x95;

/// The program: allow (1) when a rule matches type, major, minor and covers the access;
/// else deny (0).
fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),        // r2 = access_type
        insn(AND32_K, 2, 0, 0, 0xffff), // r2 = type
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16), // r3 = access
        insn(LDX_W, 4, 1, 4, 0),    // r4 = major
        insn(LDX_W, 5, 1, 8, 0),    // r5 = minor
    ];
    for r in rules {
        // Checks, each jumping past the rest of this rule's block when it fails.
        let mut checks: Vec<Vec<Insn>> = vec![
            vec![insn(JNE_K, 2, 0, 0, r.kind)],
            // (access & allowed) != access: something asked for is not allowed.
            vec![
                insn(MOV64_X, 1, 3, 0, 0),
                insn(AND32_K, 1, 0, 0, r.access),
                insn(JNE_X, 1, 3, 0, 0),
            ],
        ];
        if let Some(major) = r.major {
            checks.push(vec![insn(JNE_K, 4, 0, 0, major as i32)]);
        }
        if let Some(minor) = r.minor {
            checks.push(vec![insn(JNE_K, 5, 0, 0, minor as i32)]);
        }
        let allow = [insn(MOV64_K, 0, 0, 0, 1), insn(EXIT, 0, 0, 0, 0)];
        let mut left: usize = checks.iter().map(Vec::len).sum::<usize>() + allow.len();
        for check in checks {
            left -= check.len();
            let (jump, before) = check.split_last().expect("a check ends with its jump");
            p.extend_from_slice(before);
            p.push(Insn {
                off: left as i16,
                ..*jump
            });
        }
        p.extend_from_slice(&allow);
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// `bpf(2)`; `attr` is taken mutably because some commands write results back into it.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::result::Result<libc::c_long, Errno> {
    // SAFETY: `attr` is a repr(C) prefix of the kernel's `union bpf_attr` for `cmd`, valid
    // for the call, and its size is passed; pointers inside it outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

/// The allowlist program: [`DEVICE_ALLOW`] and `extra` rules (devices given to the
/// container), loaded.
fn load(dir: &Path, extra: &[String]) -> Result<OwnedFd> {
    let mut rules: Vec<Rule> = DEVICE_ALLOW
        .iter()
        .map(|r| parse_rule(r).expect("DEVICE_ALLOW rules parse"))
        .collect();
    for r in extra {
        rules.push(parse_rule(r).ok_or_else(|| RuntimeError::InvalidSpec {
            field: "device_rules".into(),
            reason: format!("{r:?} is not a device rule"),
        })?);
    }
    let insns = program(&rules);
    let license = c"Apache-2.0";
    let mut prog_name = [0u8; 16];
    prog_name[..PROG_NAME.len()].copy_from_slice(PROG_NAME);
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        ..Default::default()
    };
    let prog = bpf(BPF_PROG_LOAD, &mut load).map_err(|e| fail(dir, "load the device filter", e))?;
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(prog as i32) })
}

fn fail(dir: &Path, what: &str, e: Errno) -> RuntimeError {
    RuntimeError::sys(format!("{what} ({})", dir.display()), e)
}

fn attach(dir: &Path, cgroup: &std::fs::File, prog: &OwnedFd, cmd: libc::c_long) -> Result<()> {
    let mut attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: if cmd == BPF_PROG_ATTACH {
            BPF_F_ALLOW_MULTI
        } else {
            0
        },
    };
    bpf(cmd, &mut attr)
        .map(|_| ())
        .map_err(|e| fail(dir, "attach or detach the device filter", e))
}

/// Attaches the allowlist program, with `extra` rules, to the cgroup2 directory `dir`.
pub fn restrict(dir: &Path, extra: &[String]) -> Result<()> {
    let prog = load(dir, extra)?;
    let cgroup = std::fs::File::open(dir).map_err(|e| RuntimeError::io("open", dir, e))?;
    // The attachment holds the program; it goes with the cgroup.
    attach(dir, &cgroup, &prog, BPF_PROG_ATTACH)
}

#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The device programs attached to `cgroup` itself that hutch loaded (by name; unnamed
/// ones are hutch's too, from before filters had a name).
fn hutch_programs(dir: &Path, cgroup: &std::fs::File) -> Result<Vec<OwnedFd>> {
    let mut ids = [0u32; 64];
    let mut query = ProgQueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    // The kernel writes the count back into `query`.
    bpf(BPF_PROG_QUERY, &mut query).map_err(|e| fail(dir, "list the device filters", e))?;
    let count = query.prog_cnt as usize;
    let mut out = Vec::new();
    for &id in &ids[..count.min(ids.len())] {
        let mut by_id = GetFdByIdAttr {
            prog_id: id,
            ..Default::default()
        };
        let Ok(fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut by_id) else {
            continue;
        };
        // SAFETY: the kernel just returned this fd and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // struct bpf_prog_info up to its name (bytes 64 to 80).
        let mut info = [0u8; 80];
        let mut get = InfoByFdAttr {
            bpf_fd: fd.as_raw_fd() as u32,
            info_len: info.len() as u32,
            info: info.as_mut_ptr() as u64,
        };
        if bpf(BPF_OBJ_GET_INFO_BY_FD, &mut get).is_err() {
            continue;
        }
        let name = &info[64..80];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(16)];
        if name.is_empty() || name == PROG_NAME {
            out.push(fd);
        }
    }
    Ok(out)
}

/// Replaces the allowlist program of the cgroup2 directory `dir` by one with `extra`
/// rules. The new one is attached first: while both are, a device must pass both.
pub fn replace(dir: &Path, extra: &[String]) -> Result<()> {
    let prog = load(dir, extra)?;
    let cgroup = std::fs::File::open(dir).map_err(|e| RuntimeError::io("open", dir, e))?;
    let old = hutch_programs(dir, &cgroup)?;
    attach(dir, &cgroup, &prog, BPF_PROG_ATTACH)?;
    for fd in old {
        attach(dir, &cgroup, &fd, BPF_PROG_DETACH)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allow_rule_parses() {
        for r in DEVICE_ALLOW {
            assert!(parse_rule(r).is_some(), "{r}");
        }
        assert_eq!(
            parse_rule("c 136:* rwm"),
            Some(Rule {
                kind: DEV_CHAR,
                major: Some(136),
                minor: None,
                access: ACC_READ | ACC_WRITE | ACC_MKNOD
            })
        );
        assert_eq!(parse_rule("x 1:3 r"), None);
        assert_eq!(parse_rule("c 1:3 rx"), None);
    }

    /// Runs the program on a context, as the kernel would (the few opcodes it uses).
    fn run(p: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> i64 {
        let ctx = [(access << 16 | kind) as u32, major, minor];
        let mut r = [0i64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = ctx[i.off as usize / 4] as i64,
                AND32_K => r[dst] = (r[dst] as u32 & i.imm as u32) as i64,
                RSH32_K => r[dst] = (r[dst] as u32 >> i.imm) as i64,
                MOV64_K => r[dst] = i.imm as i64,
                MOV64_X => r[dst] = r[src],
                JNE_K if r[dst] != i.imm as i64 => pc += i.off as usize,
                JNE_X if r[dst] != r[src] => pc += i.off as usize,
                JNE_K | JNE_X => {}
                EXIT => return r[0],
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn the_program_allows_exactly_the_allowlist() {
        let rules: Vec<Rule> = DEVICE_ALLOW
            .iter()
            .map(|r| parse_rule(r).unwrap())
            .collect();
        let p = program(&rules);
        let rw = ACC_READ | ACC_WRITE;
        assert_eq!(run(&p, DEV_CHAR, rw, 1, 3), 1, "/dev/null");
        assert_eq!(run(&p, DEV_CHAR, rw, 136, 7), 1, "a pts");
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD, 4, 1), 1, "mknod of anything");
        assert_eq!(run(&p, DEV_BLOCK, ACC_MKNOD, 8, 0), 1, "mknod of a disk");
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 0), 0, "reading a disk");
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 1, 3), 0, "a block device 1:3");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 1), 0, "/dev/mem");
        assert_eq!(
            run(&p, DEV_CHAR, rw | ACC_MKNOD, 4, 1),
            0,
            "a tty beyond mknod"
        );
    }

    #[test]
    fn extra_rules_allow_their_devices_only() {
        let mut rules: Vec<Rule> = DEVICE_ALLOW
            .iter()
            .map(|r| parse_rule(r).unwrap())
            .collect();
        rules.push(parse_rule("c 1:200 rwm").unwrap());
        rules.push(parse_rule("b 7:0 r").unwrap());
        let p = program(&rules);
        let rw = ACC_READ | ACC_WRITE;
        assert_eq!(run(&p, DEV_CHAR, rw, 1, 200), 1);
        assert_eq!(run(&p, DEV_CHAR, rw, 1, 201), 0);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 7, 0), 1);
        assert_eq!(run(&p, DEV_BLOCK, rw, 7, 0), 0, "only read was given");
        assert!(is_rule("c 1:200 rwm") && !is_rule("c 1:200") && !is_rule("x"));
    }
}
