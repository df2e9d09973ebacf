//! Writing an image as an OCI archive or a `docker save` tarball, from layer tars and a
//! run config: what tests build their images with (and an export could use later).

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::{OciError, RunConfig};

/// An image to write: its layers (plain tars, lowest first) and what it runs.
#[derive(Debug, Clone)]
pub struct ImageToWrite<'a> {
    /// GOARCH name (`amd64`).
    pub architecture: &'a str,
    pub run: &'a RunConfig,
    pub layers: &'a [Vec<u8>],
    /// Store the layers of an OCI archive gzip-compressed.
    pub gzip: bool,
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn config_json(image: &ImageToWrite) -> Vec<u8> {
    let r = image.run;
    let ports: serde_json::Map<String, Value> = r
        .exposed_ports
        .iter()
        .map(|p| (p.clone(), json!({})))
        .collect();
    let config = json!({
        "architecture": image.architecture,
        "os": "linux",
        "config": {
            "Entrypoint": r.entrypoint,
            "Cmd": r.cmd,
            "Env": r.env,
            "WorkingDir": r.working_dir.clone().unwrap_or_default(),
            "User": r.user.clone().unwrap_or_default(),
            "ExposedPorts": ports,
            "Labels": r.labels,
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": image.layers.iter().map(|l| sha256(l)).collect::<Vec<_>>(),
        },
    });
    config.to_string().into_bytes()
}

/// A layer: the tar of the tree at `root` (symlinks stored as links), uncompressed, for
/// [`ImageToWrite::layers`].
pub fn tree_layer(root: &Path) -> Result<Vec<u8>, OciError> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", root)
        .map_err(|e| OciError::io("tar", root, e))?;
    b.into_inner().map_err(|e| OciError::io("tar", root, e))
}

fn add(b: &mut tar::Builder<File>, name: &str, data: &[u8], path: &Path) -> Result<(), OciError> {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data)
        .map_err(|e| OciError::io("write", path, e))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writes into memory cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// Writes `image` as an OCI image layout in a tar at `path`; returns the manifest digest.
pub fn write_oci_archive(path: &Path, image: &ImageToWrite) -> Result<String, OciError> {
    let file = File::create(path).map_err(|e| OciError::io("create", path, e))?;
    let mut b = tar::Builder::new(file);
    add(
        &mut b,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        path,
    )?;
    let config = config_json(image);
    add(&mut b, &blob_name(&config), &config, path)?;
    let mut layers = Vec::new();
    for layer in image.layers {
        let (data, media) = if image.gzip {
            (gzip(layer), "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (layer.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        add(&mut b, &blob_name(&data), &data, path)?;
        layers.push(json!({"mediaType": media, "digest": sha256(&data), "size": data.len()}));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(&config),
            "size": config.len(),
        },
        "layers": layers,
    })
    .to_string()
    .into_bytes();
    add(&mut b, &blob_name(&manifest), &manifest, path)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest),
            "size": manifest.len(),
            "platform": {"architecture": image.architecture, "os": "linux"},
        }],
    })
    .to_string();
    add(&mut b, "index.json", index.as_bytes(), path)?;
    b.finish().map_err(|e| OciError::io("write", path, e))?;
    Ok(sha256(&manifest))
}

fn blob_name(data: &[u8]) -> String {
    format!("blobs/sha256/{}", &sha256(data)[7..])
}

/// Writes `image` as a `docker save` tarball at `path` (layers uncompressed, as docker
/// writes them).
pub fn write_docker_archive(path: &Path, image: &ImageToWrite) -> Result<(), OciError> {
    let file = File::create(path).map_err(|e| OciError::io("create", path, e))?;
    let mut b = tar::Builder::new(file);
    let config = config_json(image);
    let config_name = format!("{}.json", &sha256(&config)[7..]);
    add(&mut b, &config_name, &config, path)?;
    let mut names = Vec::new();
    for layer in image.layers {
        let name = format!("{}/layer.tar", &sha256(layer)[7..]);
        add(&mut b, &name, layer, path)?;
        names.push(name);
    }
    let manifest =
        json!([{"Config": config_name, "RepoTags": ["hutch/test:latest"], "Layers": names}]);
    add(
        &mut b,
        "manifest.json",
        manifest.to_string().as_bytes(),
        path,
    )?;
    b.finish().map_err(|e| OciError::io("write", path, e))
}
