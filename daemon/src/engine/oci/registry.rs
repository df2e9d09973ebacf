//! Images pulled from OCI registries (remotes of protocol `oci`) with `oci-client`: the
//! tag or digest resolved to the manifest for this host (the WWW-Authenticate challenge
//! answered with a bearer token, anonymous or got with the credentials the host's root
//! logged in with: [`hutch_oci::find_credentials`]), the local
//! store searched for an image of that manifest digest (then nothing is downloaded), else
//! the manifest, config and layers (in parallel, each checked against its digest) written
//! as an OCI image layout into a scratch directory and imported from it as an archive is.
//! A failure at any step leaves no image, volume or file.

use std::path::Path;

use hutch_api::image::ImageSource;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::daemon::AppState;
use crate::db::images::ImageRow;
use crate::engine::cancel::Cancel;
use crate::engine::image_pull::{PullOptions, PullSource};
use crate::engine::images::{store_image, Upload};
use crate::error::{DaemonError, Result};

/// Layers downloaded at once.
const PARALLEL_LAYERS: usize = 4;

/// The registry `server` names (`https://docker.io`, `http://127.0.0.1:5000`), as the host
/// a reference starts with, and how to speak to it.
fn registry_of(server: &str) -> Result<(String, ClientProtocol)> {
    let (protocol, host) = if let Some(h) = server.strip_prefix("https://") {
        (ClientProtocol::Https, h)
    } else if let Some(h) = server.strip_prefix("http://") {
        (ClientProtocol::Http, h)
    } else {
        return Err(DaemonError::BadRequest(format!(
            "Invalid image server URL {server:?}"
        )));
    };
    let host = host.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(DaemonError::BadRequest(format!(
            "Invalid OCI registry URL {server:?} (a registry has no path)"
        )));
    }
    Ok((host.to_string(), protocol))
}

/// The reference `name` (`IMAGE[:TAG|@sha256:…]`) on the registry of `server`.
fn reference_of(server: &str, name: &str) -> Result<(Reference, ClientProtocol)> {
    let (host, protocol) = registry_of(server)?;
    let reference: Reference = format!("{host}/{name}")
        .parse()
        .map_err(|e| DaemonError::BadRequest(format!("Invalid OCI image name {name:?}: {e}")))?;
    Ok((reference, protocol))
}

/// Of an index's manifests, the one for this host.
fn host_platform(manifests: &[ImageIndexEntry]) -> Option<String> {
    let arch = hutch_oci::host_arch();
    manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os.to_string() == "linux" && p.architecture.to_string() == arch)
        })
        .map(|m| m.digest.clone())
}

fn client(protocol: ClientProtocol) -> Result<Client> {
    // reqwest is built without a crypto provider of its own: it takes the process's, ring
    // (as the rest of hutchd uses), installed once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_from(ClientConfig {
        protocol,
        platform_resolver: Some(Box::new(host_platform)),
        max_concurrent_download: PARALLEL_LAYERS,
        connect_timeout: Some(std::time::Duration::from_secs(15)),
        ..Default::default()
    })
    .map_err(|e| DaemonError::failed("make", "the OCI registry client", e))
}

/// How to authenticate to the registry of `reference`: the credentials of the host's
/// registry logins (`docker login`, `podman login`, `skopeo login`, or the file
/// `REGISTRY_AUTH_FILE` names, read at each pull), else anonymously.
fn registry_auth(reference: &Reference) -> Result<RegistryAuth> {
    let found = hutch_oci::find_credentials(
        &hutch_oci::auth_files(),
        reference.registry(),
        reference.repository(),
    )
    .map_err(|e| DaemonError::failed("read", "the registry credentials", e))?;
    Ok(match found {
        Some(c) => RegistryAuth::Basic(c.username, c.password),
        None => RegistryAuth::Anonymous,
    })
}

/// A registry error as the API reports it: a missing image is a 404, a refused login says
/// where credentials come from.
fn registry_error(
    reference: &Reference,
    e: oci_client::errors::OciDistributionError,
) -> DaemonError {
    use oci_client::errors::OciDistributionError as E;
    let name = reference.whole();
    match &e {
        E::ImageManifestNotFoundError(m) if m.contains("platform") => DaemonError::BadRequest(
            format!("No image for linux/{} in {name}", hutch_oci::host_arch()),
        ),
        E::ImageManifestNotFoundError(_) => DaemonError::NotFound(format!(
            "Failed getting remote image info: {name}: not found"
        )),
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|c| {
                matches!(
                    format!("{:?}", c.code).as_str(),
                    "ManifestUnknown" | "NameUnknown"
                )
            }) =>
        {
            DaemonError::NotFound(format!(
                "Failed getting remote image info: {name}: not found"
            ))
        }
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => denied(&name),
        E::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|c| matches!(format!("{:?}", c.code).as_str(), "Unauthorized" | "Denied")) =>
        {
            denied(&name)
        }
        _ => DaemonError::failed("pull", format!("OCI image {name}"), e),
    }
}

fn denied(name: &str) -> DaemonError {
    DaemonError::Forbidden(format!(
        "Failed getting remote image info: {name}: the registry refused access (log in to \
         it as root with `docker login`, `podman login` or `skopeo login`, or name an auth \
         file in REGISTRY_AUTH_FILE for hutchd)"
    ))
}

/// The local image of the OCI image `src` names, pulled from its registry unless the
/// store already holds an image of the same manifest digest.
pub async fn pull_registry(
    d: &AppState,
    src: &PullSource,
    opts: PullOptions,
    cancel: &Cancel,
) -> Result<ImageRow> {
    let (reference, protocol) = reference_of(&src.server, &src.name)?;
    let client = client(protocol)?;
    let auth = registry_auth(&reference)?;
    let (manifest, digest, _) = cancel
        .run(async {
            client
                .pull_image_manifest_and_list_digest(&reference, &auth)
                .await
                .map_err(|e| registry_error(&reference, e))
        })
        .await?;
    // Of two pulls of one manifest, the second waits and finds the first's image.
    let lock = d.image_locks.get(&digest);
    let _g = cancel.run(async { Ok(lock.lock().await) }).await?;
    if let Some(row) = image_of_manifest(d, &digest)? {
        return Ok(row);
    }
    let stem = format!(".upload-{}-oci", uuid::Uuid::new_v4());
    let scratch = d.dir.join("images").join(&stem);
    let packed = d.dir.join("images").join(format!("{stem}.tar.gz"));
    let made = async {
        make_dir(&scratch)?;
        let layout = scratch.join("layout");
        cancel
            .run(download(
                &client, &reference, &auth, &manifest, &digest, &layout,
            ))
            .await?;
        let (scratch2, packed2) = (scratch.clone(), packed.clone());
        tokio::task::spawn_blocking(move || {
            let source = hutch_oci::DirSource::new(&scratch2.join("layout"));
            super::import::convert(&source, &scratch2, &packed2)
        })
        .await?
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    let (fp, size) = match made {
        Ok(made) => made,
        Err(e) => {
            let _ = std::fs::remove_file(&packed);
            return Err(e);
        }
    };
    let stored = store(d, src, &reference, opts, &packed, &fp, size).await;
    Upload::Unified(packed).remove();
    stored?;
    d.events
        .lifecycle("image-created", &format!("/1.0/images/{fp}"), json!({}));
    d.db.image_by_prefix(&fp)
}

/// The image made from the manifest `digest`, when the store has one.
fn image_of_manifest(d: &AppState, digest: &str) -> Result<Option<ImageRow>> {
    Ok(d.db
        .images()?
        .into_iter()
        .find(|r| r.properties.get("oci.manifest_digest").map(String::as_str) == Some(digest)))
}

fn make_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| DaemonError::io("create", path, e))
}

/// Writes the image as an OCI layout in `layout`: the manifest as the registry serves it
/// (so its digest holds), config and layers as blobs, an index naming the manifest.
async fn download(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    manifest: &OciImageManifest,
    digest: &str,
    layout: &Path,
) -> Result<()> {
    let blobs = layout.join("blobs").join("sha256");
    tokio::fs::create_dir_all(&blobs)
        .await
        .map_err(|e| DaemonError::io("create", &blobs, e))?;
    let by_digest = reference.clone_with_digest(digest.to_string());
    let media_type = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.to_string());
    let (raw, _) = client
        .pull_manifest_raw(
            &by_digest,
            auth,
            &[
                oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
                oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
            ],
        )
        .await
        .map_err(|e| registry_error(reference, e))?;
    write(&blobs.join(blob_name(digest)?), &raw).await?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": media_type, "digest": digest, "size": raw.len()}],
    });
    write(&layout.join("index.json"), index.to_string().as_bytes()).await?;
    write(
        &layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .await?;
    let wanted: Vec<&OciDescriptor> = std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .collect();
    // A few at once; the pulls are gathered before the first is awaited.
    for batch in wanted.chunks(PARALLEL_LAYERS) {
        let pulls: Vec<_> = batch
            .iter()
            .map(|desc| pull_blob(client, reference, desc, &blobs))
            .collect();
        futures_util::future::try_join_all(pulls).await?;
    }
    Ok(())
}

/// The file name of blob `digest` (only a sha256 in hex becomes a path).
fn blob_name(digest: &str) -> Result<String> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(h.to_string())
        }
        _ => Err(DaemonError::BadRequest(format!(
            "Unsupported digest {digest:?} (only sha256 is)"
        ))),
    }
}

/// One blob into `blobs/`; `oci-client` checks it against its digest as it arrives (and
/// hutch-oci again as it reads it).
async fn pull_blob(
    client: &Client,
    reference: &Reference,
    desc: &OciDescriptor,
    blobs: &Path,
) -> Result<()> {
    let path = blobs.join(blob_name(&desc.digest)?);
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| DaemonError::io("create", &path, e))?;
    client
        .pull_blob(reference, desc, &mut file)
        .await
        .map_err(|e| registry_error(reference, e))?;
    file.flush()
        .await
        .map_err(|e| DaemonError::io("write", &path, e))
}

async fn write(path: &Path, data: &[u8]) -> Result<()> {
    tokio::fs::write(path, data)
        .await
        .map_err(|e| DaemonError::io("write", path, e))
}

/// Records the packed image `fp`: cached when pulled for an instance, refreshed from its
/// tag (not from a digest, which never changes).
async fn store(
    d: &AppState,
    src: &PullSource,
    reference: &Reference,
    opts: PullOptions,
    packed: &Path,
    fp: &str,
    size: u64,
) -> Result<()> {
    let auto_update = opts.auto_update(d)?;
    let update_source = reference.digest().is_none().then(|| ImageSource {
        alias: src.name.clone(),
        certificate: String::new(),
        protocol: "oci".into(),
        server: src.server.clone(),
        image_type: String::new(),
    });
    let filename = format!("{}.tar.gz", reference.repository().replace('/', "-"));
    let lock = d.image_locks.get(fp);
    let _g = lock.lock().await;
    let upload = Upload::Unified(packed.to_path_buf());
    store_image(d, &upload, fp, false, move |meta, now| ImageRow {
        fingerprint: fp.to_string(),
        filename,
        size: size as i64,
        architecture: meta.lxd_architecture(),
        kind: "container".into(),
        public: opts.public,
        auto_update,
        cached: opts.cached,
        properties: meta.properties.clone(),
        profiles: vec!["default".into()],
        created_at: now.to_string(),
        uploaded_at: now.to_string(),
        last_used_at: "0001-01-01T00:00:00Z".into(),
        expires_at: "0001-01-01T00:00:00Z".into(),
        update_source,
    })
    .await
    .map_err(|e| DaemonError::failed("store", format!("image {fp} from {}", src.server), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_on_a_registry_become_references() {
        let (r, p) = reference_of("http://127.0.0.1:5000", "test/bb:1").unwrap();
        assert_eq!(p, ClientProtocol::Http);
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "test/bb");
        assert_eq!(r.tag(), Some("1"));
        let (r, p) = reference_of("https://docker.io/", "nginx").unwrap();
        assert_eq!(p, ClientProtocol::Https);
        assert_eq!(r.repository(), "library/nginx");
        assert_eq!(r.tag(), Some("latest"));
        assert!(reference_of("https://docker.io/v2", "nginx").is_err());
        assert!(reference_of("ftp://docker.io", "nginx").is_err());
        assert!(reference_of("https://docker.io", "Bad Name").is_err());
        assert!(blob_name("sha256:../x").is_err());
    }
}
