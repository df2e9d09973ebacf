//! Attacks through files and exec (issue 11, items 2, 3 and 10), against a real hutchd and
//! real containers, driven by `hutch`, by LXD's own `lxc` and by raw HTTP: setuid files
//! pulled to the host, FIFOs and device nodes that would block or act, a missing `cwd`,
//! a sparse gigabyte pulled through the client, and an oversized JSON body. Needs root.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use hutch_tests::{assert_no_leftovers, busybox_image, output_within, require_root, TestDaemon};

/// The most a file command may take here: far above what it needs, so reaching it means
/// the daemon hung, not that it was slow.
const HANG_LIMIT: Duration = Duration::from_secs(30);

/// How long a plain `GET /1.0` may go unanswered after the attacks. The issue asks for an
/// answer within a second; this is a hang detector, not a timing, so it leaves room for a
/// loaded machine running debug builds.
const ANSWER_LIMIT: Duration = Duration::from_secs(5);

/// A daemon with the busybox image imported as `bb` and container `c1` running.
fn daemon_with_c1() -> TestDaemon {
    let d = TestDaemon::start();
    let image = d.path().join("bb.tar.gz");
    busybox_image(d.path(), &image).expect("build the image");
    d.hutch_ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    d.hutch_ok(&["launch", "bb", "c1"]);
    d
}

/// `c1`'s root filesystem as the host stores it.
fn rootfs(d: &TestDaemon) -> PathBuf {
    d.path().join("storage-pools/default/containers/c1/rootfs")
}

/// Deletes `c1` and checks that nothing of it is left.
fn finish(d: TestDaemon) {
    d.hutch_ok(&["delete", "c1", "--force"]);
    let prefix = hutch_tests::daemon::cgroup_prefix(d.path());
    assert_no_leftovers(
        &d.path().join("storage-pools/default/containers"),
        &format!("{prefix}/c1"),
    );
}

fn hutch_within(d: &TestDaemon, args: &[&str], limit: Duration) -> Output {
    let mut cmd = Command::new(hutch_tests::hutch_bin());
    cmd.args(args).env("HUTCH_DIR", d.path());
    output_within(&mut cmd, b"", limit)
}

fn lxc_within(d: &TestDaemon, args: &[&str], limit: Duration) -> Output {
    let mut cmd = Command::new("lxc");
    cmd.args(args)
        .env("LXD_DIR", d.path())
        .env("LXD_CONF", d.path().join("lxc-conf"))
        .env("HOME", d.path());
    output_within(&mut cmd, b"", limit)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One raw request on the daemon's socket, answered within `limit`: status, the header
/// block, and the body.
fn request(
    d: &TestDaemon,
    method: &str,
    path: &str,
    body: &[u8],
    limit: Duration,
) -> (u16, String, Vec<u8>) {
    let mut s = UnixStream::connect(d.socket()).expect("connect");
    s.set_read_timeout(Some(limit)).unwrap();
    s.set_write_timeout(Some(limit)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: unix.socket\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("send the request");
    // A server may answer (and stop reading) before a large body is all sent: the write
    // fails then, and the answer is still there to read.
    let writer = {
        let mut s = s.try_clone().unwrap();
        let body = body.to_vec();
        std::thread::spawn(move || {
            let _ = s.write_all(&body);
        })
    };
    let mut resp = Vec::new();
    if let Err(e) = s.read_to_end(&mut resp) {
        assert!(
            !resp.is_empty(),
            "{method} {path}: no answer within {limit:?}: {e}"
        );
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{method} {path}: no complete answer: {}",
                String::from_utf8_lossy(&resp)
            )
        });
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head, resp[split + 4..].to_vec())
}

/// The value of header `name` in a header block.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The daemon still answers a plain request.
fn assert_api_answers(d: &TestDaemon) {
    let (status, _, body) = request(d, "GET", "/1.0", b"", ANSWER_LIMIT);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn pulled_setuid_files_lose_their_special_bits() {
    if !require_root("pulled_setuid_files_lose_their_special_bits") {
        return;
    }
    let d = daemon_with_c1();
    d.hutch_ok(&[
        "exec",
        "c1",
        "--",
        "sh",
        "-c",
        "cp /bin/busybox /root/id && chmod 4755 /root/id && mkdir /root/d && \
         chmod 3775 /root/d && echo hi > /root/d/s && chmod 6750 /root/d/s",
    ]);

    // The header is LXD's: four octal digits, permission bits only.
    let (status, head, _) = request(
        &d,
        "HEAD",
        "/1.0/instances/c1/files?path=/root/id",
        b"",
        HANG_LIMIT,
    );
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "X-LXD-mode"), Some("0755"), "{head}");
    assert_eq!(header(&head, "X-LXD-type"), Some("file"), "{head}");

    let out = d.path().join("pulled");
    fs::create_dir(&out).unwrap();
    let by_hutch = out.join("id-hutch");
    d.hutch_ok(&["file", "pull", "c1/root/id", by_hutch.to_str().unwrap()]);
    assert_eq!(mode_of(&by_hutch), 0o755, "hutch pulled a setuid file");
    assert_eq!(
        fs::read(&by_hutch).unwrap(),
        fs::read(rootfs(&d).join("bin/busybox")).unwrap()
    );
    // LXD's own client reads the header right (a bare "4755" is decimal to it).
    let by_lxc = out.join("id-lxc");
    d.lxc_ok(&["file", "pull", "c1/root/id", by_lxc.to_str().unwrap()]);
    assert_eq!(mode_of(&by_lxc), 0o755, "lxc pulled a setuid file");

    // Recursively: setgid and sticky directories, setuid+setgid files.
    let tree = out.join("tree");
    fs::create_dir(&tree).unwrap();
    d.hutch_ok(&["file", "pull", "-r", "c1/root/d", tree.to_str().unwrap()]);
    assert_eq!(mode_of(&tree.join("d")), 0o775);
    assert_eq!(mode_of(&tree.join("d/s")), 0o750);
    assert_eq!(fs::read_to_string(tree.join("d/s")).unwrap(), "hi\n");
    finish(d);
}

#[test]
fn fifos_and_device_nodes_never_block_the_daemon() {
    if !require_root("fifos_and_device_nodes_never_block_the_daemon") {
        return;
    }
    let d = daemon_with_c1();
    d.hutch_ok(&["exec", "c1", "--", "mkfifo", "/root/f"]);
    // What a privileged container could make: a device node (the host's /dev/null, so
    // that a regression stays harmless).
    nix::sys::stat::mknod(
        &rootfs(&d).join("root/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .expect("mknod");
    let local = d.path().join("x");
    fs::write(&local, "payload").unwrap();
    let local = local.to_str().unwrap();
    let pulled = d.path().join("pulled");
    let pulled = pulled.to_str().unwrap();

    for (target, what) in [("c1/root/f", "FIFO"), ("c1/root/null", "character device")] {
        // Twice: each blocked push used to take one of the daemon's workers for good.
        for _ in 0..2 {
            let out = hutch_within(&d, &["file", "push", local, target], HANG_LIMIT);
            assert!(!out.status.success(), "pushed into a {what}");
            assert!(text(&out).contains(what), "{}", text(&out));
        }
        let out = hutch_within(&d, &["file", "pull", target, pulled], HANG_LIMIT);
        assert!(!out.status.success(), "pulled a {what}");
        assert!(text(&out).contains(what), "{}", text(&out));
        let out = lxc_within(&d, &["file", "push", local, target], HANG_LIMIT);
        assert!(!out.status.success(), "lxc pushed into a {what}");
        let out = lxc_within(&d, &["file", "pull", target, pulled], HANG_LIMIT);
        assert!(!out.status.success(), "lxc pulled a {what}");
        assert_api_answers(&d);
    }
    assert!(!Path::new(pulled).exists());
    // The FIFO is untouched and still a FIFO; it can be deleted like any entry.
    assert_eq!(
        d.hutch_ok(&["exec", "c1", "--", "stat", "-c", "%F", "/root/f"])
            .trim(),
        "fifo"
    );
    d.hutch_ok(&["file", "delete", "c1/root/f"]);
    assert_api_answers(&d);

    // A FIFO on the host is still a fine source for a push: it is read to its end.
    let host_fifo = d.path().join("host-fifo");
    nix::unistd::mkfifo(&host_fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let writer = {
        let p = host_fifo.clone();
        // Opening blocks until the client opens the other end.
        std::thread::spawn(move || fs::write(p, "piped\n"))
    };
    d.hutch_ok(&["file", "push", host_fifo.to_str().unwrap(), "c1/root/piped"]);
    writer.join().unwrap().unwrap();
    assert_eq!(
        d.hutch_ok(&["exec", "c1", "--", "cat", "/root/piped"]),
        "piped\n"
    );
    finish(d);
}

#[test]
fn exec_in_a_missing_directory_reports_the_chdir_error() {
    if !require_root("exec_in_a_missing_directory_reports_the_chdir_error") {
        return;
    }
    let d = daemon_with_c1();
    let out = d.hutch(&["exec", "c1", "--cwd", "/nope", "--", "true"], b"");
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(127), "{}", text(&out));
    assert!(
        text(&out).contains("change directory to /nope"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("not found"), "{}", text(&out));
    let out = d.lxc(&["exec", "c1", "--cwd", "/nope", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("change directory to /nope"),
        "{}",
        text(&out)
    );

    // Over the API: the operation fails with the reason, `return` is -1 as in LXD.
    let body = br#"{"command":["true"],"cwd":"/bin/busybox","wait-for-websocket":false}"#;
    let (status, _, resp) = request(&d, "POST", "/1.0/instances/c1/exec", body, HANG_LIMIT);
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&resp));
    let resp: serde_json::Value = serde_json::from_slice(&resp).unwrap();
    let op = resp["operation"].as_str().unwrap();
    let (_, _, done) = request(&d, "GET", &format!("{op}/wait?timeout=30"), b"", HANG_LIMIT);
    let done: serde_json::Value = serde_json::from_slice(&done).unwrap();
    assert_eq!(done["metadata"]["status"], "Failure", "{done}");
    assert_eq!(done["metadata"]["metadata"]["return"], -1, "{done}");
    let err = done["metadata"]["err"].as_str().unwrap();
    assert!(err.contains("change directory to /bin/busybox"), "{err}");

    // What works still does, and a missing command is still 127.
    assert_eq!(
        d.hutch_ok(&["exec", "c1", "--cwd", "/tmp", "--", "pwd"])
            .trim(),
        "/tmp"
    );
    let out = d.hutch(&["exec", "c1", "--", "no-such-command"], b"");
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    finish(d);
}

#[test]
fn a_sparse_gigabyte_is_pulled_in_bounded_memory() {
    if !require_root("a_sparse_gigabyte_is_pulled_in_bounded_memory") {
        return;
    }
    let d = daemon_with_c1();
    d.hutch_ok(&[
        "exec",
        "c1",
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=/root/sparse bs=1M count=0 seek=1024 2>/dev/null && \
         printf middle | dd of=/root/sparse bs=1 seek=536870912 conv=notrunc 2>/dev/null",
    ]);
    let dest = d.path().join("sparse");
    // The client may not hold the file: a quarter of it is all the address space it gets.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -v 262144 && exec "$0" file pull c1/root/sparse "$1""#)
        .arg(hutch_tests::hutch_bin())
        .arg(&dest)
        .env("HUTCH_DIR", d.path());
    let out = output_within(&mut cmd, b"", Duration::from_secs(180));
    assert!(out.status.success(), "{}", text(&out));
    let meta = fs::metadata(&dest).unwrap();
    assert_eq!(meta.len(), 1 << 30);
    // Holes stay holes on the host.
    assert!(
        meta.blocks() * 512 < 64 << 20,
        "{} bytes allocated",
        meta.blocks() * 512
    );
    let mut f = fs::File::open(&dest).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(536870912 - 2)).unwrap();
    let mut buf = [0u8; 10];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"\0\0middle\0\0");
    fs::remove_file(&dest).unwrap();
    finish(d);
}

#[test]
fn an_oversized_json_body_gets_an_lxd_error() {
    if !require_root("an_oversized_json_body_gets_an_lxd_error") {
        return;
    }
    let d = TestDaemon::start();
    let mut body = br#"{"name":"big","source":{"type":"none"},"config":{"user.x":""#.to_vec();
    body.resize(body.len() + (50 << 20), b'a');
    body.extend_from_slice(br#""}}"#);
    let (status, head, resp) = request(&d, "POST", "/1.0/instances", &body, HANG_LIMIT);
    assert_eq!(status, 413, "{head}");
    let env: serde_json::Value = serde_json::from_slice(&resp)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&resp)));
    assert_eq!(env["type"], "error", "{env}");
    assert_eq!(env["error_code"], 413, "{env}");
    assert!(!env["error"].as_str().unwrap_or("").is_empty(), "{env}");
    for key in ["status", "status_code", "operation", "metadata"] {
        assert!(env.get(key).is_some(), "{key} missing in {env}");
    }
    assert_api_answers(&d);
    let (_, _, list) = request(&d, "GET", "/1.0/instances", b"", HANG_LIMIT);
    assert!(!String::from_utf8_lossy(&list).contains("big"));
}
