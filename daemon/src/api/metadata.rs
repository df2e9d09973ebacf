//! `/1.0/instances/<name>/metadata` and `.../metadata/templates`: the image metadata and
//! template files an instance carries, read and edited as LXD serves them
//! (`container_edit_metadata`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hutch_images::ImageMetadata;

use super::{empty, parse_json, sync};
use crate::daemon::AppState;
use crate::error::{DaemonError, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/:name/metadata", get(metadata).put(put_metadata))
        .route(
            "/:name/metadata/templates",
            get(templates)
                .post(put_template)
                .put(put_template)
                .delete(delete_template),
        )
}

async fn metadata(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    Ok(sync(e.instance_metadata(&name).await?))
}

async fn put_metadata(
    State(e): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let meta: ImageMetadata = parse_json(&body)?;
    e.set_instance_metadata(&name, meta).await?;
    Ok(empty())
}

/// The `path` query parameter, which every template change needs.
fn template_name(q: &HashMap<String, String>) -> Result<&str> {
    q.get("path")
        .map(String::as_str)
        .ok_or_else(|| DaemonError::BadRequest("missing path argument".into()))
}

async fn put_template(
    State(e): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response> {
    e.set_instance_template(&name, template_name(&q)?, body.to_vec())
        .await?;
    Ok(empty())
}

async fn delete_template(
    State(e): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    e.delete_instance_template(&name, template_name(&q)?)
        .await?;
    Ok(empty())
}

/// The template names, or with `?path=` one template's text.
async fn templates(
    State(e): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    match q.get("path") {
        None => Ok(sync(e.instance_template_names(&name).await?)),
        Some(file) => {
            let data = e.instance_template(&name, file).await?;
            Ok(([("Content-Type", "application/octet-stream")], data).into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    use crate::api::files::tests::raw;
    use crate::api::testing::TestApi;

    #[tokio::test]
    async fn metadata_and_templates_are_served_as_lxd_serves_them() {
        let api = TestApi::new().await;
        let root = api.engine.add_stopped_instance("c1");
        // No metadata.yaml: empty metadata and no templates, not an error.
        let (status, body) = api
            .call(Method::GET, "/1.0/instances/c1/metadata", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["metadata"]["architecture"], "");
        assert_eq!(body["metadata"]["templates"], json!({}));
        let (_, body) = api
            .call(Method::GET, "/1.0/instances/c1/metadata/templates", None)
            .await;
        assert_eq!(body["metadata"], json!([]));

        let volume = root.parent().unwrap();
        std::fs::write(
            volume.join("metadata.yaml"),
            "architecture: x86_64\ncreation_date: 5\ntemplates:\n  /etc/hostname:\n    when: [create, copy]\n    template: hostname.tpl\n",
        )
        .unwrap();
        std::fs::create_dir(volume.join("templates")).unwrap();
        std::fs::write(
            volume.join("templates/hostname.tpl"),
            "{{ container.name }}\n",
        )
        .unwrap();
        let (_, body) = api
            .call(Method::GET, "/1.0/instances/c1/metadata", None)
            .await;
        assert_eq!(body["metadata"]["creation_date"], 5);
        assert_eq!(
            body["metadata"]["templates"]["/etc/hostname"],
            json!({"when": ["create", "copy"], "create_only": false, "template": "hostname.tpl", "properties": {}})
        );
        let (_, body) = api
            .call(Method::GET, "/1.0/instances/c1/metadata/templates", None)
            .await;
        assert_eq!(body["metadata"], json!(["hostname.tpl"]));
        let (status, _, text) = raw(
            &api,
            Method::GET,
            "/1.0/instances/c1/metadata/templates?path=hostname.tpl",
            &[],
            b"",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text, b"{{ container.name }}\n");
        for (path, want) in [
            ("nosuch.tpl", StatusCode::NOT_FOUND),
            ("..", StatusCode::BAD_REQUEST),
            ("..%2Fmetadata.yaml", StatusCode::BAD_REQUEST),
        ] {
            let (status, _) = api
                .call(
                    Method::GET,
                    &format!("/1.0/instances/c1/metadata/templates?path={path}"),
                    None,
                )
                .await;
            assert_eq!(status, want, "{path}");
        }
        let (status, _) = api
            .call(Method::GET, "/1.0/instances/nosuch/metadata", None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn metadata_and_templates_are_edited_as_lxd_edits_them() {
        let api = TestApi::new().await;
        let root = api.engine.add_stopped_instance("c1");
        let volume = root.parent().unwrap().to_path_buf();
        let meta = json!({"architecture": "x86_64", "creation_date": 7, "expiry_date": 0,
            "properties": null, "templates": {"/etc/motd": {"when": ["start"], "create_only": false,
            "template": "motd.tpl", "properties": null}}});
        let (status, body) = api
            .call(Method::PUT, "/1.0/instances/c1/metadata", Some(meta))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, body) = api
            .call(Method::GET, "/1.0/instances/c1/metadata", None)
            .await;
        assert_eq!(
            body["metadata"]["templates"]["/etc/motd"]["when"],
            json!(["start"])
        );
        assert!(volume.join("metadata.yaml").is_file());

        let uri = "/1.0/instances/c1/metadata/templates?path=motd.tpl";
        let (status, _, _) = raw(
            &api,
            Method::POST,
            uri,
            &[],
            b"hello {{ container.name }}\n",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (_, _, text) = raw(&api, Method::GET, uri, &[], b"").await;
        assert_eq!(text, b"hello {{ container.name }}\n");
        let (status, _, _) = raw(&api, Method::PUT, uri, &[], b"again").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            std::fs::read(volume.join("templates/motd.tpl")).unwrap(),
            b"again"
        );
        let (status, _) = api.call(Method::DELETE, uri, None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = api.call(Method::DELETE, uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        for bad in [
            "/1.0/instances/c1/metadata/templates",
            "/1.0/instances/c1/metadata/templates?path=a%2Fb",
        ] {
            let (status, _, _) = raw(&api, Method::POST, bad, &[], b"x").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let (status, _) = api
            .call(
                Method::PUT,
                "/1.0/instances/c1/metadata",
                Some(json!({"templates": 5})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
