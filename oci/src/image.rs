//! Finding the image in a layout: the index resolved to the manifest for this host, the
//! manifest and config read with their digests checked, the layers listed with how each is
//! to be verified and decompressed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest as _, Sha256};

use crate::{flatten_layer, FlattenLimits, OciError};

/// Most bytes of an index, manifest or config read into memory.
const MAX_JSON: u64 = 8 << 20;

/// Where an image's files come from: an archive now, a registry later.
pub trait BlobSource {
    /// Whether the layout has the file `name` (`index.json`, `blobs/sha256/<hex>`).
    fn exists(&self, name: &str) -> bool;
    /// The content of the file `name`.
    fn open(&self, name: &str) -> Result<Box<dyn Read + '_>, OciError>;
}

/// How a layer's content is checked while it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerCheck {
    /// The blob as stored hashes to this digest (OCI layouts).
    Blob(String),
    /// The uncompressed tar hashes to this digest (docker-save's diff ids).
    Uncompressed(String),
}

/// One layer of an image, in the order they apply.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The file in the layout holding it.
    pub file: String,
    pub check: LayerCheck,
}

/// What the image says to run, from its config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// An image found in a layout, checked up to its layers (which are checked as they are
/// applied).
#[derive(Debug, Clone)]
pub struct OciImage {
    /// The manifest's digest (OCI layouts); docker-save archives have none.
    pub manifest_digest: Option<String>,
    pub config_digest: String,
    /// GOARCH name (`amd64`).
    pub architecture: String,
    pub run: RunConfig,
    pub layers: Vec<Layer>,
}

/// The GOARCH name of this host, as OCI images name architectures.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Reads the image of `source`: an OCI layout (`index.json`) or a docker-save archive
/// (`manifest.json`), for this host's architecture.
pub fn read_image(source: &dyn BlobSource) -> Result<OciImage, OciError> {
    if source.exists("index.json") {
        read_layout(source)
    } else if source.exists("manifest.json") {
        read_docker(source)
    } else {
        Err(OciError::Missing(
            "index.json (OCI layout) or manifest.json (docker save)".into(),
        ))
    }
}

/// Applies `layer` of `source` onto `rootfs`, its digest checked once it was read whole.
pub fn apply_layer(
    source: &dyn BlobSource,
    layer: &Layer,
    rootfs: &Path,
    limits: FlattenLimits,
    total: &mut u64,
) -> Result<(), OciError> {
    let raw = source.open(&layer.file)?;
    match &layer.check {
        LayerCheck::Blob(digest) => {
            let mut checked = Hashing::new(raw, digest)?;
            flatten_layer(
                decompress(&mut checked, &layer.file)?,
                rootfs,
                limits,
                total,
            )?;
            checked.finish()
        }
        LayerCheck::Uncompressed(digest) => {
            let mut checked = Hashing::new(decompress(raw, &layer.file)?, digest)?;
            flatten_layer(&mut checked, rootfs, limits, total)?;
            checked.finish()
        }
    }
}

/// A reader that hashes what passes through, to be compared with `digest` at the end.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    digest: String,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R, digest: &str) -> Result<Self, OciError> {
        sha256_hex(digest)?;
        Ok(Hashing {
            inner,
            hasher: Sha256::new(),
            digest: digest.to_string(),
        })
    }

    /// Reads what is left (tar padding) and compares the digest.
    fn finish(mut self) -> Result<(), OciError> {
        std::io::copy(&mut self, &mut std::io::sink())
            .map_err(|e| OciError::io("read", &self.digest, e))?;
        let actual = hex::encode(self.hasher.finalize());
        if Some(actual.as_str()) != self.digest.strip_prefix("sha256:") {
            return Err(OciError::DigestMismatch {
                digest: self.digest,
                actual,
            });
        }
        Ok(())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A layer decompressed as its first bytes say (gzip, zstd, or a plain tar).
fn decompress<'a>(mut reader: impl Read + 'a, name: &str) -> Result<Box<dyn Read + 'a>, OciError> {
    let mut magic = Vec::with_capacity(4);
    (&mut reader)
        .take(4)
        .read_to_end(&mut magic)
        .map_err(|e| OciError::io("read", name, e))?;
    let reader = std::io::Cursor::new(magic.clone()).chain(reader);
    Ok(match &magic[..] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(reader)),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(
            zstd::stream::read::Decoder::new(reader).map_err(|e| OciError::io("read", name, e))?,
        ),
        _ => Box::new(reader),
    })
}

/// The hex of a `sha256:<hex>` digest, checked.
fn sha256_hex(digest: &str) -> Result<&str, OciError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h),
        _ => Err(OciError::UnsupportedDigest(digest.to_string())),
    }
}

/// The layout file of blob `digest`.
fn blob_file(digest: &str) -> Result<String, OciError> {
    Ok(format!("blobs/sha256/{}", sha256_hex(digest)?))
}

/// A whole small file of the layout.
fn read_small(source: &dyn BlobSource, name: &str) -> Result<Vec<u8>, OciError> {
    let mut data = Vec::new();
    source
        .open(name)?
        .take(MAX_JSON + 1)
        .read_to_end(&mut data)
        .map_err(|e| OciError::io("read", name, e))?;
    if data.len() as u64 > MAX_JSON {
        return Err(OciError::invalid(name, "larger than 8 MiB"));
    }
    Ok(data)
}

/// A blob read whole and checked against its descriptor's digest.
fn read_blob(source: &dyn BlobSource, desc: &Descriptor) -> Result<Vec<u8>, OciError> {
    let digest = desc.digest().to_string();
    let data = read_small(source, &blob_file(&digest)?)?;
    check_digest(&data, &digest)?;
    Ok(data)
}

fn check_digest(data: &[u8], digest: &str) -> Result<(), OciError> {
    let actual = hex::encode(Sha256::digest(data));
    if Some(actual.as_str()) != digest.strip_prefix("sha256:") {
        return Err(OciError::DigestMismatch {
            digest: digest.to_string(),
            actual,
        });
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(data: &[u8], what: &str) -> Result<T, OciError> {
    serde_json::from_slice(data).map_err(|source| OciError::Json {
        what: what.to_string(),
        source,
    })
}

/// An OCI image layout: index → (nested index →) manifest → config and layers.
fn read_layout(source: &dyn BlobSource) -> Result<OciImage, OciError> {
    let index: ImageIndex = parse(&read_small(source, "index.json")?, "index.json")?;
    let mut manifests = index.manifests().clone();
    // An index may point at another index (skopeo, buildkit); two levels are enough.
    for _ in 0..2 {
        let desc = pick_manifest(&manifests)?;
        if *desc.media_type() != MediaType::ImageIndex {
            let data = read_blob(source, &desc)?;
            let manifest: ImageManifest = parse(&data, "image manifest")?;
            return from_manifest(source, &desc, &manifest);
        }
        let nested: ImageIndex = parse(&read_blob(source, &desc)?, "image index")?;
        manifests = nested.manifests().clone();
    }
    Err(OciError::invalid("index.json", "indexes nested too deep"))
}

/// The manifest for this host among an index's: by platform, or the only one.
fn pick_manifest(manifests: &[Descriptor]) -> Result<Descriptor, OciError> {
    let wanted = format!("linux/{}", host_arch());
    let platform_of = |d: &Descriptor| {
        d.platform()
            .as_ref()
            .map(|p| format!("{}/{}", p.os(), p.architecture()))
    };
    if let Some(d) = manifests
        .iter()
        .find(|d| platform_of(d).as_deref() == Some(wanted.as_str()))
    {
        return Ok(d.clone());
    }
    match manifests {
        [] => Err(OciError::Missing("manifest in index.json".into())),
        [only] if only.platform().is_none() => Ok(only.clone()),
        _ => Err(OciError::WrongPlatform {
            wanted,
            have: manifests
                .iter()
                .map(|d| platform_of(d).unwrap_or_else(|| "unknown".into()))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn from_manifest(
    source: &dyn BlobSource,
    desc: &Descriptor,
    manifest: &ImageManifest,
) -> Result<OciImage, OciError> {
    let config_desc = manifest.config();
    let config: ImageConfiguration = parse(&read_blob(source, config_desc)?, "image config")?;
    let layers = manifest
        .layers()
        .iter()
        .map(|l| {
            let digest = l.digest().to_string();
            Ok(Layer {
                file: blob_file(&digest)?,
                check: LayerCheck::Blob(digest),
            })
        })
        .collect::<Result<Vec<_>, OciError>>()?;
    finish(
        Some(desc.digest().to_string()),
        config_desc.digest().to_string(),
        &config,
        layers,
    )
}

/// One image of a docker-save `manifest.json`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    layers: Vec<String>,
}

/// A `docker save` archive: its config is named by its digest, its layers are checked
/// against the config's diff ids.
fn read_docker(source: &dyn BlobSource) -> Result<OciImage, OciError> {
    let list: Vec<DockerManifest> = parse(&read_small(source, "manifest.json")?, "manifest.json")?;
    let [manifest] = &list[..] else {
        return Err(OciError::invalid(
            "manifest.json",
            format!("{} images; import archives of one image", list.len()),
        ));
    };
    let data = read_small(source, &manifest.config)?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    // The config is named by its digest (`<hex>.json`, or `blobs/sha256/<hex>`).
    let stem = manifest
        .config
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches(".json");
    if stem.len() == 64 && Some(stem) != digest.strip_prefix("sha256:") {
        return Err(OciError::DigestMismatch {
            digest: format!("sha256:{stem}"),
            actual: digest[7..].to_string(),
        });
    }
    let config: ImageConfiguration = parse(&data, "image config")?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers.len() {
        return Err(OciError::invalid(
            "manifest.json",
            format!(
                "{} layers but the config lists {} diff ids",
                manifest.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let layers = manifest
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(file, id)| Layer {
            file: file.trim_start_matches("./").to_string(),
            check: LayerCheck::Uncompressed(id.clone()),
        })
        .collect();
    finish(None, digest, &config, layers)
}

/// Checks the config's platform and gathers what it says to run.
fn finish(
    manifest_digest: Option<String>,
    config_digest: String,
    config: &ImageConfiguration,
    layers: Vec<Layer>,
) -> Result<OciImage, OciError> {
    let have = format!("{}/{}", config.os(), config.architecture());
    let wanted = format!("linux/{}", host_arch());
    if have != wanted {
        return Err(OciError::WrongPlatform { wanted, have });
    }
    let run = config
        .config()
        .as_ref()
        .map(|c| RunConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
            user: c.user().clone().filter(|u| !u.is_empty()),
            exposed_ports: c.exposed_ports().clone().unwrap_or_default(),
            labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
        })
        .unwrap_or_default();
    Ok(OciImage {
        manifest_digest,
        config_digest,
        architecture: config.architecture().to_string(),
        run,
        layers,
    })
}
