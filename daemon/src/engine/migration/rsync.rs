//! The rsync transport, as LXD runs it: the sender is `rsync … <path>/ localhost:/tmp/foo`
//! whose "remote shell" is hutchd's hidden netcat mode, connected to an abstract socket that
//! this daemon bridges to the `fs` websocket; the receiver is `rsync --server` with the
//! websocket on its stdin and stdout.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use super::error::MigrationError;
use super::progress::Progress;
use super::proto::{COMPRESS, DELETE, XATTRS};
use super::socket::Conn;

/// The flags each rsync feature adds (LXD's `rsyncFeatureArgs`).
pub fn feature_args(features: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    if features.contains(&XATTRS) {
        args.push("--xattrs".to_string());
        // rsync ≥ 3.1.3 (every supported distribution's): SELinux labels stay behind.
        args.push("--filter=-x security.selinux".to_string());
    }
    if features.contains(&DELETE) {
        args.push("--delete".to_string());
    }
    if features.contains(&COMPRESS) {
        args.push("--compress".to_string());
        args.push("--compress-level=2".to_string());
    }
    args
}

/// The sender's argv.
pub fn send_argv(path: &Path, features: &[&str], hutchd: &Path, socket: &str) -> Vec<String> {
    let mut argv: Vec<String> = [
        "rsync",
        "-ar",
        "--devices",
        "--numeric-ids",
        "--partial",
        "--sparse",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(feature_args(features));
    argv.push(format!("{}/", path.display()));
    argv.push("localhost:/tmp/foo".into());
    argv.push("-e".into());
    argv.push(format!("{} __netcat {socket}", hutchd.display()));
    argv
}

/// The receiver's argv.
pub fn recv_argv(path: &Path, features: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = [
        "rsync",
        "--server",
        "-vlogDtpre.iLsfx",
        "--numeric-ids",
        "--devices",
        "--partial",
        "--sparse",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(feature_args(features));
    argv.push(".".into());
    argv.push(format!("{}/", path.display()));
    argv
}

/// The size the data pipes of a transfer tool are widened to (from the kernel's 64 KiB):
/// a read then takes up to a whole websocket message, and a write lands without waiting
/// for the tool to catch up.
const PIPE_SIZE: i32 = 1 << 20;

/// Widens the pipe `fd` to [`PIPE_SIZE`], best effort (an unprivileged limit, an old
/// kernel: the default stays, only slower).
pub(super) fn widen_pipe(fd: std::os::fd::RawFd) {
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
}

/// Starts a transfer tool with the pipes asked for (widened) and its stderr captured.
pub(super) fn spawn(argv: &[String], stdin: bool, stdout: bool) -> Result<Child, MigrationError> {
    use std::os::fd::AsRawFd;
    let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    let program = if argv[0] == "rsync" { "rsync" } else { "btrfs" };
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(pipe(stdin))
        .stdout(pipe(stdout))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| MigrationError::Spawn { program, source })?;
    if let Some(i) = &child.stdin {
        widen_pipe(i.as_raw_fd());
    }
    if let Some(o) = &child.stdout {
        widen_pipe(o.as_raw_fd());
    }
    Ok(child)
}

/// Waits for `child` (`program`), an error with its stderr unless it exits 0.
pub(super) async fn finish(
    program: &'static str,
    mut child: Child,
    volume: &str,
) -> Result<(), MigrationError> {
    let mut stderr = child.stderr.take();
    let read_err = async {
        let mut text = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut text).await;
        }
        text
    };
    let (text, status) = tokio::join!(read_err, child.wait());
    let status = status.map_err(MigrationError::io("wait for a transfer tool"))?;
    if status.success() {
        return Ok(());
    }
    Err(MigrationError::Tool {
        program,
        volume: volume.to_string(),
        status: status.to_string(),
        stderr: text.trim().to_string(),
    })
}

/// Sends the tree at `path` on `conn` (LXD's `rsync.Send`).
pub async fn send(
    volume: &str,
    path: &Path,
    conn: &mut Conn,
    features: &[&str],
    hutchd: &Path,
    progress: &Progress,
) -> Result<(), MigrationError> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("hutch/{}", uuid::Uuid::new_v4().simple());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(MigrationError::io("name the rsync socket"))?;
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::UnixListener::from_std)
        .map_err(MigrationError::io("listen on the rsync socket"))?;
    let child = spawn(
        &send_argv(path, features, hutchd, &format!("@{name}")),
        false,
        false,
    )?;
    let accepted = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await;
    let socket = match accepted {
        Ok(Ok((s, _))) => s,
        _ => {
            // rsync never connected: its stderr says why.
            let mut child = child;
            let _ = child.start_kill();
            return Err(finish("rsync", child, volume)
                .await
                .err()
                .unwrap_or(MigrationError::Io {
                    action: "connect rsync to the migration",
                    source: std::io::ErrorKind::TimedOut.into(),
                }));
        }
    };
    drop(listener);
    let (from_rsync, to_rsync) = socket.into_split();
    let Conn { tx, rx } = conn;
    let outgoing = tx.pump_from(from_rsync, Some(progress));
    let incoming = rx.pump_into(to_rsync, None);
    let done = finish("rsync", child, volume);
    let (out, inc, done) = tokio::join!(outgoing, incoming, done);
    done?;
    out?;
    inc
}

/// Receives a tree into `path` from `conn` (LXD's `rsync.Recv`).
pub async fn recv(
    volume: &str,
    path: &Path,
    conn: &mut Conn,
    features: &[&str],
    progress: &Progress,
) -> Result<(), MigrationError> {
    let mut child = spawn(&recv_argv(path, features), true, true)?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let Conn { tx, rx } = conn;
    let incoming = rx.pump_into(stdin, Some(progress));
    let outgoing = tx.pump_from(stdout, None);
    // rsync failing ends the transfer: the pumps are dropped with it.
    let done = async { finish("rsync", child, volume).await.map(|()| true) };
    let pumps = async {
        let (a, b) = tokio::join!(incoming, outgoing);
        a.and(b).map(|()| false)
    };
    tokio::pin!(done, pumps);
    tokio::select! {
        r = &mut done => {
            r?;
            // rsync is done; its output and the sender's end of stream follow.
            pumps.await.map(|_| ())
        }
        r = &mut pumps => {
            r?;
            done.await.map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_are_lxds() {
        let all = [XATTRS, DELETE, COMPRESS, "bidirectional"];
        assert_eq!(
            send_argv(Path::new("/p/c1"), &all, Path::new("/bin/hutchd"), "@hutch/x").join(" "),
            "rsync -ar --devices --numeric-ids --partial --sparse --xattrs --filter=-x security.selinux --delete --compress --compress-level=2 /p/c1/ localhost:/tmp/foo -e /bin/hutchd __netcat @hutch/x"
        );
        assert_eq!(
            recv_argv(Path::new("/p/c1"), &[DELETE]).join(" "),
            "rsync --server -vlogDtpre.iLsfx --numeric-ids --devices --partial --sparse --delete . /p/c1/"
        );
    }
}
