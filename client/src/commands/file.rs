//! `hutch file push|pull|delete`, with LXD's X-LXD-* headers.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::http::{encode, parse_envelope, Client};

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
    (uid, gid): (u32, u32),
    mode: Option<u32>,
    body: &[u8],
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
    let raw = client.raw("POST", &files_url(name, path), &headers, body)?;
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
            let parent = Path::new(&to)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut cur = String::new();
            for comp in parent.split('/').filter(|c| !c.is_empty()) {
                cur.push('/');
                cur.push_str(comp);
                post(
                    client,
                    &name,
                    &cur,
                    "directory",
                    (o.uid.unwrap_or(0), o.gid.unwrap_or(0)),
                    None,
                    b"",
                )?;
            }
        }
        push_one(client, &name, src, &to, o)?;
    }
    Ok(())
}

fn push_one(client: &Client, name: &str, src: &Path, to: &str, o: &PushOptions) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).with_context(|| format!("read {}", src.display()))?;
    let uid = o.uid.unwrap_or(meta.uid());
    let gid = o.gid.unwrap_or(meta.gid());
    let mode = o.mode.unwrap_or(meta.permissions().mode() & 0o7777);
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
    let data = std::fs::read(src).with_context(|| format!("read {}", src.display()))?;
    post(client, name, to, "file", (uid, gid), Some(mode), &data)
}

pub fn pull(client: &Client, sources: &[String], dest: &Path, recursive: bool) -> Result<()> {
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
    let raw = client.raw("GET", &files_url(name, path), &[], b"")?;
    if raw.status != 200 {
        parse_envelope(&raw)?;
        bail!("failed to pull {path}");
    }
    let mode = raw
        .header("X-LXD-mode")
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .unwrap_or(0o644);
    match raw.header("X-LXD-type").unwrap_or("file") {
        "directory" => {
            if !recursive {
                bail!("{path} is a directory (use -r)");
            }
            std::fs::create_dir_all(to)?;
            let env = parse_envelope(&raw)?;
            for entry in env
                .metadata
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str())
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
            let _ = std::fs::remove_file(to);
            std::os::unix::fs::symlink(String::from_utf8_lossy(&raw.body).as_ref(), to)?;
            return Ok(());
        }
        _ => std::fs::write(to, &raw.body).with_context(|| format!("write {}", to.display()))?,
    }
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

pub fn delete(client: &Client, targets: &[String]) -> Result<()> {
    for t in targets {
        let (name, path) = target(t)?;
        client.request("DELETE", &files_url(&name, &path), None)?;
    }
    Ok(())
}
