//! `hutch image export-streams DIR [ALIAS...]`: writes local images as a static
//! simplestreams tree (`streams/v1/*.json` and `images/...`) that any web server can serve to
//! hutch and to LXD's `lxc` (`lxc remote add x https://host/ --protocol simplestreams`).
//!
//! Each image is exported through the API (`GET /1.0/images/<fp>/export`, one file or a
//! split image's two) and published with the tree writer of hutch-images. Product fields come
//! from the image's properties (`os`, `release`, `architecture`, `variant`, `serial`); the
//! image's local aliases become the product's aliases. A tree that already exists is added
//! to: a newer serial of a product becomes its newest version.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hutch_images::streams_tree::{StreamsFiles, StreamsImage, StreamsTree};
use serde_json::Value;

use crate::http::{encode, Client};

/// `hutch image export-streams` arguments.
#[derive(Args)]
pub struct ExportStreamsArgs {
    /// The tree's root directory (made if missing; an existing tree is added to).
    pub dir: PathBuf,
    /// Images to export (aliases or fingerprints); by default every image with an alias.
    pub images: Vec<String>,
}

/// Runs `hutch image export-streams`.
pub fn run(client: &Client, args: ExportStreamsArgs) -> Result<()> {
    let fingerprints = chosen_images(client, &args.images)?;
    if fingerprints.is_empty() {
        bail!("no images to export: name some, or give local images an alias");
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    // Exports land next to the tree, so they are hard-linked into it rather than copied,
    // and go away with this directory whatever happens.
    let scratch = TempDir::new(&args.dir)?;
    let mut images = Vec::new();
    for (i, fp) in fingerprints.iter().enumerate() {
        let info = client.get(&format!("/1.0/images/{}", encode(fp)))?;
        let export_dir = scratch.path.join(i.to_string());
        std::fs::create_dir(&export_dir)?;
        super::image::export(client, fp, Some(&export_dir))
            .with_context(|| format!("export image {fp}"))?;
        let files = exported_files(&export_dir, fp)?;
        images.push(streams_image(&info, files)?);
    }
    let published = StreamsTree::new(&args.dir)
        .hard_link(true)
        .add_all(&images)
        .with_context(|| format!("write the simplestreams tree in {}", args.dir.display()))?;
    for (image, p) in images.iter().zip(&published) {
        let aliases = if image.aliases.is_empty() {
            "-".to_string()
        } else {
            image.aliases.join(",")
        };
        println!(
            "{aliases}  {}  {}  {}",
            p.product, image.serial, p.fingerprint
        );
    }
    println!(
        "Simplestreams tree written to {} ({} image{})",
        args.dir.display(),
        published.len(),
        if published.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// The fingerprints to export: the named images, or every image with an alias.
fn chosen_images(client: &Client, names: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    if names.is_empty() {
        let list = client.get("/1.0/images?recursion=1")?;
        for image in list.as_array().into_iter().flatten() {
            let has_alias = image["aliases"].as_array().is_some_and(|a| !a.is_empty());
            if let (true, Some(fp)) = (has_alias, image["fingerprint"].as_str()) {
                out.push(fp.to_string());
            }
        }
        out.sort();
        return Ok(out);
    }
    // Aliases from the list: hutchd refuses a `/` (`debian/12`) in an alias in the URL.
    let aliases = client.get("/1.0/images/aliases?recursion=1")?;
    let target_of = |name: &str| {
        aliases.as_array().into_iter().flatten().find_map(|a| {
            (a["name"].as_str() == Some(name))
                .then(|| a["target"].as_str().map(str::to_string))
                .flatten()
        })
    };
    for name in names {
        let name = name.strip_prefix("local:").unwrap_or(name);
        let fp = match target_of(name) {
            Some(fp) => fp,
            None => super::resolve_image(client, name)?,
        };
        if fp.is_empty() {
            bail!("Image {name:?} not found");
        }
        if !out.contains(&fp) {
            out.push(fp);
        }
    }
    Ok(out)
}

/// What an export wrote: one file (unified) or two (split: the metadata part is named
/// `meta-<fp>...`, or `<fp>` with the rootfs at `<fp>.root` when the parts had no names).
fn exported_files(dir: &Path, fp: &str) -> Result<StreamsFiles> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    match files.len() {
        1 => Ok(StreamsFiles::Unified {
            tarball: files.remove(0),
        }),
        2 => {
            let is_meta = |p: &PathBuf| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with("meta-") || name == fp
            };
            let meta_at = files
                .iter()
                .position(is_meta)
                .ok_or_else(|| anyhow!("export of {fp}: no metadata part among {files:?}"))?;
            let meta = files.remove(meta_at);
            Ok(StreamsFiles::Split {
                meta,
                rootfs: files.remove(0),
            })
        }
        n => bail!("export of {fp} wrote {n} files, expected 1 or 2"),
    }
}

/// The product arch as the public servers name it (`amd64`), from a property or LXD's name.
fn product_arch(info: &Value) -> String {
    if let Some(a) = info["properties"]["architecture"].as_str() {
        if !a.is_empty() {
            return a.to_string();
        }
    }
    match info["architecture"].as_str().unwrap_or_default() {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "i686" => "i386",
        "armv7l" => "armhf",
        "ppc64le" => "ppc64el",
        "" => "amd64",
        other => other,
    }
    .to_string()
}

/// `YYYYMMDD_HH:MM` of an RFC 3339 time, as the public servers write serials.
fn serial_of(created_at: &str) -> Option<String> {
    let digits: String = created_at.chars().filter(char::is_ascii_digit).collect();
    (digits.len() >= 12 && !created_at.starts_with("0001"))
        .then(|| format!("{}_{}:{}", &digits[..8], &digits[8..10], &digits[10..12]))
}

/// A product field: no `/`, `:`, `,` or spaces (they separate keys and paths).
fn field(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if matches!(c, '/' | ':' | ',') || c.is_whitespace() {
                '-'
            } else {
                c
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

fn streams_image(info: &Value, files: StreamsFiles) -> Result<StreamsImage> {
    let fp = info["fingerprint"].as_str().unwrap_or_default();
    if info["type"].as_str() == Some("virtual-machine") {
        bail!("image {fp} is a virtual-machine image; export-streams writes container images");
    }
    let prop = |k: &str| {
        info["properties"][k]
            .as_str()
            .map(field)
            .filter(|v| !v.is_empty())
    };
    let aliases: Vec<String> = info["aliases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["name"].as_str())
        .filter(|a| !a.contains(',') && !a.contains(char::is_whitespace))
        .map(str::to_string)
        .collect();
    let os = prop("os").unwrap_or_else(|| "hutch".into());
    // Aliases belong to a product, not to one of its versions: images with no release of
    // their own get one from their first alias (or fingerprint), so unrelated images never
    // share a product.
    let release = prop("release").unwrap_or_else(|| {
        field(
            aliases
                .first()
                .map(String::as_str)
                .unwrap_or(&fp[..fp.len().min(12)]),
        )
    });
    let serial = info["properties"]["serial"]
        .as_str()
        .filter(|s| !s.contains(['/', ',']) && !s.contains(char::is_whitespace))
        .map(str::to_string)
        .filter(|s| s.len() >= 8 && s.as_bytes()[..8].iter().all(u8::is_ascii_digit))
        .or_else(|| serial_of(info["created_at"].as_str().unwrap_or_default()))
        .or_else(|| serial_of(info["uploaded_at"].as_str().unwrap_or_default()))
        .ok_or_else(|| anyhow!("image {fp} has no serial and no creation date"))?;
    Ok(StreamsImage {
        os,
        release_title: info["properties"]["release_title"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        version: prop("version").unwrap_or_default(),
        release,
        arch: field(&product_arch(info)),
        variant: prop("variant").unwrap_or_else(|| "default".into()),
        serial,
        aliases,
        files,
    })
}

/// A scratch directory inside the tree's root, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(parent: &Path) -> Result<Self> {
        let path = parent.join(format!(".export-streams-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn unified() -> StreamsFiles {
        StreamsFiles::Unified {
            tarball: PathBuf::from("/x"),
        }
    }

    #[test]
    fn products_come_from_properties_as_public_images_carry_them() {
        let info = json!({
            "fingerprint": "abcdef0123456789", "architecture": "x86_64", "type": "container",
            "created_at": "2024-05-01T05:24:00Z",
            "aliases": [{"name": "debian/12"}, {"name": "deb"}],
            "properties": {"os": "Debian", "release": "bookworm", "variant": "cloud",
                           "serial": "20240501_05:24", "architecture": "amd64", "version": "12"}
        });
        let img = streams_image(&info, unified()).unwrap();
        assert_eq!(
            (
                img.os.as_str(),
                img.release.as_str(),
                img.arch.as_str(),
                img.variant.as_str()
            ),
            ("Debian", "bookworm", "amd64", "cloud")
        );
        assert_eq!(img.serial, "20240501_05:24");
        assert_eq!(img.version, "12");
        assert_eq!(img.aliases, ["debian/12", "deb"]);
    }

    #[test]
    fn missing_properties_get_defaults_that_keep_images_apart() {
        let info = json!({
            "fingerprint": "abcdef0123456789", "architecture": "aarch64", "type": "container",
            "created_at": "2023-11-14T22:13:20Z", "aliases": [{"name": "my/bb"}],
            "properties": {"os": "busybox", "serial": "not-a-date"}
        });
        let img = streams_image(&info, unified()).unwrap();
        assert_eq!(img.os, "busybox");
        assert_eq!(img.release, "my-bb");
        assert_eq!(img.arch, "arm64");
        assert_eq!(img.variant, "default");
        assert_eq!(img.serial, "20231114_22:13");

        let bare = json!({"fingerprint": "abcdef0123456789", "architecture": "x86_64",
                          "created_at": "2023-11-14T22:13:20Z", "properties": {}});
        let img = streams_image(&bare, unified()).unwrap();
        assert_eq!(
            (img.os.as_str(), img.release.as_str()),
            ("hutch", "abcdef012345")
        );

        let vm = json!({"fingerprint": "ab", "type": "virtual-machine"});
        assert!(streams_image(&vm, unified()).is_err());
    }

    #[test]
    fn exported_files_tell_meta_from_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meta-ab.tar.xz"), b"m").unwrap();
        std::fs::write(dir.path().join("ab.tar.xz"), b"r").unwrap();
        match exported_files(dir.path(), "ab").unwrap() {
            StreamsFiles::Split { meta, rootfs } => {
                assert!(meta.ends_with("meta-ab.tar.xz"));
                assert!(rootfs.ends_with("ab.tar.xz"));
            }
            other => panic!("{other:?}"),
        }
        let one = tempfile::tempdir().unwrap();
        std::fs::write(one.path().join("ab.tar.gz"), b"u").unwrap();
        assert!(matches!(
            exported_files(one.path(), "ab").unwrap(),
            StreamsFiles::Unified { .. }
        ));
    }
}
