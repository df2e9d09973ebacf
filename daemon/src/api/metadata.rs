//! `/1.0/instances/<name>/metadata` and `.../metadata/templates`: the image metadata and
//! template files an instance carries, read as LXD serves them.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::sync;
use crate::daemon::AppState;
use crate::error::Result;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/:name/metadata", get(metadata))
        .route("/:name/metadata/templates", get(templates))
}

async fn metadata(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    Ok(sync(e.instance_metadata(&name).await?))
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
}
