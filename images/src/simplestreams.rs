//! The simplestreams client: reads a server's `streams/v1/index.json` and its products
//! files, turns them into images as LXD 5.0 does (meta item paired with each rootfs item,
//! `combined_*_sha256` fingerprints, aliases with the native architecture first), and
//! downloads an image's files with every byte hashed.
//!
//! CONTRACT (other modules are written against these names; keep them):
//! - [`SimpleStreams::new`], [`SimpleStreams::images`], [`SimpleStreams::resolve`],
//!   [`SimpleStreams::open`].
//! - [`RemoteImage`], [`RemoteFile`], [`host_architecture`].

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::ImageError;

/// One file of a remote image, as the products file names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Relative to the server's base URL.
    pub path: String,
    pub sha256: String,
    pub size: u64,
    /// The item's `ftype`: `lxd.tar.xz`, `squashfs`, `root.tar.xz`, `lxd_combined.tar.gz`.
    pub ftype: String,
}

/// One image a simplestreams server offers, shaped as LXD shapes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteImage {
    /// sha256 of the meta file followed by the rootfs (or of the unified file).
    pub fingerprint: String,
    /// LXD's name: `x86_64`, `aarch64`.
    pub architecture: String,
    /// `container` (disk images, `virtual-machine`, are listed but never pulled).
    pub kind: String,
    /// Every alias that resolves to this image on this server (`debian/12`,
    /// `debian/12/amd64`, ...), in the order LXD registers them.
    pub aliases: Vec<String>,
    /// `os`, `release`, `version`, `architecture` (`amd64`), `label`, `serial`, `variant`,
    /// `type` (the rootfs ftype), `description`.
    pub properties: BTreeMap<String, String>,
    /// RFC 3339, from the version key's `YYYYMMDD`.
    pub created_at: String,
    /// meta plus rootfs.
    pub size: u64,
    /// The meta file's base name (`lxd.tar.xz`).
    pub filename: String,
    /// The metadata tarball (split images) or the unified tarball.
    pub meta: RemoteFile,
    /// The rootfs of a split image; `None` for a unified one.
    pub rootfs: Option<RemoteFile>,
}

/// The host's architecture as LXD names it (`x86_64`, `aarch64`).
pub fn host_architecture() -> String {
    lxd_architecture(std::env::consts::ARCH)
        .unwrap_or(std::env::consts::ARCH)
        .to_string()
}

/// LXD's name for an architecture known by any of its aliases (`amd64` is `x86_64`), or
/// `None` for one LXD does not know (such products are skipped, as LXD skips them).
pub fn lxd_architecture(name: &str) -> Option<&'static str> {
    const TABLE: &[(&str, &[&str])] = &[
        ("i686", &["i386", "i586", "386", "x86"]),
        ("x86_64", &["amd64"]),
        (
            "armv7l",
            &[
                "armel", "armhf", "arm", "armhfp", "armv7a", "armv7hl", "armv7hnl", "armv7nl",
                "armv7nhl",
            ],
        ),
        ("aarch64", &["arm64", "arm64v8"]),
        ("ppc", &["powerpc"]),
        ("ppc64", &["powerpc64"]),
        ("ppc64le", &["ppc64el"]),
        ("s390x", &[]),
        ("mips", &[]),
        ("mips64", &[]),
        ("riscv32", &[]),
        ("riscv64", &[]),
        ("loongarch64", &[]),
    ];
    TABLE
        .iter()
        .find(|(lxd, aliases)| *lxd == name || aliases.contains(&name))
        .map(|(lxd, _)| *lxd)
}

/// The architectures a host runs natively, preferred first (LXD's personalities).
fn native_architectures() -> Vec<String> {
    let native = host_architecture();
    let personality = match native.as_str() {
        "x86_64" => Some("i686"),
        "aarch64" => Some("armv7l"),
        "ppc64" => Some("ppc"),
        _ => None,
    };
    std::iter::once(native)
        .chain(personality.map(str::to_string))
        .collect()
}

/// How long a server's parsed products are reused without asking again: long enough that
/// a launch's resolve and download (and a burst of launches) cost one fetch.
const PRODUCTS_TTL: Duration = Duration::from_secs(5);

/// Parsed products per base URL, with when they were fetched.
type ProductsCache = Mutex<HashMap<String, (Instant, Arc<Catalog>)>>;

fn products_cache() -> &'static ProductsCache {
    static CACHE: std::sync::OnceLock<ProductsCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// A JSON file as last received, with the validators to ask whether it changed.
#[derive(Debug, Clone)]
struct KeptJson {
    etag: Option<String>,
    last_modified: Option<String>,
    text: Arc<str>,
}

fn json_cache() -> &'static Mutex<HashMap<String, KeptJson>> {
    static CACHE: std::sync::OnceLock<Mutex<HashMap<String, KeptJson>>> =
        std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// A server's images and the aliases registered for them.
#[derive(Debug, Default)]
struct Catalog {
    images: Vec<RemoteImage>,
    /// `(name, type, architecture, fingerprint)` in registration order.
    aliases: Vec<(String, String, String, String)>,
}

/// A simplestreams server at a base URL (`https://images.linuxcontainers.org`). HTTPS is
/// verified against the system's CA store, `SSL_CERT_FILE` and `SSL_CERT_DIR` honoured.
#[derive(Debug, Clone)]
pub struct SimpleStreams {
    base: String,
    agent: ureq::Agent,
}

impl SimpleStreams {
    /// A client for the server at `base` (`https://` or `http://`).
    pub fn new(base: &str) -> Result<Self, ImageError> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(ImageError::Invalid(format!(
                "image server URL {base:?} is neither https:// nor http://"
            )));
        }
        Ok(Self {
            base,
            agent: crate::http::agent()?,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Drops what is remembered of this server's products, so the next call asks again
    /// (a refresh must see a newly published version at once).
    pub fn forget_cached(&self) {
        products_cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.base);
    }

    /// Every image the server offers (fetches the index and the products files).
    pub fn images(&self) -> Result<Vec<RemoteImage>, ImageError> {
        Ok(self.catalog()?.images.clone())
    }

    fn catalog(&self) -> Result<Arc<Catalog>, ImageError> {
        if let Some((at, cat)) = products_cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&self.base)
        {
            if at.elapsed() < PRODUCTS_TTL {
                return Ok(cat.clone());
            }
        }
        let index: Index = self.get_json("streams/v1/index.json")?;
        let mut images = Vec::new();
        for entry in index.index.values() {
            if entry.datatype != "image-downloads" || entry.products.is_empty() {
                continue;
            }
            let products: Products = self.get_json(&entry.path)?;
            images.extend(products.to_images());
        }
        let catalog = Arc::new(build_catalog(images));
        products_cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.base.clone(), (Instant::now(), catalog.clone()));
        Ok(catalog)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    fn remote_err(
        &self,
        what: &str,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ImageError {
        ImageError::Remote {
            server: self.base.clone(),
            what: what.to_string(),
            source: e.into(),
        }
    }

    fn get(&self, path: &str) -> Result<ureq::Response, ImageError> {
        self.agent
            .get(&self.url(path))
            .call()
            .map_err(|e| self.remote_err(path, Box::new(e)))
    }

    /// A JSON file of the server, asked for with the validators (`ETag`, `Last-Modified`)
    /// of the copy kept from last time: a `304 Not Modified` costs no body.
    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ImageError> {
        let url = self.url(path);
        let kept = json_cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&url)
            .cloned();
        let mut request = self.agent.get(&url);
        if let Some(kept) = &kept {
            if let Some(etag) = &kept.etag {
                request = request.set("If-None-Match", etag);
            }
            if let Some(modified) = &kept.last_modified {
                request = request.set("If-Modified-Since", modified);
            }
        }
        let response = request
            .call()
            .map_err(|e| self.remote_err(path, Box::new(e)))?;
        let text = match (response.status(), kept) {
            (304, Some(kept)) => kept.text,
            _ => {
                let etag = response.header("ETag").map(str::to_string);
                let last_modified = response.header("Last-Modified").map(str::to_string);
                let mut text = String::new();
                response
                    .into_reader()
                    .take(256 << 20)
                    .read_to_string(&mut text)
                    .map_err(|e| self.remote_err(path, e))?;
                let text: Arc<str> = text.into();
                if etag.is_some() || last_modified.is_some() {
                    json_cache()
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(
                            url,
                            KeptJson {
                                etag,
                                last_modified,
                                text: text.clone(),
                            },
                        );
                }
                text
            }
        };
        serde_json::from_str(&text).map_err(|e| ImageError::RemoteInvalid {
            server: self.base.clone(),
            message: format!("{path}: {e}"),
        })
    }

    /// The image `name` names: an alias first (native architecture first), then a
    /// fingerprint prefix. Errors as LXD's: `The requested image couldn't be found`,
    /// `More than one match for the provided partial fingerprint`.
    pub fn resolve(&self, name: &str) -> Result<RemoteImage, ImageError> {
        self.catalog()?.resolve(name).cloned()
    }

    /// Opens one file of an image for reading. The reader checks what it yields against
    /// `file.sha256` and `file.size`: at the end of the stream, a mismatch or a short body is
    /// an `io::Error` of kind `InvalidData` naming the server and the path, so a consumer
    /// (an unpacker fed from it) fails before anything is kept. `progress` is called with
    /// the bytes read so far.
    pub fn open(
        &self,
        file: &RemoteFile,
        progress: Box<dyn FnMut(u64) + Send>,
    ) -> Result<Box<dyn Read + Send>, ImageError> {
        let response = self.get(&file.path)?;
        Ok(Box::new(VerifyingReader {
            inner: response.into_reader(),
            hasher: Sha256::new(),
            read: 0,
            expected_size: file.size,
            expected_sha256: file.sha256.to_ascii_lowercase(),
            name: self.url(&file.path),
            progress,
            done: false,
        }))
    }
}

impl Catalog {
    fn resolve(&self, name: &str) -> Result<&RemoteImage, ImageError> {
        let natives = native_architectures();
        let rank = |arch: &str| {
            natives
                .iter()
                .position(|n| n == arch)
                .unwrap_or(natives.len())
        };
        // A stable sort: native architecture first, registration order otherwise.
        let mut candidates: Vec<_> = self.aliases.iter().filter(|a| a.0 == name).collect();
        candidates.sort_by_key(|a| rank(&a.2));
        // The server asks for containers; virtual-machine images are never pulled.
        if let Some((_, _, _, fp)) = candidates.iter().find(|a| a.1 == "container") {
            if let Some(image) = self.images.iter().find(|i| &i.fingerprint == fp) {
                return Ok(image);
            }
        }
        let prefix = name.to_ascii_lowercase();
        let mut matches = self
            .images
            .iter()
            .filter(|i| i.fingerprint.starts_with(&prefix));
        match (matches.next(), matches.next()) {
            (Some(image), None) => Ok(image),
            (None, _) => Err(ImageError::RemoteNotFound(
                "The requested image couldn't be found".into(),
            )),
            (Some(_), Some(_)) => Err(ImageError::RemoteNotFound(
                "More than one match for the provided partial fingerprint".into(),
            )),
        }
    }
}

/// Sorts images as LXD does and registers their aliases, the first registration of a
/// `(name, type, architecture)` winning; each image keeps the aliases it won.
fn build_catalog(mut images: Vec<RemoteImage>) -> Catalog {
    let type_rank = |i: &RemoteImage| match i.properties.get("type").map(String::as_str) {
        Some("squashfs") => 0,
        Some("root.tar.xz") | Some("tar.gz") => 1,
        _ => 2,
    };
    images.sort_by(|a, b| {
        let p = |i: &RemoteImage, k: &str| i.properties.get(k).cloned().unwrap_or_default();
        p(a, "os")
            .cmp(&p(b, "os"))
            .then_with(|| p(a, "release").cmp(&p(b, "release")))
            .then_with(|| p(a, "variant").cmp(&p(b, "variant")))
            .then_with(|| p(b, "serial").cmp(&p(a, "serial")))
            .then_with(|| a.architecture.cmp(&b.architecture))
            .then_with(|| type_rank(a).cmp(&type_rank(b)))
    });
    let mut aliases: Vec<(String, String, String, String)> = Vec::new();
    for image in &mut images {
        let names = std::mem::take(&mut image.aliases);
        let product_arch = image
            .properties
            .get("architecture")
            .cloned()
            .unwrap_or_default();
        for name in names {
            for alias in [name.clone(), format!("{name}/{product_arch}")] {
                let taken = aliases
                    .iter()
                    .any(|a| a.0 == alias && a.1 == image.kind && a.2 == image.architecture);
                if !taken {
                    aliases.push((
                        alias.clone(),
                        image.kind.clone(),
                        image.architecture.clone(),
                        image.fingerprint.clone(),
                    ));
                    image.aliases.push(alias);
                }
            }
        }
    }
    Catalog { images, aliases }
}

/// `streams/v1/index.json`.
#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    index: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, Deserialize)]
struct IndexEntry {
    #[serde(default)]
    datatype: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    products: Vec<String>,
}

/// A products file (`products:1.0`).
#[derive(Debug, Deserialize)]
struct Products {
    #[serde(default)]
    products: BTreeMap<String, Product>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Product {
    aliases: String,
    arch: String,
    os: String,
    release: String,
    release_title: String,
    variant: String,
    version: String,
    versions: BTreeMap<String, ProductVersion>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ProductVersion {
    label: String,
    items: BTreeMap<String, Item>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
struct Item {
    ftype: String,
    path: String,
    sha256: String,
    size: u64,
    combined_sha256: String,
    combined_squashfs_sha256: String,
    combined_rootxz_sha256: String,
    #[serde(rename = "combined_disk-kvm-img_sha256")]
    combined_disk_kvm_img_sha256: String,
    #[serde(rename = "combined_disk1-img_sha256")]
    combined_disk1_img_sha256: String,
    #[serde(rename = "combined_uefi1-img_sha256")]
    combined_uefi1_img_sha256: String,
}

const ROOTFS_FTYPES: &[&str] = &[
    "disk1.img",
    "disk-kvm.img",
    "uefi1.img",
    "root.tar.xz",
    "squashfs",
];

impl Products {
    /// The images of every product, as LXD 5.0's `ToLXD` makes them.
    fn to_images(&self) -> Vec<RemoteImage> {
        let mut images = Vec::new();
        for product in self.products.values() {
            let Some(architecture) = lxd_architecture(&product.arch) else {
                continue;
            };
            for (serial, version) in &product.versions {
                let Some(created_at) = created_at(serial) else {
                    continue;
                };
                for meta in version.items.values() {
                    if meta.ftype == "lxd_combined.tar.gz" {
                        images.extend(image_of(
                            product,
                            architecture,
                            serial,
                            &created_at,
                            version,
                            meta,
                            None,
                        ));
                    }
                    if meta.ftype == "lxd.tar.xz" {
                        for root in version.items.values() {
                            if ROOTFS_FTYPES.contains(&root.ftype.as_str()) {
                                images.extend(image_of(
                                    product,
                                    architecture,
                                    serial,
                                    &created_at,
                                    version,
                                    meta,
                                    Some(root),
                                ));
                            }
                        }
                    }
                }
            }
        }
        images
    }
}

/// A version key's first 8 characters (`YYYYMMDD`) as an RFC 3339 date.
fn created_at(serial: &str) -> Option<String> {
    let day = serial.get(..8)?;
    if !day.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d) = (&day[..4], &day[4..6], &day[6..8]);
    let (mi, di): (u32, u32) = (m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&mi) || !(1..=31).contains(&di) {
        return None;
    }
    Some(format!("{y}-{m}-{d}T00:00:00Z"))
}

/// One image of a meta item paired with a rootfs item (or a unified item alone); `None`
/// when the pair carries no fingerprint, as LXD skips it.
fn image_of(
    product: &Product,
    architecture: &str,
    serial: &str,
    created_at: &str,
    version: &ProductVersion,
    meta: &Item,
    root: Option<&Item>,
) -> Option<RemoteImage> {
    let fingerprint = match root.map(|r| r.ftype.as_str()) {
        None => &meta.sha256,
        Some("root.tar.xz") if !meta.combined_rootxz_sha256.is_empty() => {
            &meta.combined_rootxz_sha256
        }
        Some("root.tar.xz") => &meta.combined_sha256,
        Some("squashfs") => &meta.combined_squashfs_sha256,
        Some("disk-kvm.img") => &meta.combined_disk_kvm_img_sha256,
        Some("disk1.img") => &meta.combined_disk1_img_sha256,
        Some("uefi1.img") => &meta.combined_uefi1_img_sha256,
        Some(_) => return None,
    };
    if fingerprint.is_empty() || meta.path.is_empty() {
        return None;
    }
    let mut description = format!("{} {} {}", product.os, product.release_title, product.arch);
    if !version.label.is_empty() {
        description = format!("{description} ({})", version.label);
    }
    description = format!("{description} ({serial})");
    let kind = match root.map(|r| r.ftype.as_str()) {
        Some("disk1.img" | "disk-kvm.img" | "uefi1.img") => "virtual-machine",
        _ => "container",
    };
    let mut properties: BTreeMap<String, String> = [
        ("os", product.os.as_str()),
        ("release", product.release.as_str()),
        ("version", product.version.as_str()),
        ("architecture", product.arch.as_str()),
        ("label", version.label.as_str()),
        ("serial", serial),
        ("description", description.as_str()),
        ("variant", product.variant.as_str()),
        ("type", root.map(|r| r.ftype.as_str()).unwrap_or("tar.gz")),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    properties.retain(|_, v| !v.is_empty());
    let file = |item: &Item| RemoteFile {
        path: item.path.clone(),
        sha256: item.sha256.to_ascii_lowercase(),
        size: item.size,
        ftype: item.ftype.clone(),
    };
    Some(RemoteImage {
        fingerprint: fingerprint.to_ascii_lowercase(),
        architecture: architecture.to_string(),
        kind: kind.to_string(),
        aliases: product
            .aliases
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect(),
        properties,
        created_at: created_at.to_string(),
        size: meta.size + root.map_or(0, |r| r.size),
        filename: meta.path.rsplit('/').next().unwrap_or_default().to_string(),
        meta: file(meta),
        rootfs: root.map(file),
    })
}

/// Yields a remote file's bytes, hashing and counting them; the end of the stream (or a
/// broken connection) is an `InvalidData` error unless every byte was there and right.
struct VerifyingReader {
    inner: Box<dyn Read + Send + Sync>,
    hasher: Sha256,
    read: u64,
    expected_size: u64,
    expected_sha256: String,
    /// The file's full URL, for errors.
    name: String,
    progress: Box<dyn FnMut(u64) + Send>,
    done: bool,
}

impl VerifyingReader {
    fn fail(&mut self, what: String) -> std::io::Error {
        self.done = true;
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}", self.name),
        )
    }
}

impl Read for VerifyingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let read = self.read;
                return Err(self.fail(format!("download interrupted after {read} bytes: {e}")));
            }
        };
        if n == 0 {
            if self.read != self.expected_size {
                let (read, want) = (self.read, self.expected_size);
                return Err(self.fail(format!("truncated: got {read} bytes of {want}")));
            }
            let got = hex::encode(std::mem::take(&mut self.hasher).finalize());
            if got != self.expected_sha256 {
                let want = self.expected_sha256.clone();
                return Err(self.fail(format!("sha256 mismatch: got {got}, expected {want}")));
            }
            self.done = true;
            return Ok(0);
        }
        self.read += n as u64;
        if self.read > self.expected_size {
            let want = self.expected_size;
            return Err(self.fail(format!("longer than the {want} bytes announced")));
        }
        self.hasher.update(&buf[..n]);
        (self.progress)(self.read);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    const NATIVE_ARCH: &str = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    const OTHER_ARCH: &str = if cfg!(target_arch = "aarch64") {
        "amd64"
    } else {
        "arm64"
    };

    fn products() -> String {
        let product = |arch: &str, serial_fp: &[(&str, &str, &str)]| {
            let versions: Vec<String> = serial_fp
                .iter()
                .map(|(serial, sq, xz)| {
                    format!(
                        r#""{serial}": {{"label": "", "items": {{
                        "lxd.tar.xz": {{"ftype": "lxd.tar.xz", "path": "images/d/{arch}/{serial}/lxd.tar.xz", "sha256": "m{serial}", "size": 10,
                            "combined_squashfs_sha256": "{sq}", "combined_rootxz_sha256": "{xz}"}},
                        "root.squashfs": {{"ftype": "squashfs", "path": "images/d/{arch}/{serial}/rootfs.squashfs", "sha256": "s", "size": 100}},
                        "root.tar.xz": {{"ftype": "root.tar.xz", "path": "images/d/{arch}/{serial}/rootfs.tar.xz", "sha256": "x", "size": 90}}
                    }}}}"#
                    )
                })
                .collect();
            format!(
                r#""debian:bookworm:{arch}:default": {{"aliases": "debian/12,debian/bookworm", "arch": "{arch}",
                "os": "Debian", "release": "bookworm", "release_title": "bookworm", "variant": "default", "version": "12",
                "versions": {{{}}}}}"#,
                versions.join(",")
            )
        };
        format!(
            r#"{{"content_id": "images", "datatype": "image-downloads", "format": "products:1.0", "products": {{
            {},
            {},
            "weird:1:sparc:default": {{"aliases": "weird", "arch": "sparc", "os": "Weird", "release": "1",
                "versions": {{"20240101_00:00": {{"items": {{"lxd_combined.tar.gz": {{"ftype": "lxd_combined.tar.gz", "path": "w.tar.gz", "sha256": "ee", "size": 1}}}}}}}}}},
            "busybox:1:{NATIVE_ARCH}:default": {{"aliases": "busybox/1", "arch": "{NATIVE_ARCH}", "os": "Busybox", "release": "1",
                "release_title": "1", "versions": {{
                    "2024": {{"items": {{"lxd_combined.tar.gz": {{"ftype": "lxd_combined.tar.gz", "path": "short.tar.gz", "sha256": "dd", "size": 1}}}}}},
                    "20240102_00:00": {{"label": "tiny", "items": {{"lxd_combined.tar.gz": {{"ftype": "lxd_combined.tar.gz", "path": "images/b/u.tar.gz", "sha256": "CC01", "size": 7}}}}}}}}}}
            }}}}"#,
            product(
                NATIVE_ARCH,
                &[
                    ("20240501_05:24", "aa01", "aa02"),
                    ("20240601_05:24", "ab01", "ab02")
                ]
            ),
            product(OTHER_ARCH, &[("20240601_05:24", "ba01", "")]),
        )
    }

    fn catalog() -> Catalog {
        let p: Products = serde_json::from_str(&products()).unwrap();
        build_catalog(p.to_images())
    }

    #[test]
    fn products_become_lxd_images() {
        let cat = catalog();
        let fps: Vec<&str> = cat.images.iter().map(|i| i.fingerprint.as_str()).collect();
        // The unknown architecture and the short version key are skipped; the other-arch
        // root.tar.xz pair has no hash and is skipped too.
        assert_eq!(fps.len(), 6, "{fps:?}");
        let bb = cat.images.iter().find(|i| i.fingerprint == "cc01").unwrap();
        assert_eq!(bb.rootfs, None);
        assert_eq!(bb.created_at, "2024-01-02T00:00:00Z");
        assert_eq!(bb.properties["type"], "tar.gz");
        assert_eq!(
            bb.properties["description"],
            format!("Busybox 1 {NATIVE_ARCH} (tiny) (20240102_00:00)")
        );
        assert_eq!(bb.filename, "u.tar.gz");
        let deb = cat.images.iter().find(|i| i.fingerprint == "ab01").unwrap();
        assert_eq!(deb.architecture, host_architecture());
        assert_eq!(deb.properties["architecture"], NATIVE_ARCH);
        assert_eq!(deb.properties["type"], "squashfs");
        assert_eq!(deb.properties["version"], "12");
        assert_eq!(deb.properties["serial"], "20240601_05:24");
        assert_eq!(
            deb.properties["description"],
            format!("Debian bookworm {NATIVE_ARCH} (20240601_05:24)")
        );
        assert!(!deb.properties.contains_key("label"));
        assert_eq!(deb.size, 110);
        assert_eq!(deb.filename, "lxd.tar.xz");
        assert_eq!(deb.meta.ftype, "lxd.tar.xz");
        assert_eq!(deb.rootfs.as_ref().unwrap().ftype, "squashfs");
        let xz = cat.images.iter().find(|i| i.fingerprint == "ab02").unwrap();
        assert_eq!(
            xz.rootfs.as_ref().unwrap().path,
            format!("images/d/{NATIVE_ARCH}/20240601_05:24/rootfs.tar.xz")
        );
    }

    #[test]
    fn aliases_pick_the_newest_native_squashfs() {
        let cat = catalog();
        assert_eq!(cat.resolve("debian/12").unwrap().fingerprint, "ab01");
        assert_eq!(cat.resolve("debian/bookworm").unwrap().fingerprint, "ab01");
        assert_eq!(
            cat.resolve(&format!("debian/12/{NATIVE_ARCH}"))
                .unwrap()
                .fingerprint,
            "ab01"
        );
        assert_eq!(
            cat.resolve(&format!("debian/12/{OTHER_ARCH}"))
                .unwrap()
                .fingerprint,
            "ba01"
        );
        assert_eq!(cat.resolve("busybox/1").unwrap().fingerprint, "cc01");
        // The newest image holds the aliases; the older one keeps none.
        let old = cat.images.iter().find(|i| i.fingerprint == "aa01").unwrap();
        assert!(old.aliases.is_empty(), "{:?}", old.aliases);
        let new = cat.images.iter().find(|i| i.fingerprint == "ab01").unwrap();
        assert_eq!(
            new.aliases[..2],
            ["debian/12".to_string(), format!("debian/12/{NATIVE_ARCH}")]
        );
    }

    #[test]
    fn fingerprint_prefixes_resolve_with_lxd_errors() {
        let cat = catalog();
        assert_eq!(
            cat.resolve("aa0").unwrap_err().to_string(),
            "More than one match for the provided partial fingerprint"
        );
        assert_eq!(cat.resolve("aa02").unwrap().fingerprint, "aa02");
        assert_eq!(
            cat.resolve("nope/1").unwrap_err().to_string(),
            "The requested image couldn't be found"
        );
        assert_eq!(
            cat.resolve("ffff").unwrap_err().to_string(),
            "The requested image couldn't be found"
        );
    }

    #[test]
    fn architectures_map_as_lxd() {
        assert_eq!(lxd_architecture("amd64"), Some("x86_64"));
        assert_eq!(lxd_architecture("x86_64"), Some("x86_64"));
        assert_eq!(lxd_architecture("arm64"), Some("aarch64"));
        assert_eq!(lxd_architecture("aarch64"), Some("aarch64"));
        assert_eq!(lxd_architecture("sparc"), None);
        assert!(created_at("20241340").is_none());
        assert_eq!(
            created_at("20240501_05:24").unwrap(),
            "2024-05-01T00:00:00Z"
        );
    }

    /// Serves each connection one canned answer (`body`, announced as `length` bytes).
    fn serve(answers: Vec<(Vec<u8>, usize)>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (body, length) in answers {
                let Ok((mut conn, _)) = listener.accept() else {
                    return;
                };
                let mut req = [0u8; 4096];
                let _ = std::io::Read::read(&mut conn, &mut req);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
                );
                let _ = conn.write_all(&body);
            }
        });
        format!("http://{addr}")
    }

    fn file(body: &[u8]) -> RemoteFile {
        RemoteFile {
            path: "images/x/rootfs.tar.xz".into(),
            sha256: hex::encode(Sha256::digest(body)),
            size: body.len() as u64,
            ftype: "root.tar.xz".into(),
        }
    }

    #[test]
    fn open_checks_every_byte() {
        let body = b"hello image bytes".to_vec();
        let mut bad = body.clone();
        bad[0] = b'j';
        let base = serve(vec![
            (body.clone(), body.len()),
            (bad, body.len()),
            (body[..5].to_vec(), body.len()),
        ]);
        let ss = SimpleStreams::new(&base).unwrap();
        let seen = Arc::new(Mutex::new(0));
        let seen2 = seen.clone();
        let mut out = Vec::new();
        ss.open(&file(&body), Box::new(move |n| *seen2.lock().unwrap() = n))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
        assert_eq!(*seen.lock().unwrap(), body.len() as u64);
        for want in ["sha256 mismatch", "rootfs.tar.xz"] {
            let err = ss
                .open(&file(&body), Box::new(|_| {}))
                .unwrap()
                .read_to_end(&mut Vec::new())
                .unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
            assert!(err.to_string().contains(&base), "{err}");
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn unreachable_servers_are_named() {
        let base = serve(vec![]);
        std::thread::sleep(Duration::from_millis(50));
        let ss = SimpleStreams::new(&base).unwrap();
        let err = ss.images().unwrap_err();
        assert!(matches!(err, ImageError::Remote { .. }), "{err}");
        assert!(err.to_string().contains(&base), "{err}");
        assert!(SimpleStreams::new("ftp://x").is_err());
    }

    /// Answers each connection with one raw response; returns the base URL and the
    /// requests received.
    fn serve_raw(answers: Vec<String>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((mut conn, _)) = listener.accept() else {
                    return;
                };
                let mut req = [0u8; 4096];
                let n = std::io::Read::read(&mut conn, &mut req).unwrap_or(0);
                seen2
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&req[..n]).into_owned());
                let _ = conn.write_all(answer.as_bytes());
            }
        });
        (format!("http://{addr}"), seen)
    }

    #[test]
    fn unchanged_products_cost_no_body() {
        let index = r#"{"format": "index:1.0", "index": {"images": {"datatype": "image-downloads",
            "path": "streams/v1/images.json", "products": ["busybox:1:amd64:default"]},
            "other": {"datatype": "image-ids", "path": "ids-only.json", "products": ["a"]},
            "empty": {"datatype": "image-downloads", "path": "no-products.json", "products": []}}}"#;
        let products = products();
        let ok = |body: &str, etag: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        let not_modified = "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n".to_string();
        let (base, seen) = serve_raw(vec![
            ok(index, "\"i1\""),
            ok(&products, "\"p1\""),
            not_modified.clone(),
            not_modified,
        ]);
        let ss = SimpleStreams::new(&base).unwrap();
        let first = ss.images().unwrap();
        assert_eq!(first.len(), 6);
        ss.forget_cached();
        assert_eq!(ss.images().unwrap(), first);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(seen[2].contains("If-None-Match: \"i1\""), "{}", seen[2]);
        assert!(seen[3].contains("If-None-Match: \"p1\""), "{}", seen[3]);
        // Only image-downloads entries with products are read.
        assert!(!seen
            .iter()
            .any(|r| r.contains("ids-only") || r.contains("no-products")));
    }
}
