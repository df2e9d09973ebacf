//! The image properties an OCI image is recorded with: what it is and what it runs.

use std::collections::BTreeMap;

use hutch_oci::OciImage;

/// `type` of an image (and `image.type` of an instance) made from an OCI image.
pub const TYPE_OCI: &str = "oci";

/// The properties of `image`: `type: oci`, its digests, and its run config as
/// `oci.*` (lists as JSON), labels as `oci.label.<name>`.
pub fn oci_properties(image: &OciImage, lxd_arch: &str) -> BTreeMap<String, String> {
    let json = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
    let mut p = BTreeMap::new();
    let r = &image.run;
    p.insert("type".into(), TYPE_OCI.into());
    p.insert("architecture".into(), lxd_arch.into());
    p.insert("os".into(), "OCI".into());
    let id = image
        .manifest_digest
        .as_deref()
        .unwrap_or(&image.config_digest);
    p.insert("description".into(), format!("OCI image {id}"));
    if let Some(m) = &image.manifest_digest {
        p.insert("oci.manifest_digest".into(), m.clone());
    }
    p.insert("oci.config_digest".into(), image.config_digest.clone());
    p.insert("oci.entrypoint".into(), json(&r.entrypoint));
    p.insert("oci.cmd".into(), json(&r.cmd));
    p.insert("oci.env".into(), json(&r.env));
    if let Some(w) = &r.working_dir {
        p.insert("oci.cwd".into(), w.clone());
    }
    if let Some(u) = &r.user {
        p.insert("oci.user".into(), u.clone());
    }
    if !r.exposed_ports.is_empty() {
        p.insert("oci.exposed_ports".into(), r.exposed_ports.join(","));
    }
    for (k, v) in &r.labels {
        p.insert(format!("oci.label.{k}"), v.clone());
    }
    p
}

/// The `environment.*` keys an instance of an image with `properties` starts with: the
/// OCI image's Env (none for other images), so exec sees it as the process does.
pub fn environment_keys(properties: &BTreeMap<String, String>) -> Vec<(String, String)> {
    if properties.get("type").map(String::as_str) != Some(TYPE_OCI) {
        return Vec::new();
    }
    let env: Vec<String> = properties
        .get("oci.env")
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    env.iter()
        .filter_map(|e| e.split_once('='))
        .filter(|(k, _)| !k.is_empty() && !k.contains('\0'))
        .map(|(k, v)| (format!("environment.{k}"), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_images_run_config_becomes_properties() {
        let image = OciImage {
            manifest_digest: Some("sha256:m".into()),
            config_digest: "sha256:c".into(),
            architecture: "amd64".into(),
            run: hutch_oci::RunConfig {
                entrypoint: vec!["/bin/sh".into(), "-c".into()],
                cmd: vec!["echo hi".into()],
                env: vec!["A=1".into()],
                working_dir: Some("/srv".into()),
                user: Some("1000:50".into()),
                exposed_ports: vec!["80/tcp".into(), "53/udp".into()],
                labels: [("maintainer".to_string(), "me".to_string())].into(),
            },
            layers: Vec::new(),
        };
        let p = oci_properties(&image, "x86_64");
        assert_eq!(p["type"], "oci");
        assert_eq!(p["oci.manifest_digest"], "sha256:m");
        assert_eq!(p["oci.entrypoint"], r#"["/bin/sh","-c"]"#);
        assert_eq!(p["oci.cmd"], r#"["echo hi"]"#);
        assert_eq!(p["oci.env"], r#"["A=1"]"#);
        assert_eq!(p["oci.cwd"], "/srv");
        assert_eq!(p["oci.user"], "1000:50");
        assert_eq!(p["oci.exposed_ports"], "80/tcp,53/udp");
        assert_eq!(p["oci.label.maintainer"], "me");
        assert_eq!(
            environment_keys(&p),
            vec![("environment.A".to_string(), "1".to_string())]
        );
        assert!(environment_keys(&BTreeMap::new()).is_empty());
    }
}
