//! `hutchd __netcat @<abstract socket>`: the "remote shell" of a sending rsync (LXD's `lxd
//! netcat`). It joins its stdin and stdout to the daemon's abstract socket, which the daemon
//! bridges to the migration websocket. rsync appends a host and a command line; they are
//! ignored, the daemon's end decides what runs.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};

/// Runs the bridge to its end and exits: 0 once both directions ended, 1 on a failure.
pub fn netcat_main(socket: &std::ffi::OsStr) -> ! {
    let code = match bridge(socket) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hutchd netcat: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn bridge(socket: &std::ffi::OsStr) -> std::io::Result<()> {
    let name = socket
        .as_encoded_bytes()
        .strip_prefix(b"@")
        .ok_or_else(|| std::io::Error::other("the socket must be abstract (@name)"))?;
    let stream = UnixStream::connect_addr(&SocketAddr::from_abstract_name(name)?)?;
    let mut to_socket = stream.try_clone()?;
    // stdin → socket, then half-close so the daemon sees the end of rsync's stream.
    let writer = std::thread::spawn(move || {
        let copied = std::io::copy(&mut std::io::stdin().lock(), &mut to_socket);
        let _ = to_socket.shutdown(Shutdown::Write);
        copied
    });
    let mut from_socket = stream;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = from_socket.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
    drop(out);
    // Once the daemon's side ended, rsync has everything; a writer still blocked on stdin
    // is not waited for.
    if writer.is_finished() {
        writer
            .join()
            .map_err(|_| std::io::Error::other("stdin copy panicked"))??;
    }
    Ok(())
}
