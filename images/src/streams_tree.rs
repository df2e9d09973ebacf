//! Writing a static simplestreams tree (what `hutch image export-streams` makes): image files
//! under `images/<os>/<release>/<arch>/<variant>/<serial>/`, and `streams/v1/index.json` and
//! `streams/v1/images.json` in the shape LXD 5.0's client and hutch's
//! [`crate::simplestreams`] client read (LXD-API.md §11):
//!
//! - a split image is an `lxd.tar.xz` meta item (whatever its compression; LXD matches items
//!   by `ftype` and detects the compression itself) and a `root.tar.xz` or `squashfs` rootfs
//!   item; the meta item carries `combined_rootxz_sha256` and `combined_sha256` (tar rootfs)
//!   or `combined_squashfs_sha256`: sha256 of the meta file followed by the rootfs, which is
//!   the image's fingerprint;
//! - a unified image is one `lxd_combined.tar.gz` item whose `sha256` is the fingerprint.
//!
//! Adding to an existing tree keeps what is there: a newer serial becomes another version of
//! its product (clients take the newest), so a tree can be republished for auto-update.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{detect_extension, ImageError};

/// The files of one image to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamsFiles {
    /// A metadata tarball and a rootfs (a tar, any compression, or a squashfs).
    Split { meta: PathBuf, rootfs: PathBuf },
    /// One tarball holding `metadata.yaml` and `rootfs/`.
    Unified { tarball: PathBuf },
}

/// One image to publish and the product it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsImage {
    /// As the public images spell it: `Debian`, `Alpine`, `busybox`. Lowercased in the
    /// product key and the path.
    pub os: String,
    /// `bookworm`, `12`, `edge`.
    pub release: String,
    /// Shown in descriptions; the release when empty.
    pub release_title: String,
    /// The `version` property (`12`); may be empty.
    pub version: String,
    /// The product architecture as the public server names it (`amd64`, `arm64`).
    pub arch: String,
    /// `default`, `cloud`.
    pub variant: String,
    /// The version key: at least 8 characters starting `YYYYMMDD` (LXD dates the image by
    /// it and skips others), e.g. `20240501_05:24`.
    pub serial: String,
    /// Product aliases (`debian/12`, `debian/12/default`). An alias another product of the
    /// same architecture had moves to this one.
    pub aliases: Vec<String>,
    pub files: StreamsFiles,
}

/// Where an image went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The fingerprint clients will see (and hutch and LXD verify).
    pub fingerprint: String,
    /// `os:release:arch:variant`.
    pub product: String,
    /// Tree-relative paths of the meta (or unified) file and of the rootfs.
    pub meta_path: String,
    pub rootfs_path: Option<String>,
}

/// `streams/v1/index.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Index {
    format: String,
    index: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct IndexEntry {
    datatype: String,
    path: String,
    format: String,
    products: Vec<String>,
}

/// `streams/v1/images.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Products {
    content_id: String,
    datatype: String,
    format: String,
    products: BTreeMap<String, Product>,
}

impl Default for Products {
    fn default() -> Self {
        Products {
            content_id: "images".into(),
            datatype: "image-downloads".into(),
            format: "products:1.0".into(),
            products: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Product {
    aliases: String,
    arch: String,
    os: String,
    release: String,
    release_title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    variant: String,
    versions: BTreeMap<String, Version>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Version {
    items: BTreeMap<String, Item>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Item {
    ftype: String,
    path: String,
    sha256: String,
    size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    combined_sha256: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    combined_rootxz_sha256: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    combined_squashfs_sha256: String,
}

const INDEX_PATH: &str = "streams/v1/index.json";
const PRODUCTS_PATH: &str = "streams/v1/images.json";

/// A simplestreams tree in a directory (made on first write).
#[derive(Debug, Clone)]
pub struct StreamsTree {
    root: PathBuf,
    hard_link: bool,
}

impl StreamsTree {
    /// The tree rooted at `root`; files are copied into it.
    pub fn new(root: &Path) -> Self {
        StreamsTree {
            root: root.to_path_buf(),
            hard_link: false,
        }
    }

    /// Hard-links files into the tree where the filesystem allows (copies otherwise). Only
    /// for sources nothing else will modify: a file changed in the tree changes the source.
    pub fn hard_link(mut self, yes: bool) -> Self {
        self.hard_link = yes;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Publishes one image and rewrites the index.
    pub fn add(&self, image: &StreamsImage) -> Result<Published, ImageError> {
        Ok(self.add_all(std::slice::from_ref(image))?.remove(0))
    }

    /// Publishes images and rewrites the index once. Every image is checked before anything
    /// is written; the JSON files are replaced atomically (written aside, then renamed).
    pub fn add_all(&self, images: &[StreamsImage]) -> Result<Vec<Published>, ImageError> {
        for image in images {
            validate(image)?;
        }
        let mut products = self.read_products()?;
        for image in images {
            check_serial_is_free(&products, image)?;
        }
        let mut published = Vec::with_capacity(images.len());
        for image in images {
            published.push(self.place(&mut products, image)?);
        }
        self.write_json(PRODUCTS_PATH, &products)?;
        let index = Index {
            format: "index:1.0".into(),
            index: BTreeMap::from([(
                "images".to_string(),
                IndexEntry {
                    datatype: "image-downloads".into(),
                    path: PRODUCTS_PATH.into(),
                    format: "products:1.0".into(),
                    products: products.products.keys().cloned().collect(),
                },
            )]),
        };
        self.write_json(INDEX_PATH, &index)?;
        Ok(published)
    }

    fn read_products(&self) -> Result<Products, ImageError> {
        let path = self.root.join(PRODUCTS_PATH);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ImageError::Invalid(format!("{} is not a products file: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Products::default()),
            Err(e) => Err(ImageError::io("read", &path, e)),
        }
    }

    fn write_json<T: Serialize>(&self, rel: &str, value: &T) -> Result<(), ImageError> {
        let path = self.root.join(rel);
        let text = serde_json::to_vec_pretty(value)
            .map_err(|e| ImageError::Invalid(format!("{rel}: {e}")))?;
        write_atomically(&path, |f| f.write_all(&text))
    }

    /// Puts an image's files in place and records them in `products`.
    fn place(
        &self,
        products: &mut Products,
        image: &StreamsImage,
    ) -> Result<Published, ImageError> {
        let os_key = image.os.to_ascii_lowercase();
        let key = format!(
            "{os_key}:{}:{}:{}",
            image.release, image.arch, image.variant
        );
        let dir_rel = format!(
            "images/{os_key}/{}/{}/{}/{}",
            image.release, image.arch, image.variant, image.serial
        );
        let mut items = BTreeMap::new();
        let (fingerprint, meta_path, rootfs_path) = match &image.files {
            StreamsFiles::Unified { tarball } => {
                let ext = tar_extension(tarball)?;
                let rel = format!("{dir_rel}/lxd_combined{ext}");
                let (sha256, size) = self.put(tarball, &rel)?;
                items.insert(
                    "lxd_combined.tar.gz".to_string(),
                    Item {
                        ftype: "lxd_combined.tar.gz".into(),
                        path: rel.clone(),
                        sha256: sha256.clone(),
                        size,
                        ..Item::default()
                    },
                );
                (sha256, rel, None)
            }
            StreamsFiles::Split { meta, rootfs } => {
                let meta_ext = tar_extension(meta)?;
                let root_ext = extension(rootfs)?;
                let meta_rel = format!("{dir_rel}/lxd{meta_ext}");
                let root_rel = format!("{dir_rel}/rootfs{root_ext}");
                let (meta_sha, meta_size) = self.put(meta, &meta_rel)?;
                let (root_sha, root_size) = self.put(rootfs, &root_rel)?;
                let combined =
                    combined_sha256(&[&self.root.join(&meta_rel), &self.root.join(&root_rel)])?;
                let mut meta_item = Item {
                    ftype: "lxd.tar.xz".into(),
                    path: meta_rel.clone(),
                    sha256: meta_sha,
                    size: meta_size,
                    ..Item::default()
                };
                let (root_key, root_ftype) = if root_ext == ".squashfs" {
                    meta_item.combined_squashfs_sha256 = combined.clone();
                    ("root.squashfs", "squashfs")
                } else {
                    meta_item.combined_rootxz_sha256 = combined.clone();
                    meta_item.combined_sha256 = combined.clone();
                    ("root.tar.xz", "root.tar.xz")
                };
                items.insert("lxd.tar.xz".to_string(), meta_item);
                items.insert(
                    root_key.to_string(),
                    Item {
                        ftype: root_ftype.into(),
                        path: root_rel.clone(),
                        sha256: root_sha,
                        size: root_size,
                        ..Item::default()
                    },
                );
                (combined, meta_rel, Some(root_rel))
            }
        };

        // The aliases move here from any other product of the same architecture.
        for (other_key, other) in products.products.iter_mut() {
            if *other_key != key && other.arch == image.arch {
                let kept: Vec<&str> = other
                    .aliases
                    .split(',')
                    .filter(|a| !a.is_empty() && !image.aliases.iter().any(|n| n == a))
                    .collect();
                other.aliases = kept.join(",");
            }
        }
        let product = products.products.entry(key.clone()).or_default();
        let mut aliases: Vec<String> = product
            .aliases
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        for a in &image.aliases {
            if !aliases.contains(a) {
                aliases.push(a.clone());
            }
        }
        product.aliases = aliases.join(",");
        product.arch = image.arch.clone();
        product.os = image.os.clone();
        product.release = image.release.clone();
        product.release_title = if image.release_title.is_empty() {
            image.release.clone()
        } else {
            image.release_title.clone()
        };
        product.version = image.version.clone();
        product.variant = image.variant.clone();
        let version = product.versions.entry(image.serial.clone()).or_default();
        merge_items(&mut version.items, items, &key, &image.serial)?;
        Ok(Published {
            fingerprint,
            product: key,
            meta_path,
            rootfs_path,
        })
    }

    /// Copies (or links) `src` to the tree-relative `rel`; returns its sha256 and size.
    fn put(&self, src: &Path, rel: &str) -> Result<(String, u64), ImageError> {
        let dest = self.root.join(rel);
        let parent = dest.parent().expect("tree paths have a parent");
        fs::create_dir_all(parent).map_err(|e| ImageError::io("create", parent, e))?;
        if self.hard_link {
            let _ = fs::remove_file(&dest);
            if fs::hard_link(src, &dest).is_ok() {
                let size = fs::metadata(&dest)
                    .map_err(|e| ImageError::io("stat", &dest, e))?
                    .len();
                return Ok((crate::fingerprint_file(&dest)?, size));
            }
        }
        let mut input = File::open(src).map_err(|e| ImageError::io("open", src, e))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        write_atomically(&dest, |out| {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = input.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                hasher.update(&buf[..n]);
                size += n as u64;
                out.write_all(&buf[..n])?;
            }
        })?;
        Ok((hex::encode(hasher.finalize()), size))
    }
}

/// Refuses, before any file is written, a serial already published with other files (the
/// files would overwrite what clients already verified).
fn check_serial_is_free(products: &Products, image: &StreamsImage) -> Result<(), ImageError> {
    let key = format!(
        "{}:{}:{}:{}",
        image.os.to_ascii_lowercase(),
        image.release,
        image.arch,
        image.variant
    );
    let Some(version) = products
        .products
        .get(&key)
        .and_then(|p| p.versions.get(&image.serial))
    else {
        return Ok(());
    };
    // Each source's ftype; a rootfs kind the version lacks may join it.
    let sources: Vec<(&str, &PathBuf)> = match &image.files {
        StreamsFiles::Split { meta, rootfs } => {
            let root_ftype = if extension(rootfs)? == ".squashfs" {
                "squashfs"
            } else {
                "root.tar.xz"
            };
            vec![("lxd.tar.xz", meta), (root_ftype, rootfs)]
        }
        StreamsFiles::Unified { tarball } => vec![("lxd_combined.tar.gz", tarball)],
    };
    for (ftype, src) in sources {
        if let Some(item) = version.items.values().find(|i| i.ftype == ftype) {
            if crate::fingerprint_file(src)? != item.sha256 {
                return Err(ImageError::Invalid(format!(
                    "{key} already has a serial {} with other files; publish a newer serial",
                    image.serial
                )));
            }
        }
    }
    Ok(())
}

/// Adds a version's items; a serial already published must carry the same files (publishing
/// the same image twice is a no-op, and a version may gain a second rootfs kind for the same
/// meta file).
fn merge_items(
    existing: &mut BTreeMap<String, Item>,
    new: BTreeMap<String, Item>,
    product: &str,
    serial: &str,
) -> Result<(), ImageError> {
    let conflict = || {
        ImageError::Invalid(format!(
            "{product} already has a serial {serial} with other files; publish a newer serial"
        ))
    };
    for (key, item) in new {
        match existing.get_mut(&key) {
            None => {
                existing.insert(key, item);
            }
            Some(old) if old.sha256 != item.sha256 || old.path != item.path => {
                return Err(conflict())
            }
            Some(old) => {
                // The same meta file: keep the combined hashes of both rootfs kinds.
                for (mine, theirs) in [
                    (&mut old.combined_sha256, item.combined_sha256),
                    (&mut old.combined_rootxz_sha256, item.combined_rootxz_sha256),
                    (
                        &mut old.combined_squashfs_sha256,
                        item.combined_squashfs_sha256,
                    ),
                ] {
                    if !theirs.is_empty() {
                        *mine = theirs;
                    }
                }
            }
        }
    }
    Ok(())
}

fn validate(image: &StreamsImage) -> Result<(), ImageError> {
    let bad = |what: &str, why: &str| Err(ImageError::Invalid(format!("{what}: {why}")));
    for (what, value) in [
        ("os", &image.os),
        ("release", &image.release),
        ("arch", &image.arch),
        ("variant", &image.variant),
    ] {
        if value.is_empty() {
            return bad(what, "must not be empty");
        }
        if value.contains(['/', ':', ','])
            || value.starts_with('.')
            || value.contains(char::is_whitespace)
        {
            return bad(
                what,
                &format!("{value:?} must not hold '/', ':', ',' or spaces, or start with '.'"),
            );
        }
    }
    let serial = &image.serial;
    let dated = serial.len() >= 8 && serial.as_bytes()[..8].iter().all(u8::is_ascii_digit);
    if !dated || serial.contains(['/', ',']) || serial.contains(char::is_whitespace) {
        return bad(
            "serial",
            &format!("{serial:?} must start with YYYYMMDD (e.g. 20240501_05:24) and hold no '/'"),
        );
    }
    for alias in &image.aliases {
        if alias.is_empty() || alias.contains(',') || alias.contains(char::is_whitespace) {
            return bad(
                "alias",
                &format!("{alias:?} must be non-empty, without ',' or spaces"),
            );
        }
    }
    let files: Vec<&PathBuf> = match &image.files {
        StreamsFiles::Split { meta, rootfs } => vec![meta, rootfs],
        StreamsFiles::Unified { tarball } => vec![tarball],
    };
    for f in files {
        if !f.is_file() {
            return bad("file", &format!("{} is not a file", f.display()));
        }
    }
    Ok(())
}

/// The extension a file's content calls for (`.tar.xz`, `.squashfs`...).
fn extension(path: &Path) -> Result<&'static str, ImageError> {
    let mut f = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
    let ext = detect_extension(&mut f).map_err(|e| ImageError::io("read", path, e))?;
    match ext {
        "" | ".qcow2" => Err(ImageError::Invalid(format!(
            "{} is neither a tarball nor a squashfs",
            path.display()
        ))),
        ext => Ok(ext),
    }
}

fn tar_extension(path: &Path) -> Result<&'static str, ImageError> {
    match extension(path)? {
        ".squashfs" => Err(ImageError::Invalid(format!(
            "{} is a squashfs where a tarball is needed",
            path.display()
        ))),
        ext => Ok(ext),
    }
}

/// sha256 of the files one after another: a split image's fingerprint.
pub fn combined_sha256(files: &[&Path]) -> Result<String, ImageError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    for path in files {
        let mut f = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| ImageError::io("read", path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Writes `path` through a temporary name in the same directory, renamed when complete, so
/// a server never serves a half-written file.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), ImageError> {
    let parent = path.parent().expect("tree paths have a parent");
    fs::create_dir_all(parent).map_err(|e| ImageError::io("create", parent, e))?;
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = File::create(&tmp)
        .and_then(|mut f| {
            write(&mut f)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(ImageError::io("write", path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 1);
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Files {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let p = self.dir.path().join(name);
            fs::write(&p, bytes).unwrap();
            p
        }
    }

    fn image(serial: &str, files: StreamsFiles) -> StreamsImage {
        StreamsImage {
            os: "Debian".into(),
            release: "bookworm".into(),
            release_title: String::new(),
            version: "12".into(),
            arch: "amd64".into(),
            variant: "default".into(),
            serial: serial.into(),
            aliases: vec!["debian/12".into(), "debian/bookworm".into()],
            files,
        }
    }

    fn json(root: &Path, rel: &str) -> serde_json::Value {
        serde_json::from_slice(&fs::read(root.join(rel)).unwrap()).unwrap()
    }

    #[test]
    fn a_split_image_gets_items_and_combined_hashes_as_lxd_reads_them() {
        let src = Files::new();
        let meta = src.file("m", &xz(b"metadata"));
        let rootfs = src.file("r", &xz(b"rootfs"));
        let tree_dir = tempfile::tempdir().unwrap();
        let tree = StreamsTree::new(tree_dir.path());
        let published = tree
            .add(&image(
                "20240501_05:24",
                StreamsFiles::Split {
                    meta: meta.clone(),
                    rootfs: rootfs.clone(),
                },
            ))
            .unwrap();

        let mut both = fs::read(&meta).unwrap();
        both.extend(fs::read(&rootfs).unwrap());
        let expected = hex::encode(Sha256::digest(&both));
        assert_eq!(published.fingerprint, expected);
        assert_eq!(published.product, "debian:bookworm:amd64:default");

        let index = json(tree_dir.path(), "streams/v1/index.json");
        assert_eq!(index["format"], "index:1.0");
        let entry = &index["index"]["images"];
        assert_eq!(entry["datatype"], "image-downloads");
        assert_eq!(entry["path"], "streams/v1/images.json");
        assert_eq!(entry["format"], "products:1.0");
        assert_eq!(
            entry["products"],
            serde_json::json!(["debian:bookworm:amd64:default"])
        );

        let products = json(tree_dir.path(), "streams/v1/images.json");
        assert_eq!(products["datatype"], "image-downloads");
        assert_eq!(products["format"], "products:1.0");
        let product = &products["products"]["debian:bookworm:amd64:default"];
        assert_eq!(product["aliases"], "debian/12,debian/bookworm");
        assert_eq!(product["os"], "Debian");
        assert_eq!(product["release_title"], "bookworm");
        assert_eq!(product["version"], "12");
        assert_eq!(product["variant"], "default");
        assert_eq!(product["arch"], "amd64");
        let items = &product["versions"]["20240501_05:24"]["items"];
        let m = &items["lxd.tar.xz"];
        assert_eq!(m["ftype"], "lxd.tar.xz");
        assert_eq!(
            m["path"],
            "images/debian/bookworm/amd64/default/20240501_05:24/lxd.tar.xz"
        );
        assert_eq!(
            m["sha256"],
            hex::encode(Sha256::digest(fs::read(&meta).unwrap()))
        );
        assert_eq!(m["size"], fs::metadata(&meta).unwrap().len());
        assert_eq!(m["combined_rootxz_sha256"], expected);
        assert_eq!(m["combined_sha256"], expected);
        assert!(m.get("combined_squashfs_sha256").is_none());
        let r = &items["root.tar.xz"];
        assert_eq!(r["ftype"], "root.tar.xz");
        assert_eq!(
            r["sha256"],
            hex::encode(Sha256::digest(fs::read(&rootfs).unwrap()))
        );
        // The files are in the tree where the items say, byte for byte.
        for item in [m, r] {
            let placed = tree_dir.path().join(item["path"].as_str().unwrap());
            assert_eq!(crate::fingerprint_file(&placed).unwrap(), item["sha256"]);
        }
        // Nothing temporary is left.
        let dir = tree_dir
            .path()
            .join("images/debian/bookworm/amd64/default/20240501_05:24");
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["lxd.tar.xz", "rootfs.tar.xz"]);
    }

    #[test]
    fn squashfs_and_unified_images_get_their_own_items() {
        let src = Files::new();
        let meta = src.file("m", &gz(b"metadata"));
        let squash = src.file("s", b"hsqs\x04\0\0\0 not really a squashfs");
        let unified = src.file("u", &gz(b"unified"));
        let tree_dir = tempfile::tempdir().unwrap();
        let tree = StreamsTree::new(tree_dir.path()).hard_link(true);
        let mut alpine = image(
            "20240601",
            StreamsFiles::Unified {
                tarball: unified.clone(),
            },
        );
        alpine.os = "Alpine".into();
        alpine.release = "edge".into();
        alpine.aliases = vec!["alpine/edge".into()];
        let published = tree
            .add_all(&[
                image(
                    "20240501_05:24",
                    StreamsFiles::Split {
                        meta: meta.clone(),
                        rootfs: squash.clone(),
                    },
                ),
                alpine,
            ])
            .unwrap();
        assert_eq!(
            published[0].fingerprint,
            combined_sha256(&[&meta, &squash]).unwrap()
        );
        assert_eq!(
            published[1].fingerprint,
            crate::fingerprint_file(&unified).unwrap()
        );

        let products = json(tree_dir.path(), "streams/v1/images.json");
        let items = &products["products"]["debian:bookworm:amd64:default"]["versions"]
            ["20240501_05:24"]["items"];
        let m = &items["lxd.tar.xz"];
        assert_eq!(m["ftype"], "lxd.tar.xz");
        assert!(m["path"].as_str().unwrap().ends_with("/lxd.tar.gz"));
        assert_eq!(m["combined_squashfs_sha256"], published[0].fingerprint);
        assert!(m.get("combined_rootxz_sha256").is_none());
        assert_eq!(items["root.squashfs"]["ftype"], "squashfs");
        assert!(items["root.squashfs"]["path"]
            .as_str()
            .unwrap()
            .ends_with("/rootfs.squashfs"));

        let u = &products["products"]["alpine:edge:amd64:default"]["versions"]["20240601"]["items"]
            ["lxd_combined.tar.gz"];
        assert_eq!(u["ftype"], "lxd_combined.tar.gz");
        assert_eq!(u["sha256"], published[1].fingerprint);
        assert_eq!(
            json(tree_dir.path(), "streams/v1/index.json")["index"]["images"]["products"],
            serde_json::json!(["alpine:edge:amd64:default", "debian:bookworm:amd64:default"])
        );
    }

    #[test]
    fn a_newer_serial_joins_the_product_and_republishing_is_a_no_op() {
        let src = Files::new();
        let tree_dir = tempfile::tempdir().unwrap();
        let tree = StreamsTree::new(tree_dir.path());
        let v1 = image(
            "20240501_05:24",
            StreamsFiles::Split {
                meta: src.file("m1", &xz(b"meta 1")),
                rootfs: src.file("r1", &xz(b"root 1")),
            },
        );
        let first = tree.add(&v1).unwrap();
        assert_eq!(tree.add(&v1).unwrap(), first);

        let mut v2 = image(
            "20240502_05:24",
            StreamsFiles::Split {
                meta: src.file("m2", &xz(b"meta 2")),
                rootfs: src.file("r2", &xz(b"root 2")),
            },
        );
        v2.aliases.push("debian/latest".into());
        let second = tree.add(&v2).unwrap();
        assert_ne!(first.fingerprint, second.fingerprint);

        let products = json(tree_dir.path(), "streams/v1/images.json");
        let product = &products["products"]["debian:bookworm:amd64:default"];
        let versions: Vec<_> = product["versions"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(versions, ["20240501_05:24", "20240502_05:24"]);
        assert_eq!(
            product["aliases"],
            "debian/12,debian/bookworm,debian/latest"
        );
        assert!(tree_dir.path().join(&first.meta_path).is_file());

        // The same serial with other files is refused and the tree is unchanged.
        let before = fs::read(tree_dir.path().join("streams/v1/images.json")).unwrap();
        let clash = image(
            "20240502_05:24",
            StreamsFiles::Split {
                meta: src.file("m3", &xz(b"meta 3")),
                rootfs: src.file("r3", &xz(b"root 3")),
            },
        );
        let err = tree.add(&clash).unwrap_err().to_string();
        assert!(err.contains("already has a serial 20240502_05:24"), "{err}");
        assert_eq!(
            fs::read(tree_dir.path().join("streams/v1/images.json")).unwrap(),
            before
        );
    }

    #[test]
    fn an_alias_moves_to_the_product_that_claims_it_last() {
        let src = Files::new();
        let tree_dir = tempfile::tempdir().unwrap();
        let tree = StreamsTree::new(tree_dir.path());
        let mut a = image(
            "20240501",
            StreamsFiles::Unified {
                tarball: src.file("a", &gz(b"a")),
            },
        );
        a.aliases = vec!["web".into(), "a".into()];
        tree.add(&a).unwrap();
        let mut b = image(
            "20240501",
            StreamsFiles::Unified {
                tarball: src.file("b", &gz(b"b")),
            },
        );
        b.variant = "cloud".into();
        b.aliases = vec!["web".into()];
        tree.add(&b).unwrap();
        let products = json(tree_dir.path(), "streams/v1/images.json");
        assert_eq!(
            products["products"]["debian:bookworm:amd64:default"]["aliases"],
            "a"
        );
        assert_eq!(
            products["products"]["debian:bookworm:amd64:cloud"]["aliases"],
            "web"
        );
    }

    #[test]
    fn bad_input_is_refused_before_anything_is_written() {
        let src = Files::new();
        let good = src.file("g", &gz(b"g"));
        let tree_dir = tempfile::tempdir().unwrap();
        let tree = StreamsTree::new(tree_dir.path().join("t").as_path());
        let cases: Vec<(StreamsImage, &str)> = vec![
            (
                image(
                    "2024",
                    StreamsFiles::Unified {
                        tarball: good.clone(),
                    },
                ),
                "serial",
            ),
            (
                image(
                    "latest01",
                    StreamsFiles::Unified {
                        tarball: good.clone(),
                    },
                ),
                "serial",
            ),
            (
                StreamsImage {
                    release: "../x".into(),
                    ..image(
                        "20240501",
                        StreamsFiles::Unified {
                            tarball: good.clone(),
                        },
                    )
                },
                "release",
            ),
            (
                StreamsImage {
                    aliases: vec!["a,b".into()],
                    ..image(
                        "20240501",
                        StreamsFiles::Unified {
                            tarball: good.clone(),
                        },
                    )
                },
                "alias",
            ),
            (
                image(
                    "20240501",
                    StreamsFiles::Unified {
                        tarball: src.dir.path().join("none"),
                    },
                ),
                "is not a file",
            ),
        ];
        for (img, word) in cases {
            let err = tree
                .add_all(std::slice::from_ref(&img))
                .unwrap_err()
                .to_string();
            assert!(err.contains(word), "{img:?}: {err}");
        }
        // Content that is no image is refused too.
        let junk = image(
            "20240501",
            StreamsFiles::Unified {
                tarball: src.file("j", b"junk"),
            },
        );
        assert!(tree.add(&junk).unwrap_err().to_string().contains("neither"));
        assert!(!tree_dir.path().join("t/streams").exists());
    }
}
