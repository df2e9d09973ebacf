//! The seccomp filter container processes run under: LXC's default deny list (module
//! loading, kexec, open_by_handle_at, forced unmounts) plus the container's own
//! `security.syscalls.*` policy, compiled to classic BPF for every ABI the host kernel
//! accepts (x86_64 with x32 and i386; aarch64 with arm), and installed just before exec.

mod bpf;
mod table;

use nix::errno::Errno;

use crate::error::{Result, RuntimeError};
use crate::spec::Seccomp;
use bpf::{ja, jeq, jset, load, off_arg_lo, ret, Insn, OFF_ARCH, OFF_NR};

/// What LXC's default profile denies (config/seccomp/common.seccomp).
const DEFAULT_DENY: &[&str] = &[
    "kexec_load",
    "kexec_file_load",
    "open_by_handle_at",
    "init_module",
    "finit_module",
    "delete_module",
];
/// Denied by default in unprivileged containers only: the kernel's BPF verifier and JIT
/// are a common escape route, and without host capabilities little of bpf(2) works anyway.
const DEFAULT_DENY_UNPRIVILEGED: &[&str] = &["bpf"];

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const MNT_FORCE: u32 = 1;
/// The kernel refuses longer classic BPF programs (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

/// Columns of the syscall table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abi {
    X86_64 = 0,
    X32 = 1,
    I386 = 2,
    Aarch64 = 3,
    Arm = 4,
}

/// The host kernels a filter can be compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    X86_64,
    Aarch64,
}

impl Host {
    /// The host this binary runs on; `None` where hutch has no syscall table.
    pub fn current() -> Option<Host> {
        if cfg!(target_arch = "x86_64") {
            Some(Host::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Host::Aarch64)
        } else {
            None
        }
    }

    /// (audit arch, native ABI, its x32-style sub-ABI, whether it is a 32-bit compat ABI).
    fn arches(self) -> &'static [(u32, Abi, Option<Abi>, bool)] {
        match self {
            Host::X86_64 => &[
                (AUDIT_ARCH_X86_64, Abi::X86_64, Some(Abi::X32), false),
                (AUDIT_ARCH_I386, Abi::I386, None, true),
            ],
            Host::Aarch64 => &[
                (AUDIT_ARCH_AARCH64, Abi::Aarch64, None, false),
                (AUDIT_ARCH_ARM, Abi::Arm, None, true),
            ],
        }
    }
}

/// Whether `name` is a system call hutch knows on some architecture.
pub fn is_known(name: &str) -> bool {
    lookup(name).is_some()
}

/// Every system call name hutch knows, sorted.
pub fn known_names() -> impl Iterator<Item = &'static str> {
    table::SYSCALLS.iter().map(|(name, _)| *name)
}

fn lookup(name: &str) -> Option<&'static [i32; 5]> {
    table::SYSCALLS
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| &table::SYSCALLS[i].1)
}

/// The number of `name` in `abi` (with the x32 bit for x32), if the ABI has it.
fn number(name: &str, abi: Abi) -> Option<u32> {
    let n = lookup(name)?[abi as usize];
    if n < 0 {
        return None;
    }
    let n = n as u32;
    Some(if abi == Abi::X32 {
        n | X32_SYSCALL_BIT
    } else {
        n
    })
}

/// One decision of a filter section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    nr: u32,
    action: u32,
    /// Only when argument `.0` has a bit of mask `.1` set.
    arg_mask: Option<(u32, u32)>,
}

/// A compiled filter, ready to install.
#[derive(Debug, Clone)]
pub struct Filter(Vec<Insn>);

impl Filter {
    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the filter has no instructions (never true for a compiled one).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Compiles `policy` for this host. `None` when the policy filters nothing (or the host has
/// no syscall table). Unknown names, and an allow list next to deny keys, are refused.
pub fn compile(policy: &Seccomp, privileged: bool, nesting: bool) -> Result<Option<Filter>> {
    check(policy)?;
    match Host::current() {
        Some(host) => compile_for(host, policy, privileged, nesting),
        None => Ok(None),
    }
}

fn invalid(reason: String) -> RuntimeError {
    RuntimeError::InvalidSpec {
        field: "seccomp".into(),
        reason,
    }
}

fn check(policy: &Seccomp) -> Result<()> {
    if !policy.allow.is_empty() && (!policy.deny.is_empty() || policy.deny_compat) {
        return Err(invalid(
            "an allow list excludes deny lists and deny_compat".into(),
        ));
    }
    for name in policy.allow.iter().chain(&policy.deny) {
        if !is_known(name) {
            return Err(invalid(format!("unknown system call {name:?}")));
        }
    }
    Ok(())
}

fn compile_for(
    host: Host,
    policy: &Seccomp,
    privileged: bool,
    nesting: bool,
) -> Result<Option<Filter>> {
    let allow_mode = !policy.allow.is_empty();
    let mut deny: Vec<&str> = Vec::new();
    if !allow_mode {
        if policy.deny_default {
            deny.extend(DEFAULT_DENY);
            if !privileged && !nesting {
                deny.extend(DEFAULT_DENY_UNPRIVILEGED);
            }
        }
        deny.extend(policy.deny.iter().map(String::as_str));
        if deny.is_empty() && !policy.deny_compat {
            return Ok(None);
        }
    }
    let force_umount = !allow_mode && policy.deny_default;
    let eperm = RET_ERRNO | Errno::EPERM as u32;
    let enosys = RET_ERRNO | Errno::ENOSYS as u32;

    let rules = |abi: Abi| -> Vec<Rule> {
        let (names, action): (Vec<&str>, u32) = if allow_mode {
            (policy.allow.iter().map(String::as_str).collect(), RET_ALLOW)
        } else {
            (deny.clone(), eperm)
        };
        let mut out: Vec<Rule> = Vec::new();
        for nr in names.iter().filter_map(|n| number(n, abi)) {
            if !out.iter().any(|r| r.nr == nr) {
                out.push(Rule {
                    nr,
                    action,
                    arg_mask: None,
                });
            }
        }
        if force_umount {
            if let Some(nr) = number("umount2", abi) {
                out.push(Rule {
                    nr,
                    action: eperm,
                    arg_mask: Some((1, MNT_FORCE)),
                });
            }
        }
        out
    };
    let fallthrough = if allow_mode { enosys } else { RET_ALLOW };
    let abi_section = |abi: Abi, compat: bool| -> Vec<Insn> {
        if compat && policy.deny_compat {
            return vec![ret(enosys)];
        }
        render(&rules(abi), fallthrough)
    };

    let mut sections = Vec::new();
    for &(_, abi, sub, compat) in host.arches() {
        let native = abi_section(abi, compat);
        let mut section = vec![load(OFF_NR)];
        if let Some(sub) = sub {
            // x32 calls carry a bit in their number; they get a section of their own.
            let sub = abi_section(sub, true);
            section.push(jset(X32_SYSCALL_BIT, 0, 1));
            section.push(ja(native.len() as u32));
            section.extend(native);
            section.extend(sub);
        } else {
            section.extend(native);
        }
        sections.push(section);
    }

    // Dispatch on the architecture; an unknown one may make no call at all.
    let arches = host.arches();
    let header = 1 + 2 * arches.len() + 1;
    let mut prog = vec![load(OFF_ARCH)];
    let mut start = header;
    for (i, &(audit, ..)) in arches.iter().enumerate() {
        prog.push(jeq(audit, 0, 1));
        let at = prog.len() + 1;
        prog.push(ja((start - at) as u32));
        start += sections[i].len();
    }
    prog.push(ret(enosys));
    for s in sections {
        prog.extend(s);
    }
    if prog.len() > MAX_INSNS {
        return Err(invalid(format!(
            "the filter needs {} instructions, more than the kernel's {MAX_INSNS}",
            prog.len()
        )));
    }
    Ok(Some(Filter(prog)))
}

/// The instructions of one ABI's rules, with A holding the syscall number on entry. Every
/// conditional jump is short (at most 3), so sections of any length assemble.
fn render(rules: &[Rule], fallthrough: u32) -> Vec<Insn> {
    let mut out = Vec::new();
    for r in rules {
        match r.arg_mask {
            None => {
                out.push(jeq(r.nr, 0, 1));
                out.push(ret(r.action));
            }
            Some((arg, mask)) => {
                out.push(jeq(r.nr, 0, 3));
                out.push(load(off_arg_lo(arg)));
                out.push(jset(mask, 0, 1));
                out.push(ret(r.action));
                out.push(load(OFF_NR));
            }
        }
    }
    out.push(ret(fallthrough));
    out
}

/// Installs `filter` on the calling thread (and what it execs). Needs CAP_SYS_ADMIN in the
/// caller's user namespace or no_new_privs; the former lets setuid programs inside work.
pub fn install(filter: &Filter) -> std::result::Result<(), Errno> {
    let prog = libc::sock_fprog {
        len: filter.0.len() as u16,
        filter: filter.0.as_ptr() as *mut Insn,
    };
    const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
    // SAFETY: `prog` points at the filter's instructions, which outlive the call; the kernel
    // copies them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            0 as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::bpf::{run, Data};
    use super::*;

    const EPERM: u32 = RET_ERRNO | 1;
    const ENOSYS: u32 = RET_ERRNO | 38;

    fn filter(host: Host, policy: &Seccomp, privileged: bool) -> Vec<Insn> {
        check(policy).unwrap();
        compile_for(host, policy, privileged, false)
            .unwrap()
            .unwrap()
            .0
    }

    fn call(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        run(
            prog,
            &Data {
                nr: nr as i32,
                arch,
                args,
            },
        )
    }

    fn nr(name: &str, abi: Abi) -> u32 {
        number(name, abi).unwrap()
    }

    #[test]
    fn the_table_is_sorted_and_has_the_calls_we_deny() {
        assert!(table::SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0));
        for name in DEFAULT_DENY.iter().chain(DEFAULT_DENY_UNPRIVILEGED) {
            assert!(is_known(name), "{name}");
        }
        assert_eq!(nr("kexec_load", Abi::X86_64), libc::SYS_kexec_load as u32);
        assert_eq!(nr("init_module", Abi::I386), 128);
        assert_eq!(nr("kexec_load", Abi::X32), X32_SYSCALL_BIT | 528);
        assert_eq!(nr("open_by_handle_at", Abi::Aarch64), 265);
        assert_eq!(number("open", Abi::Aarch64), None);
    }

    #[test]
    fn the_default_denies_lxcs_list_on_every_abi_and_allows_the_rest() {
        for host in [Host::X86_64, Host::Aarch64] {
            let prog = filter(host, &Seccomp::default(), false);
            for &(audit, abi, sub, _) in host.arches() {
                for abi in [Some(abi), sub].into_iter().flatten() {
                    for name in DEFAULT_DENY.iter().chain(DEFAULT_DENY_UNPRIVILEGED) {
                        if let Some(n) = number(name, abi) {
                            assert_eq!(call(&prog, audit, n, [0; 6]), EPERM, "{name} {abi:?}");
                        }
                    }
                    for name in ["read", "write", "mount", "clone", "keyctl", "execve"] {
                        if let Some(n) = number(name, abi) {
                            assert_eq!(call(&prog, audit, n, [0; 6]), RET_ALLOW, "{name} {abi:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn forced_unmounts_are_refused_and_plain_ones_allowed() {
        let prog = filter(Host::X86_64, &Seccomp::default(), true);
        let umount2 = nr("umount2", Abi::X86_64);
        assert_eq!(
            call(&prog, AUDIT_ARCH_X86_64, umount2, [0, 1, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(
            call(&prog, AUDIT_ARCH_X86_64, umount2, [0, 2, 0, 0, 0, 0]),
            RET_ALLOW
        );
        let umount2 = nr("umount2", Abi::I386);
        assert_eq!(
            call(&prog, AUDIT_ARCH_I386, umount2, [0, 3, 0, 0, 0, 0]),
            EPERM
        );
        // The call after a masked rule still sees its own number.
        let read = nr("read", Abi::X86_64);
        assert_eq!(
            call(&prog, AUDIT_ARCH_X86_64, read, [0, 1, 0, 0, 0, 0]),
            RET_ALLOW
        );
    }

    #[test]
    fn bpf_is_denied_only_to_unprivileged_containers_by_default() {
        let bpf = nr("bpf", Abi::X86_64);
        let unpriv = filter(Host::X86_64, &Seccomp::default(), false);
        assert_eq!(call(&unpriv, AUDIT_ARCH_X86_64, bpf, [0; 6]), EPERM);
        let privileged = filter(Host::X86_64, &Seccomp::default(), true);
        assert_eq!(call(&privileged, AUDIT_ARCH_X86_64, bpf, [0; 6]), RET_ALLOW);
    }

    #[test]
    fn the_deny_list_adds_calls_and_the_default_can_be_dropped() {
        let policy = Seccomp {
            deny_default: false,
            deny: vec!["mkdirat".into(), "mkdir".into()],
            ..Seccomp::default()
        };
        let prog = filter(Host::X86_64, &policy, false);
        let at = |abi, name| call(&prog, AUDIT_ARCH_X86_64, nr(name, abi), [0; 6]);
        assert_eq!(at(Abi::X86_64, "mkdirat"), EPERM);
        assert_eq!(at(Abi::X86_64, "mkdir"), EPERM);
        assert_eq!(at(Abi::X32, "mkdir"), EPERM);
        assert_eq!(at(Abi::X86_64, "init_module"), RET_ALLOW);
        let i386 = call(&prog, AUDIT_ARCH_I386, nr("mkdir", Abi::I386), [0; 6]);
        assert_eq!(i386, EPERM);
    }

    #[test]
    fn nothing_to_filter_compiles_to_no_filter() {
        let policy = Seccomp {
            deny_default: false,
            ..Seccomp::default()
        };
        assert!(compile_for(Host::X86_64, &policy, false, false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn deny_compat_refuses_every_32_bit_call() {
        let policy = Seccomp {
            deny_compat: true,
            ..Seccomp::default()
        };
        let prog = filter(Host::X86_64, &policy, false);
        assert_eq!(call(&prog, AUDIT_ARCH_I386, 3, [0; 6]), ENOSYS);
        assert_eq!(
            call(&prog, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, [0; 6]),
            ENOSYS
        );
        assert_eq!(call(&prog, AUDIT_ARCH_X86_64, 0, [0; 6]), RET_ALLOW);
        let prog = filter(Host::Aarch64, &policy, false);
        assert_eq!(call(&prog, AUDIT_ARCH_ARM, 3, [0; 6]), ENOSYS);
        assert_eq!(call(&prog, AUDIT_ARCH_AARCH64, 63, [0; 6]), RET_ALLOW);
    }

    #[test]
    fn an_allow_list_allows_only_its_calls() {
        let policy = Seccomp {
            allow: vec!["read".into(), "write".into(), "exit_group".into()],
            ..Seccomp::default()
        };
        let prog = filter(Host::X86_64, &policy, false);
        for abi in [Abi::X86_64, Abi::X32] {
            let at = |name| call(&prog, AUDIT_ARCH_X86_64, nr(name, abi), [0; 6]);
            assert_eq!(at("read"), RET_ALLOW);
            assert_eq!(at("exit_group"), RET_ALLOW);
            assert_eq!(at("openat"), ENOSYS);
            assert_eq!(at("umount2"), ENOSYS);
        }
        let at = |name| call(&prog, AUDIT_ARCH_I386, nr(name, Abi::I386), [0; 6]);
        assert_eq!(at("write"), RET_ALLOW);
        assert_eq!(at("open"), ENOSYS);
    }

    #[test]
    fn every_known_call_in_an_allow_list_still_assembles() {
        let policy = Seccomp {
            allow: known_names().map(String::from).collect(),
            ..Seccomp::default()
        };
        for host in [Host::X86_64, Host::Aarch64] {
            let prog = filter(host, &policy, false);
            assert!(prog.len() <= MAX_INSNS);
            let (audit, abi) = (host.arches()[0].0, host.arches()[0].1);
            let last = known_names().filter_map(|n| number(n, abi)).last().unwrap();
            assert_eq!(call(&prog, audit, last, [0; 6]), RET_ALLOW);
            assert_eq!(call(&prog, audit, 100_000, [0; 6]), ENOSYS);
        }
    }

    #[test]
    fn unknown_arches_are_refused() {
        let prog = filter(Host::X86_64, &Seccomp::default(), false);
        assert_eq!(call(&prog, AUDIT_ARCH_AARCH64, 0, [0; 6]), ENOSYS);
    }

    #[test]
    fn bad_policies_are_refused_by_name() {
        let policy = Seccomp {
            deny: vec!["frobnicate".into()],
            ..Seccomp::default()
        };
        let err = compile(&policy, false, false).unwrap_err().to_string();
        assert!(err.contains("frobnicate"), "{err}");
        let policy = Seccomp {
            allow: vec!["read".into()],
            deny_compat: true,
            ..Seccomp::default()
        };
        assert!(compile(&policy, false, false).is_err());
    }

    /// The real kernel runs the compiled filter: in a child with no_new_privs (no root
    /// needed), the denied calls fail with EPERM and others still work.
    #[test]
    fn the_kernel_enforces_the_filter() {
        let Some(filter) = compile(&Seccomp::default(), false, false).unwrap() else {
            return;
        };
        // SAFETY: the child makes raw system calls only (no allocation) and leaves by _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: raw system calls on memory prepared before the fork.
                unsafe {
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                    let code = if install(&filter).is_err() {
                        10
                    } else if libc::syscall(libc::SYS_init_module, 0, 0, 0) != -1
                        || *libc::__errno_location() != libc::EPERM
                    {
                        11
                    } else if libc::syscall(libc::SYS_open_by_handle_at, -1, 0, 0) != -1
                        || *libc::__errno_location() != libc::EPERM
                    {
                        12
                    } else if libc::getpid() <= 0 {
                        13
                    } else {
                        0
                    };
                    libc::_exit(code)
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
