//! `hutch file push|pull|delete|edit`, with LXD's X-LXD-* headers and lxc's flags.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use crate::http::{encode, parse_envelope, Client};

/// The permission bits a pulled file or directory may get: setuid, setgid and sticky bits
/// set inside a container never reach the host (as with `lxc file pull`).
const PULLED_MODE_MASK: u32 = 0o777;

/// `hutch file ...`.
#[derive(Subcommand)]
pub enum Cmd {
    /// Copy local files into an instance (DEST is INSTANCE/PATH).
    Push {
        #[arg(required = true, num_args = 2..)]
        paths: Vec<String>,
        /// Push directories and their contents.
        #[arg(short, long)]
        recursive: bool,
        /// Create the missing parent directories.
        #[arg(short = 'p', long)]
        create_dirs: bool,
        /// The file's owner (default: the local file's).
        #[arg(long)]
        uid: Option<u32>,
        /// The file's group (default: the local file's).
        #[arg(long)]
        gid: Option<u32>,
        /// Octal permissions, e.g. 0644 or 644 (default: the local file's).
        #[arg(long)]
        mode: Option<String>,
    },
    /// Copy files out of an instance (sources are INSTANCE/PATH).
    Pull {
        #[arg(required = true, num_args = 2..)]
        paths: Vec<String>,
        /// Pull directories and their contents.
        #[arg(short, long)]
        recursive: bool,
        /// Create the missing local parent directories.
        #[arg(short = 'p', long)]
        create_dirs: bool,
    },
    /// Delete files in an instance.
    #[command(alias = "rm")]
    Delete {
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Edit a file of an instance (INSTANCE/PATH) in $VISUAL/$EDITOR; reads the new
    /// content from stdin when stdin is not a terminal.
    Edit { target: String },
}

/// Runs one `hutch file` command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Push {
            mut paths,
            recursive,
            create_dirs,
            uid,
            gid,
            mode,
        } => {
            let dest = paths.pop().expect("clap requires two paths");
            let (c, dest) = super::remote::split(c, &dest)?;
            let c = &c;
            let mode = mode.as_deref().map(parse_mode).transpose()?;
            if recursive && (uid.is_some() || gid.is_some() || mode.is_some()) {
                bail!("Can't supply uid/gid/mode in recursive mode");
            }
            let sources: Vec<PathBuf> = paths.into_iter().map(PathBuf::from).collect();
            push(
                c,
                &sources,
                &dest,
                &PushOptions {
                    recursive,
                    create_dirs,
                    uid,
                    gid,
                    mode,
                },
            )
        }
        Cmd::Pull {
            mut paths,
            recursive,
            create_dirs,
        } => {
            let dest = PathBuf::from(paths.pop().expect("clap requires two paths"));
            if create_dirs {
                let dir = if paths.len() > 1 || dest.to_string_lossy().ends_with('/') {
                    dest.as_path()
                } else {
                    dest.parent().unwrap_or(Path::new("."))
                };
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("create {}", dir.display()))?;
                }
            }
            let (c, paths) = super::remote::split_all(c, &paths)?;
            pull(&c, &paths, &dest, recursive)
        }
        Cmd::Delete { targets } => {
            let (c, targets) = super::remote::split_all(c, &targets)?;
            delete(&c, &targets)
        }
        Cmd::Edit { target } => {
            let (c, target) = super::remote::split(c, &target)?;
            edit(&c, &target)
        }
    }
}

/// `--mode` as lxc reads it: octal, `644` taken as `0644`; permission bits only.
fn parse_mode(m: &str) -> Result<u32> {
    let digits = m.strip_prefix("0o").unwrap_or(m);
    match u32::from_str_radix(digits, 8) {
        Ok(v) if v <= 0o7777 => Ok(v & 0o777),
        _ => bail!("Invalid mode {m:?}: give it in octal, e.g. 0644"),
    }
}

/// Splits `name/path` into instance and absolute path.
pub fn target(spec: &str) -> Result<(String, String)> {
    let Some((name, path)) = spec.split_once('/') else {
        bail!("{spec:?} is not INSTANCE/PATH")
    };
    Ok((name.to_string(), format!("/{path}")))
}

fn files_url(name: &str, path: &str) -> String {
    format!(
        "/1.0/instances/{}/files?path={}",
        encode(name),
        encode(path)
    )
}

fn post(
    client: &Client,
    name: &str,
    path: &str,
    kind: &str,
    ids: (u32, u32),
    mode: Option<u32>,
    body: &[u8],
) -> Result<()> {
    let mut reader = body;
    post_from(
        client,
        name,
        path,
        kind,
        ids,
        mode,
        &mut reader,
        body.len() as u64,
    )
}

/// A POST whose body, `len` bytes, is streamed from `body`.
#[allow(clippy::too_many_arguments)]
fn post_from(
    client: &Client,
    name: &str,
    path: &str,
    kind: &str,
    (uid, gid): (u32, u32),
    mode: Option<u32>,
    body: &mut dyn Read,
    len: u64,
) -> Result<()> {
    let mut headers = vec![
        ("X-LXD-type", kind.to_string()),
        ("X-LXD-uid", uid.to_string()),
        ("X-LXD-gid", gid.to_string()),
        ("Content-Type", "application/octet-stream".into()),
    ];
    if let Some(m) = mode {
        headers.push(("X-LXD-mode", format!("{m:04o}")));
    }
    let raw = client
        .send("POST", &files_url(name, path), &headers, body, len)?
        .into_raw()?;
    parse_envelope(&raw)?;
    Ok(())
}

pub struct PushOptions {
    pub recursive: bool,
    pub create_dirs: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

pub fn push(client: &Client, sources: &[PathBuf], dest: &str, o: &PushOptions) -> Result<()> {
    let (name, path) = target(dest)?;
    if sources.len() > 1 && !path.ends_with('/') && !o.recursive {
        bail!("Missing target directory");
    }
    for src in sources {
        let base = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let to = if path.ends_with('/') || sources.len() > 1 || o.recursive {
            format!("{}/{base}", path.trim_end_matches('/'))
        } else {
            path.clone()
        };
        if o.create_dirs {
            let meta = std::fs::symlink_metadata(src)
                .with_context(|| format!("read {}", src.display()))?;
            let uid = o.uid.unwrap_or(meta.uid());
            let gid = o.gid.unwrap_or(meta.gid());
            if o.recursive {
                // The target directory, with the source directory's mode, as lxc does.
                let mode = meta.permissions().mode() & 0o777;
                mkdir_p(
                    client,
                    &name,
                    path.trim_end_matches('/'),
                    Some(mode),
                    (uid, gid),
                )?;
            } else {
                let parent = Path::new(&to)
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                mkdir_p(client, &name, &parent, None, (uid, gid))?;
            }
        }
        push_one(client, &name, src, &to, o)?;
    }
    Ok(())
}

/// The type of `path` in the instance (`file`, `directory`, `symlink`), or `None` when
/// it does not exist.
fn remote_type(client: &Client, name: &str, path: &str) -> Result<Option<String>> {
    let resp = client.send("GET", &files_url(name, path), &[], &mut std::io::empty(), 0)?;
    if resp.status != 200 {
        return Ok(None);
    }
    Ok(Some(
        resp.header("X-LXD-type").unwrap_or("file").to_string(),
    ))
}

/// lxc's `recursiveMkdir`: the directories of `dir` below the deepest one that exists are
/// created (owned by `ids`, with `mode` or the daemon's default); existing ones are left
/// as they are, and a file in the way is an error.
fn mkdir_p(
    client: &Client,
    name: &str,
    dir: &str,
    mode: Option<u32>,
    ids: (u32, u32),
) -> Result<()> {
    let parts: Vec<&str> = dir
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let prefix = |i: usize| format!("/{}", parts[..i].join("/"));
    let mut first_missing = 0;
    for i in (1..=parts.len()).rev() {
        if let Some(kind) = remote_type(client, name, &prefix(i))? {
            if kind != "directory" {
                // lxc names it relative to / in this message.
                bail!("{} is not a directory", parts[..i].join("/"));
            }
            first_missing = i;
            break;
        }
    }
    for i in first_missing + 1..=parts.len() {
        post(client, name, &prefix(i), "directory", ids, mode, b"")?;
    }
    Ok(())
}

fn push_one(client: &Client, name: &str, src: &Path, to: &str, o: &PushOptions) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).with_context(|| format!("read {}", src.display()))?;
    let uid = o.uid.unwrap_or(meta.uid());
    let gid = o.gid.unwrap_or(meta.gid());
    // Permission bits only, as lxc sends them.
    let mode = o.mode.unwrap_or(meta.permissions().mode() & 0o777);
    if meta.file_type().is_symlink() {
        let t = std::fs::read_link(src)?;
        return post(
            client,
            name,
            to,
            "symlink",
            (uid, gid),
            None,
            t.to_string_lossy().as_bytes(),
        );
    }
    if meta.is_dir() {
        if !o.recursive {
            bail!("{} is a directory (use -r)", src.display());
        }
        post(client, name, to, "directory", (uid, gid), Some(mode), b"")?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            push_one(
                client,
                name,
                &entry.path(),
                &format!("{to}/{}", entry.file_name().to_string_lossy()),
                o,
            )?;
        }
        return Ok(());
    }
    let mut file = File::open(src).with_context(|| format!("read {}", src.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        // A pipe or a device has no length to announce: it is read whole first.
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .with_context(|| format!("read {}", src.display()))?;
        return post(client, name, to, "file", (uid, gid), Some(mode), &data);
    }
    post_from(
        client,
        name,
        to,
        "file",
        (uid, gid),
        Some(mode),
        &mut file,
        meta.len(),
    )
    .with_context(|| format!("push {}", src.display()))
}

pub fn pull(client: &Client, sources: &[String], dest: &Path, recursive: bool) -> Result<()> {
    if dest == Path::new("-") {
        // `-`: the files' contents to stdout, as lxc does.
        for s in sources {
            let (name, path) = target(s)?;
            let mut resp = client.send(
                "GET",
                &files_url(&name, &path),
                &[],
                &mut std::io::empty(),
                0,
            )?;
            if resp.status != 200 {
                parse_envelope(&resp.into_raw()?)?;
                bail!("failed to pull {path}");
            }
            if resp.header("X-LXD-type").unwrap_or("file") != "file" {
                bail!("{path} is not a regular file");
            }
            std::io::copy(&mut resp, &mut std::io::stdout().lock())?;
        }
        return Ok(());
    }
    for s in sources {
        let (name, path) = target(s)?;
        let base = Path::new(&path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let to = if dest.is_dir() {
            dest.join(base)
        } else {
            dest.to_path_buf()
        };
        pull_one(client, &name, &path, &to, recursive)?;
    }
    Ok(())
}

fn pull_one(client: &Client, name: &str, path: &str, to: &Path, recursive: bool) -> Result<()> {
    let mut resp = client.send("GET", &files_url(name, path), &[], &mut std::io::empty(), 0)?;
    if resp.status != 200 {
        parse_envelope(&resp.into_raw()?)?;
        bail!("failed to pull {path}");
    }
    // LXD sends `0644`: octal, permission bits only; anything more is dropped.
    let mode = resp
        .header("X-LXD-mode")
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .unwrap_or(0o644)
        & PULLED_MODE_MASK;
    match resp.header("X-LXD-type").unwrap_or("file") {
        "directory" => {
            if !recursive {
                bail!("{path} is a directory (use -r)");
            }
            // Entries are names the container chose: a symlink in their place on the host
            // (left by an earlier entry or pull) is never followed.
            if std::fs::symlink_metadata(to).is_ok_and(|m| m.file_type().is_symlink()) {
                bail!(
                    "{} is a symlink; not pulling a directory through it",
                    to.display()
                );
            }
            std::fs::create_dir_all(to)?;
            let env = parse_envelope(&resp.into_raw()?)?;
            for entry in env
                .metadata
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str())
                .filter(|e| !e.is_empty() && *e != "." && *e != ".." && !e.contains('/'))
            {
                pull_one(
                    client,
                    name,
                    &format!("{}/{entry}", path.trim_end_matches('/')),
                    &to.join(entry),
                    recursive,
                )?;
            }
        }
        "symlink" => {
            let mut target = Vec::new();
            resp.take(1 << 16).read_to_end(&mut target)?;
            let _ = std::fs::remove_file(to);
            std::os::unix::fs::symlink(String::from_utf8_lossy(&target).as_ref(), to)?;
            return Ok(());
        }
        _ => {
            let mut options = File::options();
            options.write(true).create(true).truncate(true).mode(0o600);
            if recursive {
                options.custom_flags(libc::O_NOFOLLOW);
            }
            let mut file = options
                .open(to)
                .with_context(|| format!("write {}", to.display()))?;
            copy_sparse(&mut resp, &mut file)
                .with_context(|| format!("pull {path} to {}", to.display()))?;
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            return Ok(());
        }
    }
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Copies `from` into the empty file `to` block by block, leaving holes where a block is
/// all zeroes: a sparse file stays sparse, and nothing is held in memory but one buffer.
fn copy_sparse(from: &mut dyn Read, to: &mut File) -> std::io::Result<u64> {
    const BLOCK: usize = 4096;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let mut filled = 0;
    loop {
        let n = from.read(&mut buf[filled..])?;
        filled += n;
        // Whole blocks are written (or skipped) once the buffer is full or the body ends.
        if n != 0 && filled < buf.len() {
            continue;
        }
        // Runs of data blocks go out in one write each, runs of zero blocks as one seek:
        // a write per block would cost a system call per 4 KiB.
        let mut start = 0;
        while start < filled {
            let zero = |at: usize| buf[at..(at + BLOCK).min(filled)].iter().all(|&b| b == 0);
            let hole = zero(start);
            let mut end = start;
            while end < filled && zero(end) == hole {
                end = (end + BLOCK).min(filled);
            }
            if hole {
                to.seek(SeekFrom::Current((end - start) as i64))?;
            } else {
                to.write_all(&buf[start..end])?;
            }
            start = end;
        }
        total += filled as u64;
        filled = 0;
        if n == 0 {
            break;
        }
    }
    // A trailing hole is made by the length alone.
    to.set_len(total)?;
    Ok(total)
}

/// `file edit INSTANCE/PATH`: pulled to a private temporary file, edited, pushed back with
/// the owner and mode it had (read from stdin instead when stdin is not a terminal).
pub fn edit(client: &Client, spec: &str) -> Result<()> {
    let (name, path) = target(spec)?;
    let mut resp = client.send(
        "GET",
        &files_url(&name, &path),
        &[],
        &mut std::io::empty(),
        0,
    )?;
    let (current, ids, mode) = if resp.status == 200 {
        if resp.header("X-LXD-type").unwrap_or("file") != "file" {
            bail!("{path} is not a regular file");
        }
        let num = |h: &str| {
            resp.header(h)
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        };
        let ids = (num("X-LXD-uid"), num("X-LXD-gid"));
        let mode = resp
            .header("X-LXD-mode")
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .map(|m| m & 0o777);
        let mut data = Vec::new();
        resp.read_to_end(&mut data)?;
        (
            String::from_utf8(data).context("the file is not text")?,
            ids,
            mode,
        )
    } else {
        // lxc edits only files that exist.
        parse_envelope(&resp.into_raw()?)?;
        bail!("failed to read {path}");
    };
    super::edit::edit("", &current, |text| {
        post(client, &name, &path, "file", ids, mode, text.as_bytes())
    })
}

pub fn delete(client: &Client, targets: &[String]) -> Result<()> {
    for t in targets {
        let (name, path) = target(t)?;
        client.request("DELETE", &files_url(&name, &path), None)?;
    }
    Ok(())
}

#[cfg(test)]
mod mode_tests {
    use super::*;

    #[test]
    fn modes_are_octal_permission_bits() {
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("644").unwrap(), 0o644);
        assert_eq!(parse_mode("4755").unwrap(), 0o755);
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("rw").is_err());
    }
}

#[cfg(test)]
mod sparse_tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn pulled_data_is_kept_and_zero_runs_become_holes() {
        let mut data = vec![0u8; 3 << 20];
        data[5000..9000].fill(7);
        data[(2 << 20) + 1] = 1;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut file = File::create(&path).unwrap();
        let n = copy_sparse(&mut data.as_slice(), &mut file).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        // Two data blocks of 4 KiB (the first run spans two) and one more: far below 3 MiB.
        assert!(std::fs::metadata(&path).unwrap().blocks() * 512 < 1 << 20);
    }
}
