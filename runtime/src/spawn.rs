//! Starting the helper (`hutchd-helper __monitor|__exec`) from hutchd with posix_spawn.
//!
//! std's `Command` forks once a `pre_exec` closure is set, and passing a descriptor at a
//! fixed number needs one. A fork copies hutchd's page tables and marks its pages
//! copy-on-write; the exec then tears the copy down, and hutchd takes a fault on each page
//! it writes next. All of that grows with hutchd's memory, which grows with the number of
//! containers. glibc's posix_spawn runs the child on hutchd's memory until it execs
//! (`CLONE_VM | CLONE_VFORK`), so a spawn costs the same at 1,000 containers as at one.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::unistd::Pid;

/// What the child gets as one of its descriptors 0, 1 and 2.
#[derive(Debug, Clone, Copy)]
pub enum ChildStdio {
    /// /dev/null, opened for reading and writing.
    Null,
    /// This process's descriptor, duplicated onto the child's.
    Fd(RawFd),
}

/// `f` as one of the child's descriptors 0-2, borrowed for the call.
pub fn fd(f: &impl AsRawFd) -> ChildStdio {
    ChildStdio::Fd(f.as_raw_fd())
}

/// The lowest number a source descriptor is moved to before the child's dup2s, so that no
/// dup2 onto 0-3 overwrites a source a later one reads.
const HIGH_FD: RawFd = 10;

/// Runs `exe` with `argv` (its `argv[0]` first) and this process's environment; the child
/// gets `stdio` on 0-2 and `pass.0` as its descriptor `pass.1`, the signal mask emptied and
/// SIGPIPE at its default (as std's spawn leaves them). Every other descriptor of this
/// process must be close-on-exec, as hutchd's are.
pub fn spawn(
    exe: &Path,
    argv: &[&OsStr],
    stdio: [ChildStdio; 3],
    pass: (RawFd, RawFd),
) -> std::io::Result<Pid> {
    let program = c_string(exe.as_os_str().as_bytes())?;
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| c_string(a.as_bytes()))
        .collect::<std::io::Result<_>>()?;
    let envp = environment()?;
    let ptrs = |v: &[CString]| {
        v.iter()
            .map(|c| c.as_ptr() as *mut libc::c_char)
            .chain([std::ptr::null_mut()])
            .collect::<Vec<_>>()
    };
    let (argv_p, envp_p) = (ptrs(&argv), ptrs(&envp));

    // Sources below HIGH_FD are duplicated above it first (closed again when this returns):
    // a dup2 onto a number that is also a source would clobber it, and a dup2 onto itself
    // would leave it close-on-exec.
    let mut raised: Vec<OwnedFd> = Vec::new();
    let mut high = |fd: RawFd| -> std::io::Result<RawFd> {
        if fd >= HIGH_FD {
            return Ok(fd);
        }
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor the caller lent; the new one is owned here.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, HIGH_FD) };
        if new < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fcntl just returned this descriptor and nothing else owns it.
        raised.push(unsafe { OwnedFd::from_raw_fd(new) });
        Ok(new)
    };
    let mut moves: Vec<(Option<RawFd>, RawFd)> = Vec::with_capacity(4);
    for (target, s) in stdio.iter().enumerate() {
        let source = match s {
            ChildStdio::Null => None,
            ChildStdio::Fd(fd) => Some(high(*fd)?),
        };
        moves.push((source, target as RawFd));
    }
    moves.push((Some(high(pass.0)?), pass.1));

    let actions = FileActions::new()?;
    let null = c"/dev/null";
    for (source, target) in moves {
        // SAFETY: `actions` is initialized; `null` is a NUL-terminated static string.
        let rc = unsafe {
            match source {
                Some(fd) => libc::posix_spawn_file_actions_adddup2(actions.ptr(), fd, target),
                None => libc::posix_spawn_file_actions_addopen(
                    actions.ptr(),
                    target,
                    null.as_ptr(),
                    libc::O_RDWR,
                    0,
                ),
            }
        };
        check(rc)?;
    }
    let attr = SpawnAttr::new()?;
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the program and the NUL-terminated
    // argv and envp arrays of CStrings above, the initialized file actions and attributes.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            program.as_ptr(),
            actions.ptr(),
            attr.ptr(),
            argv_p.as_ptr(),
            envp_p.as_ptr(),
        )
    };
    check(rc)?;
    drop(raised);
    Ok(Pid::from_raw(pid))
}

/// `bytes` as a C string; a NUL inside is an invalid-input error.
fn c_string(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a NUL byte in the helper's command line or environment",
        )
    })
}

/// This process's environment as the `KEY=VALUE` strings a spawned helper is given.
pub(crate) fn environment() -> std::io::Result<Vec<CString>> {
    std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            c_string(&kv)
        })
        .collect()
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// posix_spawn's file actions, destroyed on drop.
struct FileActions(Box<libc::posix_spawn_file_actions_t>);

impl FileActions {
    fn new() -> std::io::Result<Self> {
        // SAFETY: a zeroed value that posix_spawn_file_actions_init initializes in place.
        let mut a = FileActions(Box::new(unsafe { std::mem::zeroed() }));
        // SAFETY: `a.0` points to writable memory of the right type.
        check(unsafe { libc::posix_spawn_file_actions_init(a.0.as_mut()) })?;
        Ok(a)
    }

    fn ptr(&self) -> *mut libc::posix_spawn_file_actions_t {
        &*self.0 as *const _ as *mut _
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(self.0.as_mut()) };
    }
}

/// posix_spawn's attributes: an empty signal mask and SIGPIPE at its default.
struct SpawnAttr(Box<libc::posix_spawnattr_t>);

impl SpawnAttr {
    fn new() -> std::io::Result<Self> {
        // SAFETY: a zeroed value that posix_spawnattr_init initializes in place.
        let mut a = SpawnAttr(Box::new(unsafe { std::mem::zeroed() }));
        // SAFETY: the calls below act on the attributes initialized by the first, and on
        // signal sets this function owns.
        unsafe {
            check(libc::posix_spawnattr_init(a.0.as_mut()))?;
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            check(libc::posix_spawnattr_setsigmask(a.0.as_mut(), &none))?;
            let mut pipe: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pipe);
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(a.0.as_mut(), &pipe))?;
            let flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(a.0.as_mut(), flags as _))?;
        }
        Ok(a)
    }

    fn ptr(&self) -> *const libc::posix_spawnattr_t {
        &*self.0
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(self.0.as_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn wait(pid: Pid) -> i32 {
        match nix::sys::wait::waitpid(pid, None).unwrap() {
            nix::sys::wait::WaitStatus::Exited(_, code) => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_child_gets_its_stdio_and_the_passed_descriptor_at_its_number() {
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (pass_r, pass_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // fd 3 is the passed pipe; stdin is /dev/null, so `cat` prints nothing of it.
        let script = "cat; echo out; echo three >&3";
        let pid = spawn(
            Path::new("/bin/sh"),
            &[OsStr::new("sh"), OsStr::new("-c"), OsStr::new(script)],
            [ChildStdio::Null, fd(&out_w), ChildStdio::Null],
            (pass_w.as_raw_fd(), 3),
        )
        .unwrap();
        drop((out_w, pass_w));
        assert_eq!(wait(pid), 0);
        let mut out = String::new();
        std::fs::File::from(out_r).read_to_string(&mut out).unwrap();
        assert_eq!(out, "out\n");
        let mut three = String::new();
        std::fs::File::from(pass_r)
            .read_to_string(&mut three)
            .unwrap();
        assert_eq!(three, "three\n");
    }

    #[test]
    fn a_missing_program_is_an_error_and_no_child() {
        let (_r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let err = spawn(
            Path::new("/nonexistent/helper"),
            &[OsStr::new("helper")],
            [ChildStdio::Null; 3],
            (w.as_raw_fd(), 3),
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
