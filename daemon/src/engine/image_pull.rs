//! Pulling images from simplestreams remotes: the name resolved on the remote (an alias
//! first, then a fingerprint prefix), the local store used when it already holds the
//! image, else both files streamed through the verifying reader into temporary files
//! (named like uploads, so a crash leaves debris that startup removes), the whole-image
//! fingerprint checked, then unpacked and recorded as an import is. Progress goes into the
//! running operation's metadata as LXD reports it (`download_progress`).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hutch_api::image::ImageSource;
use hutch_images::simplestreams::{RemoteFile, RemoteImage, SimpleStreams};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::images::{store_image, Upload};
use super::revert::Revert;
use crate::daemon::AppState;
use crate::db::images::ImageRow;
use crate::error::{DaemonError, Result};
use crate::operations::OpEntry;

/// Where an image is pulled from, as a request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    /// The remote's base URL.
    pub server: String,
    /// An alias or a fingerprint (prefix) on the remote.
    pub name: String,
}

impl PullSource {
    /// Checks a remote image source: `simplestreams` only (LXD's own protocol needs the
    /// LXD client), `pull` mode, a server and a name. `name` is the alias, else the
    /// fingerprint (pylxd puts an alias there too).
    pub fn new(
        server: &str,
        protocol: &str,
        mode: &str,
        alias: &str,
        fingerprint: &str,
    ) -> Result<Self> {
        let bad = |m: String| Err(DaemonError::BadRequest(m));
        match protocol {
            "simplestreams" => {}
            "" | "lxd" => {
                return bad(format!(
                    "Image servers of protocol \"lxd\" are not supported (use a simplestreams remote): {server}"
                ))
            }
            other => return bad(format!("Invalid protocol: {other}")),
        }
        if !matches!(mode, "" | "pull") {
            return bad(format!(
                "Unsupported image source mode {mode:?} (only \"pull\" is)"
            ));
        }
        if !(server.starts_with("https://") || server.starts_with("http://")) {
            return bad(format!("Invalid image server URL {server:?}"));
        }
        let name = if alias.is_empty() { fingerprint } else { alias };
        if name.is_empty() {
            return bad("No image alias or fingerprint given".into());
        }
        Ok(PullSource {
            server: server.trim_end_matches('/').to_string(),
            name: name.to_string(),
        })
    }
}

/// How a pulled image is recorded.
#[derive(Debug, Clone, Copy)]
pub struct PullOptions {
    /// Pulled to make an instance (LXD's `cached`): expires when unused.
    pub cached: bool,
    /// `None`: `images.auto_update_cached` decides.
    pub auto_update: Option<bool>,
    pub public: bool,
    /// LXD's `PreferCached` (instance creation): while auto-update runs, an image cached
    /// from the same server and alias is used even when the remote has a newer one (the
    /// refresh task brings that).
    pub prefer_cached: bool,
}

/// The remote image a name resolves to, and whether it was matched as an alias.
async fn resolve(src: &PullSource) -> Result<(SimpleStreams, RemoteImage, bool)> {
    let src = src.clone();
    super::blocking(move || {
        let client = SimpleStreams::new(&src.server)?;
        let image = client.resolve(&src.name).map_err(|e| match e {
            hutch_images::ImageError::RemoteNotFound(m) => DaemonError::NotFound(format!(
                "Failed getting remote image info: Failed getting image: {m}"
            )),
            other => DaemonError::failed(
                "get remote image info of",
                format!("{:?} from {}", src.name, src.server),
                other,
            ),
        })?;
        // The fingerprint names files and volumes before the download proves it: a remote
        // is hostile input, and only a sha256 in hex may become a path.
        if !is_sha256_hex(&image.fingerprint) {
            return Err(DaemonError::BadRequest(format!(
                "Invalid fingerprint {:?} for {:?} from {}",
                image.fingerprint, src.name, src.server
            )));
        }
        if image.kind != "container" {
            return Err(DaemonError::BadRequest(
                "Virtual-machine images are not supported".into(),
            ));
        }
        let by_alias = image.aliases.iter().any(|a| a == &src.name);
        Ok((client, image, by_alias))
    })
    .await
}

/// 64 lowercase hex digits.
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The local image `src` names, pulled from the remote unless the store already holds it.
/// Concurrent pulls of one image download it once (the image's lock).
pub async fn pull_image(d: &AppState, src: &PullSource, opts: PullOptions) -> Result<ImageRow> {
    let (client, remote, by_alias) = resolve(src).await?;
    if opts.prefer_cached && by_alias {
        if let Some(cached) = cached_from(d, src, &remote.architecture)? {
            let lock = d.image_locks.get(&cached);
            let _g = lock.lock().await;
            // Unless it went meanwhile (expired, refreshed): then the remote's is pulled.
            if let Ok(row) = d.db.image_by_prefix(&cached) {
                if row.fingerprint == cached {
                    return Ok(row);
                }
            }
        }
    }
    let fp = remote.fingerprint.clone();
    let lock = d.image_locks.get(&fp);
    let _g = lock.lock().await;
    if let Ok(row) = d.db.image_by_prefix(&fp) {
        if row.fingerprint == fp {
            return Ok(row);
        }
    }
    let auto_update = match opts.auto_update {
        Some(a) => a,
        None => hutch_api::server_config::server_config_value(
            &d.db.server_config()?,
            "images.auto_update_cached",
        )
        .parse()
        .unwrap_or(true),
    };
    let (upload, prepared) = download(d, &client, &remote).await?;
    let update_source = by_alias.then(|| ImageSource {
        alias: src.name.clone(),
        certificate: String::new(),
        protocol: "simplestreams".into(),
        server: src.server.clone(),
        image_type: String::new(),
    });
    let stored = store_image(d, &upload, &fp, prepared, |_meta, now| ImageRow {
        fingerprint: fp.clone(),
        filename: remote.filename.clone(),
        size: remote.size as i64,
        architecture: remote.architecture.clone(),
        kind: "container".into(),
        public: opts.public,
        auto_update,
        cached: opts.cached,
        // The remote's properties, as LXD takes them (not metadata.yaml's).
        properties: remote.properties.clone(),
        profiles: vec!["default".into()],
        created_at: remote.created_at.clone(),
        uploaded_at: now.to_string(),
        last_used_at: "0001-01-01T00:00:00Z".into(),
        expires_at: "0001-01-01T00:00:00Z".into(),
        update_source,
    })
    .await;
    upload.remove();
    stored
        .map_err(|e| DaemonError::failed("store", format!("image {fp} from {}", src.server), e))?;
    d.events
        .lifecycle("image-created", &format!("/1.0/images/{fp}"), json!({}));
    d.db.image_by_prefix(&fp)
}

/// The newest image cached from `src` (same server and alias, same architecture), when
/// image refreshes are on (`images.auto_update_interval` > 0).
fn cached_from(d: &AppState, src: &PullSource, architecture: &str) -> Result<Option<String>> {
    let config = d.db.server_config()?;
    let interval: u64 =
        hutch_api::server_config::server_config_value(&config, "images.auto_update_interval")
            .parse()
            .unwrap_or(6);
    if interval == 0 {
        return Ok(None);
    }
    let mut rows: Vec<ImageRow> =
        d.db.images()?
            .into_iter()
            .filter(|r| {
                r.cached
                    && r.architecture == architecture
                    && r.update_source
                        .as_ref()
                        .is_some_and(|s| s.server == src.server && s.alias == src.name)
            })
            .collect();
    rows.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(rows.into_iter().next().map(|r| r.fingerprint))
}

/// Downloads the image's files into temporary files under `images/`, each checked against
/// its sha256 and size and the pair against the image's fingerprint. A tar rootfs is
/// unpacked into the image's staging volume as it arrives (then `true` is returned with
/// the files); a squashfs must be whole before `unsquashfs` reads it. A failure removes
/// the files and the staging volume.
async fn download(
    d: &AppState,
    client: &SimpleStreams,
    remote: &RemoteImage,
) -> Result<(Upload, bool)> {
    let tmp = |what: &str| {
        d.dir
            .join("images")
            .join(format!(".upload-{}-pull-{what}", uuid::Uuid::new_v4()))
    };
    let upload = match &remote.rootfs {
        None => Upload::Unified(tmp("unified")),
        Some(_) => Upload::Split {
            metadata: tmp("meta"),
            rootfs: tmp("rootfs"),
        },
    };
    let stream_unpack = remote
        .rootfs
        .as_ref()
        .is_some_and(|r| r.ftype != "squashfs");
    let pool = d.default_pool()?;
    let staging = super::images::staging_vol(&remote.fingerprint);
    let mut revert = Revert::new();
    {
        let files = match &upload {
            Upload::Unified(p) => vec![p.clone()],
            Upload::Split { metadata, rootfs } => vec![metadata.clone(), rootfs.clone()],
        };
        let (pool, staging) = (pool.clone(), staging.clone());
        revert.add(move || {
            for f in files {
                let _ = std::fs::remove_file(f);
            }
            if stream_unpack {
                let _ = pool.delete_volume(&staging);
            }
        });
    }
    let op = crate::operations::current();
    let (client, remote2) = (client.clone(), remote.clone());
    let (meta_path, rootfs_path) = match &upload {
        Upload::Unified(p) => (p.clone(), None),
        Upload::Split { metadata, rootfs } => (metadata.clone(), Some(rootfs.clone())),
    };
    super::blocking(move || {
        let mut whole = Sha256::new();
        fetch_file(
            &client,
            &remote2.meta,
            "metadata",
            &meta_path,
            &mut whole,
            op.clone(),
            None,
        )?;
        if let (Some(file), Some(path)) = (&remote2.rootfs, &rootfs_path) {
            if stream_unpack {
                let _ = pool.delete_volume(&staging);
                pool.create_volume(&staging)?;
                let target = pool.path(&staging).join("rootfs");
                let name = std::path::PathBuf::from(format!("{}/{}", client.base(), file.path));
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(32);
                let unpacker = std::thread::spawn(move || {
                    let chunks = ChannelReader {
                        rx,
                        chunk: Vec::new(),
                        at: 0,
                    };
                    let limits = hutch_images::UnpackLimits::default();
                    hutch_images::unpack_split_rootfs_stream(chunks, &name, &target, limits)
                });
                let fetched = fetch_file(&client, file, "rootfs", path, &mut whole, op, Some(tx));
                let unpacked = unpacker
                    .join()
                    .map_err(|_| DaemonError::BadRequest("the rootfs unpacker panicked".into()))?;
                // A failed download explains a failed unpack: report the download.
                fetched?;
                unpacked.map_err(|e| {
                    DaemonError::failed(
                        "unpack",
                        format!("{} from {}", file.path, client.base()),
                        e,
                    )
                })?;
            } else {
                fetch_file(&client, file, "rootfs", path, &mut whole, op, None)?;
            }
        }
        let got = hex::encode(whole.finalize());
        if got != remote2.fingerprint {
            return Err(DaemonError::BadRequest(format!(
                "Image fingerprint mismatch for {} from {}: got {got}, expected {}",
                remote2.meta.path,
                client.base(),
                remote2.fingerprint
            )));
        }
        Ok(())
    })
    .await?;
    revert.success();
    Ok((upload, stream_unpack))
}

/// The receiving end of a download teed into an unpacker.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(next) => {
                    self.chunk = next;
                    self.at = 0;
                }
                // The download ended (whole or not: the downloader says which).
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Streams one remote file into `path`, feeding `whole` (the image's fingerprint) and,
/// when given, `tee` (an unpacker; once it stops taking, the file is still written).
fn fetch_file(
    client: &SimpleStreams,
    file: &RemoteFile,
    label: &'static str,
    path: &Path,
    whole: &mut Sha256,
    op: Option<Arc<OpEntry>>,
    mut tee: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
) -> Result<()> {
    let named = |e: Box<dyn std::error::Error + Send + Sync>| {
        DaemonError::failed(
            "download",
            format!("{} from {}", file.path, client.base()),
            e,
        )
    };
    let reader = client
        .open(file, progress_reporter(label, file.size, op))
        .map_err(|e| named(e.into()))?;
    let out = std::fs::File::create(path).map_err(|e| DaemonError::io("create", path, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let mut reader = std::io::BufReader::with_capacity(1 << 20, reader);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(named(e.into())),
        };
        whole.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| DaemonError::io("write", path, e))?;
        if tee
            .as_ref()
            .is_some_and(|t| t.send(buf[..n].to_vec()).is_err())
        {
            tee = None;
        }
    }
    drop(tee);
    let out = out
        .into_inner()
        .map_err(|e| DaemonError::io("write", path, e.into_error()))?;
    out.sync_all().map_err(|e| DaemonError::io("sync", path, e))
}

/// Reports a download into the operation's `download_progress` as LXD words it
/// (`rootfs: 45% (12.34MB/s)`), when the percentage changes.
fn progress_reporter(
    label: &'static str,
    total: u64,
    op: Option<Arc<OpEntry>>,
) -> Box<dyn FnMut(u64) + Send> {
    let start = Instant::now();
    let mut last = None;
    Box::new(move |read| {
        let Some(op) = &op else { return };
        let percent = (read * 100).checked_div(total).unwrap_or(100);
        if last == Some(percent) {
            return;
        }
        last = Some(percent);
        let secs = start.elapsed().as_secs_f64().max(0.001);
        let speed = (read as f64 / secs) as u64;
        let text = format!("{label}: {percent}% ({}/s)", byte_size(speed));
        let mut m = serde_json::Map::new();
        m.insert("download_progress".into(), text.into());
        op.extend_metadata(m);
    })
}

/// LXD's `units.GetByteSizeString(n, 2)`: `512B`, `12.34MB`.
pub fn byte_size(n: u64) -> String {
    if n < 1000 {
        return format!("{n}B");
    }
    let mut value = n as f64;
    for unit in ["kB", "MB", "GB", "TB", "PB"] {
        value /= 1000.0;
        if value < 1000.0 {
            return format!("{value:.2}{unit}");
        }
    }
    format!("{:.2}EB", value / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_fingerprints_become_paths() {
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex("../../../etc/passwd"));
        assert!(!is_sha256_hex(&format!("{}/x", "a".repeat(62))));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(!is_sha256_hex("abcd"));
    }

    #[test]
    fn sizes_read_as_lxd_prints_them() {
        assert_eq!(byte_size(999), "999B");
        assert_eq!(byte_size(12_340_000), "12.34MB");
        assert_eq!(byte_size(1_500), "1.50kB");
    }

    #[test]
    fn sources_are_checked() {
        let ok = PullSource::new("https://x/", "simplestreams", "pull", "", "busybox/1").unwrap();
        assert_eq!(ok.server, "https://x");
        assert_eq!(ok.name, "busybox/1");
        assert!(PullSource::new("https://x", "lxd", "pull", "a", "").is_err());
        assert!(PullSource::new("https://x", "simplestreams", "push", "a", "").is_err());
        assert!(PullSource::new("x", "simplestreams", "pull", "a", "").is_err());
        assert!(PullSource::new("https://x", "simplestreams", "pull", "", "").is_err());
    }
}
