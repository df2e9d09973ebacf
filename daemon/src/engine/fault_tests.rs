//! The engine's failure paths with a fake storage runner: a btrfs pool emulated on plain
//! directories whose Nth command fails. Whatever step fails, nothing half-made is left: no
//! row without its volume, no volume without its row, no staging debris.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use hutch_storage::{CommandRunner, StorageError};
use serde_json::json;

use crate::api::testing::TestApi;
use crate::daemon::Runners;

/// `btrfs` on plain directories: subvolumes are directories, snapshots copies; call
/// number `fail_at` (from 1) fails.
#[derive(Debug)]
struct EmulatedBtrfs {
    calls: AtomicUsize,
    fail_at: usize,
}

impl CommandRunner for EmulatedBtrfs {
    fn run(&self, argv: &[String]) -> Result<String, StorageError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at {
            return Err(StorageError::Command {
                program: argv.join(" "),
                status: "exit status: 1".into(),
                code: Some(1),
                stderr: "injected".into(),
            });
        }
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["btrfs", "subvolume", "create", p] => {
                std::fs::create_dir(p).map_err(|e| StorageError::io("create", p, e))?
            }
            ["btrfs", "subvolume", "snapshot", rest @ ..] => {
                let paths: Vec<&&str> = rest.iter().filter(|a| **a != "-r").collect();
                let (from, to) = (Path::new(paths[0]), Path::new(paths[1]));
                std::fs::create_dir(to).map_err(|e| StorageError::io("create", to, e))?;
                for entry in
                    std::fs::read_dir(from).map_err(|e| StorageError::io("read", from, e))?
                {
                    let entry = entry.map_err(|e| StorageError::io("read", from, e))?;
                    hutch_storage::clone_tree(&entry.path(), &to.join(entry.file_name()))?;
                }
            }
            _ => {}
        }
        Ok(String::new())
    }
}

fn api_failing_at(n: usize) -> (TestApi, Arc<EmulatedBtrfs>) {
    let runner = Arc::new(EmulatedBtrfs {
        calls: AtomicUsize::new(0),
        fail_at: n,
    });
    let mut runners = Runners::system();
    runners.storage = runner.clone();
    (TestApi::with_pool("btrfs", runners), runner)
}

/// Names in `dir` (empty when it does not exist).
fn names(dir: PathBuf) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_failing_storage_command_at_any_step_leaves_nothing_half_made() {
    // Import, create, snapshot, copy, delete: count the commands of a clean run first.
    let mut clean_run_calls = 0;
    for fail_at in 1.. {
        let (api, runner) = api_failing_at(fail_at);
        let pool = api.dir.path().join("storage-pools/default");
        let op = api.try_tiny_image().await;
        let mut failed = op["status"] != "Success";
        let fp = op["metadata"]["fingerprint"]
            .as_str()
            .unwrap_or("none")
            .to_string();
        let (_, listed) = api.call(Method::GET, "/1.0/images", None).await;
        let image_rows = listed["metadata"].as_array().unwrap().len();
        assert_eq!(
            image_rows,
            usize::from(!failed),
            "fail at {fail_at}: image row"
        );
        let image_files = names(api.dir.path().join("images"));
        assert_eq!(
            image_files.len(),
            image_rows,
            "fail at {fail_at}: {image_files:?}"
        );
        for (method, uri, body) in [
            (
                Method::POST,
                "/1.0/instances",
                json!({"name": "c1", "source": {"type": "image", "fingerprint": fp}}),
            ),
            (
                Method::POST,
                "/1.0/instances/c1/snapshots",
                json!({"name": "s1"}),
            ),
            (
                Method::POST,
                "/1.0/instances",
                json!({"name": "c2", "source": {"type": "copy", "source": "c1"}}),
            ),
            (
                Method::DELETE,
                "/1.0/instances/c1/snapshots/s1",
                json!(null),
            ),
            (Method::DELETE, "/1.0/instances/c2", json!(null)),
        ] {
            let body = (!body.is_null()).then_some(body);
            let (status, resp) = api.call(method, uri, body).await;
            // After an earlier failure, a later step may be refused outright (404).
            if status == StatusCode::ACCEPTED {
                failed |= api.wait(&resp).await["status"] != "Success";
            } else {
                assert!(failed && status.is_client_error(), "{uri}: {resp}");
            }
        }
        // Whatever failed: every row has its volume and every volume its row.
        let (_, list) = api.call(Method::GET, "/1.0/instances", None).await;
        let rows: Vec<String> = list["metadata"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().rsplit('/').next().unwrap().to_string())
            .collect();
        let mut vols = names(pool.join("containers"));
        vols.sort();
        assert_eq!(vols, rows, "fail at {fail_at}: volumes vs rows");
        for name in &rows {
            let (_, snaps) = api
                .call(
                    Method::GET,
                    &format!("/1.0/instances/{name}/snapshots"),
                    None,
                )
                .await;
            let snap_rows = snaps["metadata"].as_array().unwrap().len();
            let snap_vols = names(pool.join("containers-snapshots").join(name)).len();
            assert_eq!(
                snap_vols, snap_rows,
                "fail at {fail_at}: snapshots of {name}"
            );
        }
        let images = names(pool.join("images"));
        assert!(
            images.iter().all(|n| !n.starts_with('.')),
            "fail at {fail_at}: image debris {images:?}"
        );
        if !failed {
            clean_run_calls = runner.calls.load(Ordering::SeqCst);
            break;
        }
    }
    assert!(
        clean_run_calls > 3,
        "the emulated pool ran {clean_run_calls} commands"
    );
}
