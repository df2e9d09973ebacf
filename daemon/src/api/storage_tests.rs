//! Router tests of `/1.0/storage-pools` and its volumes, in process over an engine on a
//! temporary state directory (`dir` pools only: they need no root and no tools).

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::api::testing::TestApi;

const POOLS: &str = "/1.0/storage-pools";

/// The ETag a GET of `object` carries: the digest of its writable part.
fn etag_of(object: &Value) -> String {
    crate::engine::etag(&json!({
        "config": object["config"],
        "description": object["description"],
    }))
}

async fn ok(api: &TestApi, method: Method, uri: &str, body: Option<Value>) -> Value {
    let (status, env) = api.call(method.clone(), uri, body).await;
    assert_eq!(status, StatusCode::OK, "{method} {uri}: {env}");
    env["metadata"].clone()
}

async fn error(api: &TestApi, method: Method, uri: &str, body: Option<Value>) -> (u16, String) {
    let (status, env) = api.call(method, uri, body).await;
    assert_eq!(env["type"], "error", "{uri}: {env}");
    assert_eq!(env["error_code"], status.as_u16());
    (
        status.as_u16(),
        env["error"].as_str().unwrap_or_default().to_string(),
    )
}

/// Runs an async answer's operation to its end, which must be a success.
async fn done(api: &TestApi, method: Method, uri: &str, body: Option<Value>) {
    let (status, env) = api.call(method, uri, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{uri}: {env}");
    let op = api.wait(&env).await;
    assert_eq!(op["status"], "Success", "{uri}: {op}");
}

async fn make_pool(api: &TestApi, name: &str) {
    let (status, env) = api
        .call(
            Method::POST,
            POOLS,
            Some(json!({"name": name, "driver": "dir", "config": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{env}");
}

#[tokio::test]
async fn pools_are_listed_shown_created_updated_and_deleted() {
    let api = TestApi::new().await;
    let urls = ok(&api, Method::GET, POOLS, None).await;
    assert_eq!(urls, json!(["/1.0/storage-pools/default"]));

    let body = json!({"name": "p1", "driver": "dir", "description": "fast",
                      "config": {"user.a": "1"}});
    let (status, _) = api.call(Method::POST, POOLS, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    let root = api.dir.path().join("storage-pools/p1");
    assert!(root.join("custom").is_dir(), "the pool's layout is made");
    let p1 = ok(&api, Method::GET, "/1.0/storage-pools/p1", None).await;
    assert_eq!(p1["driver"], "dir");
    assert_eq!(p1["status"], "Created");
    assert_eq!(p1["description"], "fast");
    assert_eq!(p1["config"]["source"], root.display().to_string());
    assert_eq!(p1["config"]["user.a"], "1");
    let all = ok(&api, Method::GET, "/1.0/storage-pools?recursion=1", None).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[1]["name"], "p1");

    // PATCH merges, and a key given empty is unset.
    let uri = "/1.0/storage-pools/p1";
    let patch = json!({"config": {"user.a": "", "user.b": "2"}});
    ok(&api, Method::PATCH, uri, Some(patch)).await;
    let p1 = ok(&api, Method::GET, uri, None).await;
    assert_eq!(p1["config"]["user.b"], "2");
    assert!(p1["config"].get("user.a").is_none(), "{p1}");
    assert_eq!(p1["description"], "fast");

    // PUT replaces, under the client's If-Match; what the pool stands on stays.
    let put = json!({"config": {"user.c": "3"}, "description": "slow"});
    let (status, env) = api
        .call_with(
            Method::PUT,
            uri,
            Some(put.clone()),
            &[("If-Match", "\"nope\"")],
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{env}");
    let tag = etag_of(&p1);
    let (status, env) = api
        .call_with(Method::PUT, uri, Some(put), &[("If-Match", &tag)])
        .await;
    assert_eq!(status, StatusCode::OK, "{env}");
    let p1 = ok(&api, Method::GET, uri, None).await;
    assert_eq!(p1["description"], "slow");
    assert_eq!(p1["config"]["user.c"], "3");
    assert_eq!(p1["config"]["source"], root.display().to_string());
    assert!(p1["config"].get("user.b").is_none());

    ok(&api, Method::DELETE, uri, None).await;
    let (code, msg) = error(&api, Method::GET, uri, None).await;
    assert_eq!((code, msg.as_str()), (404, "Storage pool not found"));
    assert!(!root.exists(), "the pool's own directory goes with it");
}

#[tokio::test]
async fn pool_requests_are_refused_with_lxd_status_and_message() {
    let api = TestApi::new().await;
    make_pool(&api, "p1").await;
    for (body, code, msg) in [
        (
            json!({"name": "bad name", "driver": "dir"}),
            400,
            "Invalid storage pool name \"bad name\"",
        ),
        (
            json!({"name": "p", "driver": "nosuch"}),
            400,
            "Unknown storage pool driver \"nosuch\" (known: dir, btrfs, zfs)",
        ),
        (
            json!({"name": "p", "driver": "dir", "config": {"bogus": "1"}}),
            400,
            "Invalid storage pool configuration key \"bogus\"",
        ),
        (
            json!({"name": "p", "driver": "dir", "config": {"source": "/no/such/dir"}}),
            400,
            "Source \"/no/such/dir\" is not a directory",
        ),
        (
            json!({"name": "p", "driver": "dir", "config": {"size": 5}}),
            400,
            "",
        ),
        (
            json!({"name": "p1", "driver": "btrfs"}),
            409,
            "Storage pool \"p1\" already exists",
        ),
    ] {
        let (got, text) = error(&api, Method::POST, POOLS, Some(body.clone())).await;
        assert_eq!(got, code, "{body}: {text}");
        assert!(text.starts_with(msg), "{body}: {text}");
    }
    assert!(!api.dir.path().join("storage-pools/p").exists());

    let missing = "/1.0/storage-pools/none";
    for m in [Method::GET, Method::DELETE, Method::PUT, Method::PATCH] {
        let body = (m == Method::PUT || m == Method::PATCH).then(|| json!({}));
        let (code, msg) = error(&api, m.clone(), missing, body).await;
        assert_eq!((code, msg.as_str()), (404, "Storage pool not found"), "{m}");
    }
    let (code, _) = error(&api, Method::GET, "/1.0/storage-pools/none/resources", None).await;
    assert_eq!(code, 404);

    // What the pool stands on cannot change, nor may an unknown key be set.
    let uri = "/1.0/storage-pools/p1";
    let (code, msg) = error(
        &api,
        Method::PATCH,
        uri,
        Some(json!({"config": {"source": "/elsewhere"}})),
    )
    .await;
    assert_eq!(code, 400, "{msg}");
    assert!(msg.contains("cannot be changed"), "{msg}");
    let (code, _) = error(&api, Method::PUT, uri, Some(json!({"config": {"x": "1"}}))).await;
    assert_eq!(code, 400);

    // A pool a custom volume lives on is in use.
    make_pool(&api, "p2").await;
    let vols = "/1.0/storage-pools/p2/volumes/custom";
    ok(&api, Method::POST, vols, Some(json!({"name": "v1"}))).await;
    let (code, msg) = error(&api, Method::DELETE, "/1.0/storage-pools/p2", None).await;
    assert_eq!(
        (code, msg.as_str()),
        (409, "The storage pool is currently in use")
    );
    ok(&api, Method::DELETE, &format!("{vols}/v1"), None).await;
    ok(&api, Method::DELETE, "/1.0/storage-pools/p2", None).await;
}

#[tokio::test]
async fn resources_report_the_pools_space() {
    let api = TestApi::new().await;
    let res = ok(
        &api,
        Method::GET,
        "/1.0/storage-pools/default/resources",
        None,
    )
    .await;
    assert!(res["space"]["total"].as_u64().unwrap() > 0, "{res}");
    assert!(res["space"]["used"].as_u64().unwrap() <= res["space"]["total"].as_u64().unwrap());
    assert!(res["inodes"]["total"].is_u64());
}

#[tokio::test]
async fn custom_volumes_are_made_listed_updated_and_deleted() {
    let api = TestApi::new().await;
    let vols = "/1.0/storage-pools/default/volumes/custom";
    let v1 = "/1.0/storage-pools/default/volumes/custom/v1";
    let body = json!({"name": "v1", "type": "custom", "description": "data", "config": {}});
    ok(&api, Method::POST, vols, Some(body)).await;
    let on_disk = api.dir.path().join("storage-pools/default/custom/v1");
    assert!(on_disk.is_dir());
    assert_eq!(ok(&api, Method::GET, vols, None).await, json!([v1]));
    let all = ok(
        &api,
        Method::GET,
        "/1.0/storage-pools/default/volumes?recursion=1",
        None,
    )
    .await;
    assert_eq!(all[0]["name"], "v1");
    assert_eq!(all[0]["type"], "custom");
    let v = ok(&api, Method::GET, v1, None).await;
    assert_eq!(v["description"], "data");
    assert_eq!(v["content_type"], "filesystem");
    assert_eq!(v["used_by"], json!([]));
    let state = ok(&api, Method::GET, &format!("{v1}/state"), None).await;
    assert_eq!(state["usage"]["total"], -1);

    // Updates: PATCH merges, PUT under If-Match.
    ok(
        &api,
        Method::PATCH,
        v1,
        Some(json!({"description": "more"})),
    )
    .await;
    let v = ok(&api, Method::GET, v1, None).await;
    assert_eq!(v["description"], "more");
    let put = json!({"description": "put", "config": {}});
    let (status, _) = api
        .call_with(Method::PUT, v1, Some(put.clone()), &[("If-Match", "nope")])
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let tag = etag_of(&v);
    let (status, env) = api
        .call_with(Method::PUT, v1, Some(put), &[("If-Match", &tag)])
        .await;
    assert_eq!(status, StatusCode::OK, "{env}");
    assert_eq!(ok(&api, Method::GET, v1, None).await["description"], "put");

    ok(&api, Method::DELETE, v1, None).await;
    assert!(!on_disk.exists());
    let (code, msg) = error(&api, Method::GET, v1, None).await;
    assert_eq!((code, msg.as_str()), (404, "Storage volume not found"));
}

#[tokio::test]
async fn volume_requests_are_refused_with_lxd_status_and_message() {
    let api = TestApi::new().await;
    let vols = "/1.0/storage-pools/default/volumes/custom";
    let v1 = "/1.0/storage-pools/default/volumes/custom/v1";
    ok(&api, Method::POST, vols, Some(json!({"name": "v1"}))).await;
    // The user's own keys are taken, as in LXD.
    let noted = json!({"name": "v3", "config": {"user.note": "kept"}});
    ok(&api, Method::POST, vols, Some(noted)).await;
    let (_, v3) = api.call(Method::GET, &format!("{vols}/v3"), None).await;
    assert_eq!(v3["metadata"]["config"]["user.note"], "kept", "{v3}");
    for (body, code, msg) in [
        (
            json!({"name": ".hidden"}),
            400,
            "Invalid volume name \".hidden\"",
        ),
        (
            json!({"name": "v2", "config": {"bogus": "1"}}),
            400,
            "invalid value for config key \"bogus\"",
        ),
        (
            json!({"name": "v2", "config": {"user.": "1"}}),
            400,
            "invalid value for config key \"user.\"",
        ),
        (
            json!({"name": "v2", "config": {"size": "1GiB"}}),
            400,
            "dir pools cannot limit the size of a volume",
        ),
        (
            json!({"name": "v2", "config": {"size": 5}}),
            400,
            "Invalid JSON",
        ),
        (
            json!({"name": "v2", "type": "image"}),
            400,
            "Invalid storage volume type",
        ),
        (
            json!({"name": "v1"}),
            409,
            "Volume by that name already exists: v1",
        ),
        (
            json!({"name": "v2", "source": {"type": "copy", "name": "none"}}),
            404,
            "Storage volume not found",
        ),
        (
            json!({"name": "v1", "source": {"type": "copy", "name": "v1"}}),
            409,
            "Volume by that name already exists: v1",
        ),
    ] {
        let (got, text) = error(&api, Method::POST, vols, Some(body.clone())).await;
        assert_eq!(got, code, "{body}: {text}");
        assert!(text.starts_with(msg), "{body}: {text}");
    }
    assert!(!api
        .dir
        .path()
        .join("storage-pools/default/custom/v2")
        .exists());
    let (code, _) = error(
        &api,
        Method::PATCH,
        v1,
        Some(json!({"config": {"size": "1GiB"}})),
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = error(
        &api,
        Method::PUT,
        v1,
        Some(json!({"config": {"bogus": "x"}})),
    )
    .await;
    assert_eq!(code, 400);
    let (code, msg) = error(
        &api,
        Method::GET,
        "/1.0/storage-pools/default/volumes/vm",
        None,
    )
    .await;
    assert_eq!(
        (code, msg.as_str()),
        (400, "Invalid storage volume type \"vm\"")
    );

    // Missing pools and volumes are LXD's 404s on every route.
    let missing_pool = "/1.0/storage-pools/none/volumes/custom";
    let (code, msg) = error(&api, Method::GET, missing_pool, None).await;
    assert_eq!((code, msg.as_str()), (404, "Storage pool not found"));
    let (code, _) = error(&api, Method::POST, missing_pool, Some(json!({"name": "v"}))).await;
    assert_eq!(code, 404);
    let gone = "/1.0/storage-pools/default/volumes/custom/gone";
    for (m, uri, body) in [
        (Method::GET, gone.to_string(), None),
        (Method::DELETE, gone.to_string(), None),
        (Method::PUT, gone.to_string(), Some(json!({}))),
        (Method::PATCH, gone.to_string(), Some(json!({}))),
        (Method::POST, gone.to_string(), Some(json!({"name": "x"}))),
        (Method::GET, format!("{gone}/state"), None),
        (Method::GET, format!("{gone}/snapshots"), None),
        (Method::POST, format!("{gone}/snapshots"), Some(json!({}))),
        (Method::GET, format!("{v1}/snapshots/none"), None),
        (Method::DELETE, format!("{v1}/snapshots/none"), None),
        (
            Method::GET,
            "/1.0/storage-pools/default/volumes/container/none".into(),
            None,
        ),
    ] {
        let (code, _) = error(&api, m.clone(), &uri, body).await;
        assert_eq!(code, 404, "{m} {uri}");
    }
}

#[tokio::test]
async fn volumes_are_snapshotted_copied_renamed_and_moved() {
    let api = TestApi::new().await;
    make_pool(&api, "side").await;
    let root = api.dir.path().join("storage-pools");
    let vols = "/1.0/storage-pools/default/volumes/custom";
    let v1 = format!("{vols}/v1");
    ok(&api, Method::POST, vols, Some(json!({"name": "v1"}))).await;
    std::fs::write(root.join("default/custom/v1/data"), "one").unwrap();

    // Snapshots: named or numbered; a taken name is 409.
    done(
        &api,
        Method::POST,
        &format!("{v1}/snapshots"),
        Some(json!({"name": "s0"})),
    )
    .await;
    done(&api, Method::POST, &format!("{v1}/snapshots"), None).await;
    let snaps = ok(&api, Method::GET, &format!("{v1}/snapshots"), None).await;
    assert_eq!(
        snaps,
        json!([
            format!("{v1}/snapshots/s0"),
            format!("{v1}/snapshots/snap0")
        ])
    );
    let s0 = ok(&api, Method::GET, &format!("{v1}/snapshots/s0"), None).await;
    assert_eq!(s0["name"], "s0");
    let (code, msg) = error(
        &api,
        Method::POST,
        &format!("{v1}/snapshots"),
        Some(json!({"name": "s0"})),
    )
    .await;
    assert_eq!(
        (code, msg.as_str()),
        (409, "Snapshot \"s0\" already exists")
    );
    // A snapshot renamed (`lxc storage volume rename POOL V1/A V1/B`); a taken or bad name
    // is refused and changes nothing.
    done(
        &api,
        Method::POST,
        &format!("{v1}/snapshots/snap0"),
        Some(json!({"name": "s1"})),
    )
    .await;
    assert!(root.join("default/custom-snapshots/v1/s1").is_dir());
    for (name, code) in [("s0", 409), ("a/b", 400), (".x", 400)] {
        let (got, msg) = error(
            &api,
            Method::POST,
            &format!("{v1}/snapshots/s1"),
            Some(json!({ "name": name })),
        )
        .await;
        assert_eq!(got, code, "{name}: {msg}");
    }
    let (code, _) = error(&api, Method::GET, &format!("{v1}/snapshots/snap0"), None).await;
    assert_eq!(code, 404);
    done(&api, Method::DELETE, &format!("{v1}/snapshots/s1"), None).await;
    std::fs::write(root.join("default/custom/v1/data"), "two").unwrap();
    // Restore (`lxc storage volume restore`): the snapshot's content comes back; a missing
    // snapshot is 404 and changes nothing.
    ok(&api, Method::PUT, &v1, Some(json!({"restore": "s0"}))).await;
    assert_eq!(
        std::fs::read_to_string(root.join("default/custom/v1/data")).unwrap(),
        "one"
    );
    let (code, _) = error(&api, Method::PUT, &v1, Some(json!({"restore": "nope"}))).await;
    assert_eq!(code, 404);
    std::fs::write(root.join("default/custom/v1/data"), "two").unwrap();

    // Copies: whole, and from a snapshot.
    let copy = json!({"name": "v2", "source": {"type": "copy", "name": "v1"}});
    done(&api, Method::POST, vols, Some(copy)).await;
    assert_eq!(
        std::fs::read_to_string(root.join("default/custom/v2/data")).unwrap(),
        "two"
    );
    assert!(root.join("default/custom-snapshots/v2/s0").is_dir());
    let from_snap = json!({"name": "v3", "source": {"type": "copy", "name": "v1/s0"}});
    done(&api, Method::POST, vols, Some(from_snap)).await;
    assert_eq!(
        std::fs::read_to_string(root.join("default/custom/v3/data")).unwrap(),
        "one"
    );

    // A rename answers at once; a move to another pool is an operation.
    ok(
        &api,
        Method::POST,
        &format!("{vols}/v2"),
        Some(json!({"name": "v4"})),
    )
    .await;
    assert!(root.join("default/custom-snapshots/v4/s0").is_dir());
    let (code, _) = error(&api, Method::GET, &format!("{vols}/v2"), None).await;
    assert_eq!(code, 404);
    let (code, _) = error(
        &api,
        Method::POST,
        &format!("{vols}/v4"),
        Some(json!({"name": "v1"})),
    )
    .await;
    assert_eq!(code, 409, "a rename onto a taken name");
    let moved = json!({"name": "v5", "pool": "side"});
    done(&api, Method::POST, &format!("{vols}/v4"), Some(moved)).await;
    assert_eq!(
        std::fs::read_to_string(root.join("side/custom/v5/data")).unwrap(),
        "two"
    );
    assert!(!root.join("default/custom/v4").exists());
    ok(
        &api,
        Method::GET,
        "/1.0/storage-pools/side/volumes/custom/v5",
        None,
    )
    .await;

    for uri in [
        v1,
        format!("{vols}/v3"),
        "/1.0/storage-pools/side/volumes/custom/v5".into(),
    ] {
        ok(&api, Method::DELETE, &uri, None).await;
    }
    assert!(!root.join("default/custom-snapshots/v1").exists());
    ok(&api, Method::DELETE, "/1.0/storage-pools/side", None).await;
}
