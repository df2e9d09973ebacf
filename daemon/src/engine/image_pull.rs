//! Pulling images from image servers, simplestreams or LXD's own protocol (an LXD, another
//! hutchd): the name resolved on the remote (an alias first, then a fingerprint prefix),
//! the local store used when it already holds the image, else the files streamed into
//! temporary files (named like uploads, so a crash leaves debris that startup removes)
//! while a tar rootfs is unpacked as it arrives, the whole-image fingerprint checked, then
//! unpacked and recorded as an import is. Progress goes into the running operation's
//! metadata as LXD reports it (`download_progress`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use hutch_api::image::ImageSource;
use hutch_images::lxd_remote::{LxdExport, LxdRemote};
use hutch_images::simplestreams::{RemoteImage, SimpleStreams};
use hutch_storage::StorageDriver;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::cancel::{canceled, Cancel};
use super::images::{store_image, Upload};
use crate::daemon::AppState;
use crate::db::images::ImageRow;
use crate::error::{DaemonError, Result};
use crate::operations::OpEntry;

/// The protocol an image server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    SimpleStreams,
    /// LXD's REST API (`/1.0/images`), asked as an untrusted client.
    Lxd,
    /// An OCI registry (distribution API), as Incus names it.
    Oci,
}

impl Protocol {
    /// The name requests and `update_source` use.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::SimpleStreams => "simplestreams",
            Protocol::Lxd => "lxd",
            Protocol::Oci => "oci",
        }
    }
}

/// Where an image is pulled from, as a request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    /// The remote's base URL.
    pub server: String,
    pub protocol: Protocol,
    /// An alias or a fingerprint (prefix) on the remote.
    pub name: String,
    /// The server's certificate (PEM), the only one accepted from it; empty: the system's
    /// CAs decide.
    pub certificate: String,
    /// LXD's one-time secret for an image that is not public (`name` is its fingerprint).
    pub secret: String,
}

impl PullSource {
    /// Checks a remote image source: protocol `simplestreams` or `lxd` (LXD's default when
    /// none is given), `pull` mode, a server and a name. `name` is the alias, else the
    /// fingerprint (pylxd puts an alias there too).
    pub fn new(
        server: &str,
        protocol: &str,
        mode: &str,
        alias: &str,
        fingerprint: &str,
    ) -> Result<Self> {
        let bad = |m: String| Err(DaemonError::BadRequest(m));
        let protocol = match protocol {
            "simplestreams" => Protocol::SimpleStreams,
            "" | "lxd" => Protocol::Lxd,
            "oci" => Protocol::Oci,
            other => return bad(format!("Invalid protocol: {other}")),
        };
        if !matches!(mode, "" | "pull") {
            return bad(format!(
                "Unsupported image source mode {mode:?} (only \"pull\" is)"
            ));
        }
        let schemes: &[&str] = match protocol {
            Protocol::SimpleStreams | Protocol::Oci => &["https://", "http://"],
            // LXD's API is served over HTTPS only.
            Protocol::Lxd => &["https://"],
        };
        if !schemes.iter().any(|s| server.starts_with(s)) {
            return bad(format!("Invalid image server URL {server:?}"));
        }
        let name = if alias.is_empty() { fingerprint } else { alias };
        if name.is_empty() {
            return bad("No image alias or fingerprint given".into());
        }
        Ok(PullSource {
            server: server.trim_end_matches('/').to_string(),
            protocol,
            name: name.to_string(),
            certificate: String::new(),
            secret: String::new(),
        })
    }

    /// The request's `certificate` (PEM; checked here, before anything starts) and
    /// `secret`.
    pub fn with_credentials(mut self, certificate: &str, secret: &str) -> Result<Self> {
        if !certificate.trim().is_empty() {
            hutch_tls::cert_der_of_text(certificate)
                .map_err(|e| DaemonError::BadRequest(format!("Invalid certificate: {e}")))?;
        }
        self.certificate = certificate.to_string();
        self.secret = secret.to_string();
        Ok(self)
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

impl PullOptions {
    /// Whether the pulled image refreshes itself: as asked, else as
    /// `images.auto_update_cached` says.
    pub fn auto_update(&self, d: &AppState) -> Result<bool> {
        Ok(match self.auto_update {
            Some(a) => a,
            None => hutch_api::server_config::server_config_value(
                &d.db.server_config()?,
                "images.auto_update_cached",
            )
            .parse()
            .unwrap_or(true),
        })
    }
}

/// The remote image a name resolved to, whatever the protocol.
struct Found {
    fingerprint: String,
    architecture: String,
    filename: String,
    size: u64,
    properties: BTreeMap<String, String>,
    created_at: String,
    /// `name` was an alias (the image is then refreshed from it).
    by_alias: bool,
    origin: Origin,
}

/// How a found image's files are fetched.
enum Origin {
    Streams(SimpleStreams, Box<RemoteImage>),
    Lxd { client: LxdRemote, secret: String },
}

/// The remote image a name resolves to.
async fn resolve(src: &PullSource) -> Result<Found> {
    let src = src.clone();
    super::blocking(move || {
        // The image errors of either client name the server already.
        let remote_err = |e: hutch_images::ImageError, not_found_prefix: &str| match e {
            hutch_images::ImageError::RemoteNotFound(m) => DaemonError::NotFound(format!(
                "Failed getting remote image info: {not_found_prefix}{m}"
            )),
            other => {
                DaemonError::failed("get remote image info of", format!("{:?}", src.name), other)
            }
        };
        let (found, kind) = match src.protocol {
            Protocol::SimpleStreams => {
                let client = SimpleStreams::new(&src.server)?;
                let image = client
                    .resolve(&src.name)
                    .map_err(|e| remote_err(e, "Failed getting image: "))?;
                let found = Found {
                    fingerprint: image.fingerprint.clone(),
                    architecture: image.architecture.clone(),
                    filename: image.filename.clone(),
                    size: image.size,
                    properties: image.properties.clone(),
                    created_at: image.created_at.clone(),
                    by_alias: image.aliases.iter().any(|a| a == &src.name),
                    origin: Origin::Streams(client, Box::new(image.clone())),
                };
                (found, image.kind)
            }
            // Pulled by `oci::pull_registry`, never resolved here.
            Protocol::Oci => {
                return Err(DaemonError::BadRequest(
                    "OCI registries have no image index to resolve".into(),
                ))
            }
            Protocol::Lxd => {
                let client = LxdRemote::new(&src.server, &src.certificate)?;
                // As LXD: with a secret the name is the image's fingerprint, no alias.
                let (image, by_alias) = if src.secret.is_empty() {
                    client.resolve(&src.name)
                } else {
                    client.image(&src.name, &src.secret).map(|i| (i, false))
                }
                .map_err(|e| remote_err(e, ""))?;
                let found = Found {
                    fingerprint: image.fingerprint.clone(),
                    architecture: image.architecture.clone(),
                    filename: image.filename.clone(),
                    size: image.size,
                    properties: image.properties.clone(),
                    created_at: image.created_at.clone(),
                    by_alias,
                    origin: Origin::Lxd {
                        client,
                        secret: src.secret.clone(),
                    },
                };
                (found, image.kind)
            }
        };
        // The fingerprint names files and volumes before the download proves it: a remote
        // is hostile input, and only a sha256 in hex may become a path.
        if !is_sha256_hex(&found.fingerprint) {
            return Err(DaemonError::BadRequest(format!(
                "Invalid fingerprint {:?} for {:?} from {}",
                found.fingerprint, src.name, src.server
            )));
        }
        if kind != "container" {
            return Err(DaemonError::BadRequest(
                "Virtual-machine images are not supported".into(),
            ));
        }
        Ok(found)
    })
    .await
}

/// 64 lowercase hex digits.
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The local image `src` names, pulled from the remote unless the store already holds it.
/// Concurrent pulls of one image download it once (the image's lock). A cancel of the
/// running operation stops the download and the unpack and leaves no file or row.
pub async fn pull_image(d: &AppState, src: &PullSource, opts: PullOptions) -> Result<ImageRow> {
    let cancel = Cancel::current();
    pull(d, src, opts, &cancel).await.map_err(
        |e| {
            if cancel.is_cancelled() {
                canceled()
            } else {
                e
            }
        },
    )
}

async fn pull(
    d: &AppState,
    src: &PullSource,
    opts: PullOptions,
    cancel: &Cancel,
) -> Result<ImageRow> {
    if src.protocol == Protocol::Oci {
        return super::oci::pull_registry(d, src, opts, cancel).await;
    }
    let found = cancel.run(resolve(src)).await?;
    if opts.prefer_cached && found.by_alias {
        if let Some(cached) = cached_from(d, src, &found.architecture)? {
            let lock = d.image_locks.get(&cached);
            let _g = cancel.run(async { Ok(lock.lock().await) }).await?;
            // Unless it went meanwhile (expired, refreshed): then the remote's is pulled.
            if let Ok(row) = d.db.image_by_prefix(&cached) {
                if row.fingerprint == cached {
                    return Ok(row);
                }
            }
        }
    }
    let fp = found.fingerprint.clone();
    let lock = d.image_locks.get(&fp);
    let _g = cancel.run(async { Ok(lock.lock().await) }).await?;
    if let Ok(row) = d.db.image_by_prefix(&fp) {
        if row.fingerprint == fp {
            return Ok(row);
        }
    }
    let auto_update = opts.auto_update(d)?;
    let update_source = found.by_alias.then(|| ImageSource {
        alias: src.name.clone(),
        certificate: src.certificate.clone(),
        protocol: src.protocol.name().into(),
        server: src.server.clone(),
        image_type: String::new(),
    });
    let (filename, size, properties, created_at, architecture) = (
        found.filename.clone(),
        found.size,
        found.properties.clone(),
        found.created_at.clone(),
        found.architecture.clone(),
    );
    let (upload, prepared) = download(d, found, cancel).await?;
    let stored = store_image(d, &upload, &fp, prepared, |_meta, now| ImageRow {
        fingerprint: fp.clone(),
        filename,
        size: size as i64,
        architecture,
        kind: "container".into(),
        public: opts.public,
        auto_update,
        cached: opts.cached,
        // The remote's properties, as LXD takes them (not metadata.yaml's).
        properties,
        profiles: vec!["default".into()],
        created_at,
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

/// The newest image cached from `src` (same server, protocol and alias, same
/// architecture), when image refreshes are on (`images.auto_update_interval` > 0).
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
                    && r.update_source.as_ref().is_some_and(|s| {
                        s.server == src.server
                            && s.alias == src.name
                            && s.protocol == src.protocol.name()
                    })
            })
            .collect();
    rows.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(rows.into_iter().next().map(|r| r.fingerprint))
}

/// Downloads the image's files into temporary files under `images/`, the pair checked
/// against the image's fingerprint (and each file against its own sha256 and size where
/// the server publishes them). A tar rootfs is unpacked into the image's staging volume
/// as it arrives (then `true` is returned with the files); a squashfs must be whole
/// before `unsquashfs` reads it. A failure removes the files and the staging volume.
async fn download(d: &AppState, found: Found, cancel: &Cancel) -> Result<(Upload, bool)> {
    let receiver = Receiver {
        dir: d.dir.join("images"),
        pool: d.default_pool()?,
        staging: super::images::staging_vol(&found.fingerprint),
        whole: Sha256::new(),
        files: Vec::new(),
        staged: false,
        cancel: cancel.clone(),
    };
    let cancel = cancel.clone();
    let op = crate::operations::current();
    super::blocking(move || {
        let mut receiver = receiver;
        let fp = found.fingerprint;
        match found.origin {
            Origin::Streams(client, remote) => {
                let named = |path: &str| format!("{path} from {}", client.base());
                let open = |file: &hutch_images::simplestreams::RemoteFile, label, op| {
                    let mut report = progress_reporter(Some(label), op);
                    let size = file.size;
                    let progress = Box::new(move |read| report(read, Some(size)));
                    client
                        .open(file, progress)
                        .map(|r| cancel.detached_reader(r))
                        .map_err(|e| DaemonError::failed("download", named(&file.path), e))
                };
                let meta = open(&remote.meta, "metadata", op.clone())?;
                receiver.receive(meta, &named(&remote.meta.path), false)?;
                if let Some(file) = &remote.rootfs {
                    let rootfs = open(file, "rootfs", op)?;
                    receiver.receive(rootfs, &named(&file.path), true)?;
                }
            }
            Origin::Lxd { client, secret } => {
                // The export is the image's files and a little multipart framing; a server
                // that sends more than that is refused before the disk fills.
                let limit = match found.size {
                    0 => u64::MAX,
                    n => n.saturating_add(1 << 20),
                };
                let named = |what: &str| format!("{what} of image {fp} from {}", client.base());
                let export = client
                    .export(&fp, &secret, limit, progress_reporter(None, op))
                    .map_err(|e| DaemonError::failed("download", named("the export"), e))?;
                match export {
                    LxdExport::Unified { body, .. } => {
                        let body = cancel.detached_reader(body);
                        receiver.receive(body, &named("the export"), false)?;
                    }
                    LxdExport::Split(mut parts) => {
                        let part = |parts: &mut hutch_images::multipart::MultipartReader<_>,
                                    expected: &[&str]|
                         -> Result<()> {
                            match parts.next_part() {
                                Ok(Some(h)) if expected.contains(&h.name.as_str()) => Ok(()),
                                Ok(_) => Err(DaemonError::BadRequest(format!(
                                    "Invalid multipart image from {}",
                                    client.base()
                                ))),
                                Err(e) => {
                                    Err(DaemonError::failed("download", named("the export"), e))
                                }
                            }
                        };
                        // Read in turn: the cancel is seen between reads.
                        part(&mut parts, &["metadata"])?;
                        receiver.receive(
                            cancel.reader(&mut parts, None),
                            &named("the metadata"),
                            false,
                        )?;
                        part(&mut parts, &["rootfs", "rootfs.img"])?;
                        receiver.receive(
                            cancel.reader(&mut parts, None),
                            &named("the rootfs"),
                            true,
                        )?;
                        // The closing delimiter: a body cut after the last byte of the
                        // rootfs is still cut.
                        parts
                            .next_part()
                            .map_err(|e| DaemonError::failed("download", named("the export"), e))?;
                    }
                }
            }
        }
        receiver.finish(&fp)
    })
    .await
}

/// Where a download's bytes go: temporary files under `images/`, the image's hash, and for
/// a tar rootfs an unpacker into the staging volume. Dropped unfinished, it removes all of
/// them.
struct Receiver {
    dir: PathBuf,
    pool: Arc<dyn StorageDriver>,
    staging: PathBuf,
    whole: Sha256,
    /// The files written, metadata (or unified) first.
    files: Vec<PathBuf>,
    /// The staging volume holds (some of) the rootfs.
    staged: bool,
    /// The download stops between reads once this is cancelled.
    cancel: Cancel,
}

impl Receiver {
    /// Writes one file of the image from `reader` (`what` names it in errors); `rootfs`:
    /// it is a split image's rootfs, unpacked as it arrives when it is a tarball.
    fn receive(&mut self, reader: impl Read + Send, what: &str, rootfs: bool) -> Result<()> {
        let label = if rootfs { "rootfs" } else { "meta" };
        let path = self
            .dir
            .join(format!(".upload-{}-pull-{label}", uuid::Uuid::new_v4()));
        self.files.push(path.clone());
        let mut reader = std::io::BufReader::with_capacity(1 << 20, reader);
        if !rootfs {
            return write_file(
                &mut reader,
                &path,
                &mut self.whole,
                None,
                what,
                &self.cancel,
            );
        }
        // Told by its first bytes, as LXD tells it: a squashfs cannot be read as a stream.
        let mut header = Vec::with_capacity(263);
        (&mut reader)
            .take(263)
            .read_to_end(&mut header)
            .map_err(|e| DaemonError::failed("download", what, e))?;
        let squashfs = hutch_images::extension_of(&header) == ".squashfs";
        let mut reader = std::io::Cursor::new(header).chain(reader);
        if squashfs {
            return write_file(
                &mut reader,
                &path,
                &mut self.whole,
                None,
                what,
                &self.cancel,
            );
        }
        let _ = self.pool.delete_volume(&self.staging);
        self.staged = true;
        self.pool.create_volume(&self.staging)?;
        let target = self.pool.path(&self.staging).join("rootfs");
        let name = PathBuf::from(what);
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
        let written = write_file(
            &mut reader,
            &path,
            &mut self.whole,
            Some(tx),
            what,
            &self.cancel,
        );
        let unpacked = unpacker
            .join()
            .map_err(|_| DaemonError::BadRequest("the rootfs unpacker panicked".into()))?;
        // A failed download explains a failed unpack: report the download.
        written?;
        unpacked.map_err(|e| DaemonError::failed("unpack", what, e))
    }

    /// Checks the whole image against `fingerprint`; the files are then the caller's.
    fn finish(mut self, fingerprint: &str) -> Result<(Upload, bool)> {
        let got = hex::encode(std::mem::take(&mut self.whole).finalize());
        if got != fingerprint {
            return Err(DaemonError::BadRequest(format!(
                "Image fingerprint doesn't match. Got {got} expected {fingerprint}"
            )));
        }
        let mut files = std::mem::take(&mut self.files).into_iter();
        let upload = match (files.next(), files.next()) {
            (Some(metadata), Some(rootfs)) => Upload::Split { metadata, rootfs },
            (Some(unified), None) => Upload::Unified(unified),
            _ => unreachable!("a download writes one file or two"),
        };
        let staged = std::mem::replace(&mut self.staged, false);
        Ok((upload, staged))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        if self.staged {
            let _ = self.pool.delete_volume(&self.staging);
        }
    }
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

/// Streams `reader` into `path`, feeding `whole` (the image's fingerprint) and, when given,
/// `tee` (an unpacker; once it stops taking, the file is still written).
fn write_file(
    reader: &mut impl Read,
    path: &Path,
    whole: &mut Sha256,
    mut tee: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    what: &str,
    cancel: &Cancel,
) -> Result<()> {
    let out = std::fs::File::create(path).map_err(|e| DaemonError::io("create", path, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        cancel.check()?;
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DaemonError::failed("download", what, e)),
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

/// Reports a download into the operation's `download_progress` as LXD words it: with a
/// known length, when the percentage changes (`rootfs: 45% (12.34MB/s)`, the label only
/// for simplestreams files), else each megabyte (`12.34MB (1.20MB/s)`). Called with the
/// bytes read so far and the length.
fn progress_reporter(
    label: Option<&'static str>,
    op: Option<Arc<OpEntry>>,
) -> Box<dyn FnMut(u64, Option<u64>) + Send> {
    let start = Instant::now();
    let mut last = None;
    Box::new(move |read, total| {
        let Some(op) = &op else { return };
        let step = match total {
            Some(total) => (read * 100).checked_div(total).unwrap_or(100),
            None => read >> 20,
        };
        if last == Some(step) {
            return;
        }
        last = Some(step);
        let secs = start.elapsed().as_secs_f64().max(0.001);
        let speed = byte_size((read as f64 / secs) as u64);
        let done = match total {
            Some(_) => format!("{step}%"),
            None => byte_size(read),
        };
        let text = match label {
            Some(label) => format!("{label}: {done} ({speed}/s)"),
            None => format!("{done} ({speed}/s)"),
        };
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
        let lxd = PullSource::new("https://x", "lxd", "pull", "a", "").unwrap();
        assert_eq!(lxd.protocol, Protocol::Lxd);
        assert_eq!(
            PullSource::new("https://x", "", "", "a", "")
                .unwrap()
                .protocol,
            Protocol::Lxd
        );
        // LXD's API is HTTPS only.
        assert!(PullSource::new("http://x", "lxd", "pull", "a", "").is_err());
        assert!(PullSource::new("https://x", "direct", "pull", "a", "").is_err());
        assert!(lxd
            .clone()
            .with_credentials("not a certificate", "")
            .is_err());
        let id = hutch_tls::Identity::generate(hutch_tls::Kind::Server).unwrap();
        let pinned = lxd.with_credentials(&id.cert_pem, "s").unwrap();
        assert_eq!(
            (pinned.certificate.as_str(), pinned.secret.as_str()),
            (id.cert_pem.as_str(), "s")
        );
        assert!(PullSource::new("https://x", "simplestreams", "push", "a", "").is_err());
        assert!(PullSource::new("x", "simplestreams", "pull", "a", "").is_err());
        assert!(PullSource::new("https://x", "simplestreams", "pull", "", "").is_err());
        // OCI registries (Incus's protocol name), over HTTP too.
        let oci = PullSource::new("http://127.0.0.1:5000", "oci", "pull", "a/b:1", "").unwrap();
        assert_eq!((oci.protocol, oci.name.as_str()), (Protocol::Oci, "a/b:1"));
    }
}
