//! Applying a preseed through hutchd's API, in LXD's order (server config, networks,
//! storage pools, profiles): what is missing is created, what exists is updated by
//! merging the preseed into it (LXD's rules), and a failure undoes, in reverse, every step
//! made before it.

use std::collections::BTreeMap;

use hutch_api::network::NetworkPut;
use hutch_api::profile::ProfilePut;
use hutch_api::{Response as Envelope, ResponseType};
use serde::Deserialize;
use serde_json::{json, Value};

use super::preseed::{NetworkSeed, PoolSeed, Preseed, ProfileSeed};
use super::{InitError, Transport};

/// hutchd's API over a transport: LXD's envelope read, operations waited for, error
/// envelopes turned into errors carrying the server's message.
pub struct Api<'a> {
    t: &'a dyn Transport,
}

impl<'a> Api<'a> {
    pub fn new(t: &'a dyn Transport) -> Self {
        Api { t }
    }

    /// One request; the metadata of its answer (of its operation's, once it has ended).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, InitError> {
        let (status, bytes) = self.t.send(method, path, body)?;
        let env: Envelope = serde_json::from_slice(&bytes).map_err(|_| InitError::BadResponse {
            method: method.to_string(),
            path: path.to_string(),
            status,
        })?;
        match env.kind {
            ResponseType::Error => Err(InitError::Api {
                status,
                message: env.error,
            }),
            ResponseType::Sync => Ok(env.metadata),
            ResponseType::Async => {
                let op = self.call("GET", &format!("{}/wait?timeout=-1", env.operation), None)?;
                let code = op["status_code"].as_u64().unwrap_or(0);
                if code >= 400 {
                    return Err(InitError::Api {
                        status: u16::try_from(code).unwrap_or(500),
                        message: op["err"].as_str().unwrap_or("operation failed").to_string(),
                    });
                }
                Ok(op)
            }
        }
    }

    /// A GET whose 404 means "absent".
    pub fn get(&self, path: &str) -> Result<Option<Value>, InitError> {
        match self.call("GET", path, None) {
            Ok(v) => Ok(Some(v)),
            Err(InitError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What became of one object of the preseed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

/// One line of init's report: `created storage pool "default"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub kind: &'static str,
    pub name: String,
    pub change: Change,
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.name.is_empty() {
            self.kind.to_string()
        } else {
            format!("{} {:?}", self.kind, self.name)
        };
        match self.change {
            Change::Created => write!(f, "created {what}"),
            Change::Updated => write!(f, "updated {what}"),
            Change::Unchanged => write!(f, "{what} unchanged"),
        }
    }
}

/// A request that takes back one step.
#[derive(Debug, Clone, PartialEq)]
enum Undo {
    Delete(String),
    Put(String, Value),
    Patch(String, Value),
}

/// Incus's revert shape over the API: each step pushes the request that takes it back;
/// dropped without `success()`, the requests run in reverse order. (The steps are API
/// requests, not closures: the client is shared by the steps and their undoing.)
struct Revert<'a> {
    api: &'a Api<'a>,
    steps: Vec<(String, Undo)>,
}

impl<'a> Revert<'a> {
    fn new(api: &'a Api<'a>) -> Self {
        Revert {
            api,
            steps: Vec::new(),
        }
    }

    fn add(&mut self, what: String, undo: Undo) {
        self.steps.push((what, undo));
    }

    fn success(mut self) {
        self.steps.clear();
    }
}

impl Drop for Revert<'_> {
    fn drop(&mut self) {
        while let Some((what, undo)) = self.steps.pop() {
            let res = match &undo {
                Undo::Delete(path) => self.api.call("DELETE", path, None),
                Undo::Put(path, body) => self.api.call("PUT", path, Some(body)),
                Undo::Patch(path, body) => self.api.call("PATCH", path, Some(body)),
            };
            match res {
                Ok(_) => eprintln!("hutchd init: undid: {what}"),
                Err(e) => eprintln!("hutchd init: failed to undo {what}: {}", crate::chain(&e)),
            }
        }
    }
}

/// Applies `seed`: every object is created or updated, or, on the first failure, every
/// step before it is undone and the failure returned.
pub fn apply(api: &Api, seed: &Preseed) -> Result<Vec<Done>, InitError> {
    let mut revert = Revert::new(api);
    let mut done = Vec::new();
    if !seed.config.is_empty() {
        done.push(
            server_config(api, &mut revert, &seed.config).map_err(step("server config", ""))?,
        );
    }
    for n in &seed.networks {
        done.push(network(api, &mut revert, n).map_err(step("network", &n.name))?);
    }
    for p in &seed.storage_pools {
        done.push(pool(api, &mut revert, p).map_err(step("storage pool", &p.name))?);
    }
    for p in &seed.profiles {
        done.push(profile(api, &mut revert, p).map_err(step("profile", &p.name))?);
    }
    // Last: a join reaches out to the cluster, with the address set above.
    if let Some(c) = seed.cluster.as_ref().filter(|c| c.enabled) {
        let body = serde_json::to_value(c).unwrap_or_default();
        api.call("PUT", "/1.0/cluster", Some(&body))
            .map_err(step("cluster", &c.server_name))?;
        let name = api.call("GET", "/1.0/cluster", None)?["server_name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        done.push(Done {
            kind: "cluster member",
            name,
            change: Change::Created,
        });
    }
    revert.success();
    Ok(done)
}

/// Wraps a step's failure with what it was about.
fn step(kind: &'static str, name: &str) -> impl FnOnce(InitError) -> InitError {
    let name = name.to_string();
    move |source| InitError::Step {
        kind,
        name,
        source: Box::new(source),
    }
}

/// A name as one path segment.
fn seg(name: &str) -> String {
    hutch_api::percent_encode(name)
}

fn server_config(
    api: &Api,
    revert: &mut Revert,
    config: &BTreeMap<String, String>,
) -> Result<Done, InitError> {
    let server = api.call("GET", "/1.0", None)?;
    let current: BTreeMap<String, String> =
        serde_json::from_value(server["config"].clone()).unwrap_or_default();
    let changed: BTreeMap<&String, &String> = config
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .collect();
    let mut done = Done {
        kind: "server config",
        name: String::new(),
        change: Change::Unchanged,
    };
    if changed.is_empty() {
        return Ok(done);
    }
    // A PATCH of what changes (a key unset before is unset again by ""): a PUT of the whole
    // would write back what GET shows of write-only keys (`core.trust_password`).
    let before: BTreeMap<&String, &str> = changed
        .keys()
        .map(|k| (*k, current.get(*k).map(String::as_str).unwrap_or("")))
        .collect();
    api.call("PATCH", "/1.0", Some(&json!({ "config": changed })))?;
    revert.add(
        "the server config".into(),
        Undo::Patch("/1.0".into(), json!({ "config": before })),
    );
    done.change = Change::Updated;
    Ok(done)
}

fn network(api: &Api, revert: &mut Revert, seed: &NetworkSeed) -> Result<Done, InitError> {
    let path = format!("/1.0/networks/{}", seg(&seed.name));
    let mut done = Done {
        kind: "network",
        name: seed.name.clone(),
        change: Change::Created,
    };
    let Some(current) = api.get(&path)? else {
        let kind = if seed.kind.is_empty() {
            "bridge"
        } else {
            &seed.kind
        };
        let body = json!({
            "name": seed.name,
            "type": kind,
            "config": seed.config,
            "description": seed.description,
        });
        api.call("POST", "/1.0/networks", Some(&body))?;
        revert.add(format!("network {:?}", seed.name), Undo::Delete(path));
        return Ok(done);
    };
    if current["managed"].as_bool() != Some(true) {
        return Err(InitError::NotManaged);
    }
    if !seed.kind.is_empty() && current["type"].as_str() != Some(seed.kind.as_str()) {
        return Err(InitError::KindMismatch {
            have: current["type"].as_str().unwrap_or("").to_string(),
            want: seed.kind.clone(),
        });
    }
    let before: NetworkPut =
        serde_json::from_value(current).map_err(|_| bad_object("GET", &path))?;
    let mut after = before.clone();
    after.config.extend(seed.config.clone());
    if !seed.description.is_empty() {
        after.description = seed.description.clone();
    }
    if after == before {
        done.change = Change::Unchanged;
        return Ok(done);
    }
    api.call("PUT", &path, Some(&json!(after)))?;
    revert.add(
        format!("network {:?}", seed.name),
        Undo::Put(path, json!(before)),
    );
    done.change = Change::Updated;
    Ok(done)
}

/// What init reads of a pool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct PoolView {
    driver: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

/// Whether a pool's config value `have` already says what the preseed's `want` says:
/// sizes compare by bytes (`5GiB` and `5368709120` are one size).
fn same_pool_value(key: &str, have: Option<&String>, want: &str) -> bool {
    let Some(have) = have else { return false };
    if have == want {
        return true;
    }
    let sized = key == "size" || key.ends_with(".size");
    sized
        && matches!(
            (hutch_api::config::parse_memory(have, 0), hutch_api::config::parse_memory(want, 0)),
            (Ok(a), Ok(b)) if a == b
        )
}

fn pool(api: &Api, revert: &mut Revert, seed: &PoolSeed) -> Result<Done, InitError> {
    let path = format!("/1.0/storage-pools/{}", seg(&seed.name));
    let mut done = Done {
        kind: "storage pool",
        name: seed.name.clone(),
        change: Change::Created,
    };
    let Some(current) = api.get(&path)? else {
        let body = json!({
            "name": seed.name,
            "driver": seed.driver,
            "config": seed.config,
            "description": seed.description,
        });
        api.call("POST", "/1.0/storage-pools", Some(&body))?;
        revert.add(format!("storage pool {:?}", seed.name), Undo::Delete(path));
        return Ok(done);
    };
    let current: PoolView =
        serde_json::from_value(current).map_err(|_| bad_object("GET", &path))?;
    if !seed.driver.is_empty() && current.driver != seed.driver {
        return Err(InitError::KindMismatch {
            have: current.driver,
            want: seed.driver.clone(),
        });
    }
    let changed: BTreeMap<&String, &String> = seed
        .config
        .iter()
        .filter(|(k, v)| !same_pool_value(k, current.config.get(*k), v))
        .collect();
    let new_description = !seed.description.is_empty() && seed.description != current.description;
    if changed.is_empty() && !new_description {
        done.change = Change::Unchanged;
        return Ok(done);
    }
    let mut config = current.config.clone();
    config.extend(changed.into_iter().map(|(k, v)| (k.clone(), v.clone())));
    let description = if new_description {
        &seed.description
    } else {
        &current.description
    };
    let body = json!({ "config": config, "description": description });
    api.call("PUT", &path, Some(&body))?;
    revert.add(
        format!("storage pool {:?}", seed.name),
        Undo::Put(
            path,
            json!({ "config": current.config, "description": current.description }),
        ),
    );
    done.change = Change::Updated;
    Ok(done)
}

fn profile(api: &Api, revert: &mut Revert, seed: &ProfileSeed) -> Result<Done, InitError> {
    let path = format!("/1.0/profiles/{}", seg(&seed.name));
    let mut done = Done {
        kind: "profile",
        name: seed.name.clone(),
        change: Change::Created,
    };
    let Some(current) = api.get(&path)? else {
        let body = json!({
            "name": seed.name,
            "config": seed.config,
            "description": seed.description,
            "devices": seed.devices,
        });
        api.call("POST", "/1.0/profiles", Some(&body))?;
        revert.add(format!("profile {:?}", seed.name), Undo::Delete(path));
        return Ok(done);
    };
    let before: ProfilePut =
        serde_json::from_value(current).map_err(|_| bad_object("GET", &path))?;
    let mut after = before.clone();
    after.config.extend(seed.config.clone());
    if !seed.description.is_empty() {
        after.description = seed.description.clone();
    }
    for (name, options) in &seed.devices {
        after
            .devices
            .entry(name.clone())
            .or_default()
            .extend(options.clone());
    }
    if after == before {
        done.change = Change::Unchanged;
        return Ok(done);
    }
    api.call("PUT", &path, Some(&json!(after)))?;
    revert.add(
        format!("profile {:?}", seed.name),
        Undo::Put(path, json!(before)),
    );
    done.change = Change::Updated;
    Ok(done)
}

fn bad_object(method: &str, path: &str) -> InitError {
    InitError::BadResponse {
        method: method.to_string(),
        path: path.to_string(),
        status: 200,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;

    /// A fake hutchd: objects by path, every request recorded, and one request that fails.
    #[derive(Default)]
    struct Fake {
        objects: RefCell<BTreeMap<String, Value>>,
        log: RefCell<Vec<String>>,
        fail: Option<(String, String)>,
    }

    fn ok(metadata: Value) -> (u16, Vec<u8>) {
        (200, serde_json::to_vec(&Envelope::sync(metadata)).unwrap())
    }

    fn err(code: u16, msg: &str) -> (u16, Vec<u8>) {
        (
            code,
            serde_json::to_vec(&Envelope::error(code, msg)).unwrap(),
        )
    }

    impl Transport for Fake {
        fn send(
            &self,
            method: &str,
            path: &str,
            body: Option<&Value>,
        ) -> Result<(u16, Vec<u8>), InitError> {
            self.log.borrow_mut().push(format!("{method} {path}"));
            if self
                .fail
                .as_ref()
                .is_some_and(|(m, p)| m == method && p == path)
            {
                return Ok(err(400, "refused by the fake"));
            }
            let mut objects = self.objects.borrow_mut();
            let body = body.cloned().unwrap_or(Value::Null);
            Ok(match method {
                "GET" => match objects.get(path) {
                    Some(v) => ok(v.clone()),
                    None => err(404, "not found"),
                },
                "POST" => {
                    let at = format!("{path}/{}", body["name"].as_str().unwrap());
                    let mut obj = body.clone();
                    if path == "/1.0/networks" {
                        obj["managed"] = json!(true);
                    }
                    objects.insert(at, obj);
                    (201, serde_json::to_vec(&Envelope::sync(json!({}))).unwrap())
                }
                "PUT" => {
                    let obj = objects.get_mut(path).unwrap();
                    for (k, v) in body.as_object().unwrap() {
                        obj[k] = v.clone();
                    }
                    ok(json!({}))
                }
                "PATCH" => {
                    let obj = objects.get_mut(path).unwrap();
                    let config = obj["config"].as_object_mut().unwrap();
                    for (k, v) in body["config"].as_object().unwrap() {
                        // "" unsets, as in LXD.
                        if v == "" {
                            config.remove(k);
                        } else {
                            config.insert(k.clone(), v.clone());
                        }
                    }
                    ok(json!({}))
                }
                "DELETE" => {
                    objects.remove(path);
                    ok(json!({}))
                }
                _ => err(501, "not implemented"),
            })
        }
    }

    fn fake_server() -> Fake {
        let fake = Fake::default();
        fake.objects.borrow_mut().extend([
            (
                "/1.0".to_string(),
                json!({"config": {"core.proxy_http": "p"}}),
            ),
            (
                "/1.0/profiles/default".to_string(),
                json!({"name": "default", "config": {}, "description": "Default", "devices": {
                    "root": {"type": "disk", "path": "/", "pool": "default"}}}),
            ),
            (
                "/1.0/storage-pools/default".to_string(),
                json!({"name": "default", "driver": "btrfs", "description": "",
                    "config": {"size": "5368709120", "source": "/d/default.img"}}),
            ),
            (
                "/1.0/networks/eth0".to_string(),
                json!({"name": "eth0", "managed": false, "type": "physical", "config": {}}),
            ),
        ]);
        fake
    }

    const SEED: &str = r#"
config:
  core.https_address: 127.0.0.1:18443
networks:
- name: lan0
  config:
    ipv4.address: 10.99.1.1/24
storage_pools:
- name: default
  driver: btrfs
  config:
    size: 5GiB
- name: fast
  driver: dir
profiles:
- name: default
  config:
    user.seeded: "yes"
  devices:
    root:
      pool: fast
    eth0:
      type: nic
      network: lan0
- name: extra
  description: more
"#;

    #[test]
    fn a_preseed_creates_what_is_missing_and_merges_what_exists() {
        let fake = fake_server();
        let api = Api::new(&fake);
        let seed = Preseed::parse(SEED).unwrap();
        let done = apply(&api, &seed).unwrap();
        let lines: Vec<String> = done.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "updated server config",
                "created network \"lan0\"",
                "storage pool \"default\" unchanged",
                "created storage pool \"fast\"",
                "updated profile \"default\"",
                "created profile \"extra\"",
            ]
        );
        let objects = fake.objects.borrow();
        assert_eq!(
            objects["/1.0"]["config"]["core.https_address"],
            "127.0.0.1:18443"
        );
        assert_eq!(objects["/1.0"]["config"]["core.proxy_http"], "p");
        assert_eq!(objects["/1.0/networks/lan0"]["type"], "bridge");
        let default = &objects["/1.0/profiles/default"];
        assert_eq!(default["config"]["user.seeded"], "yes");
        assert_eq!(
            default["description"], "Default",
            "kept: the preseed gives none"
        );
        assert_eq!(
            default["devices"]["root"],
            json!({"type": "disk", "path": "/", "pool": "fast"}),
            "an existing device is merged key by key"
        );
        assert_eq!(default["devices"]["eth0"]["network"], "lan0");
        drop(objects);

        // Applied again: nothing to do, and nothing but GETs sent.
        fake.log.borrow_mut().clear();
        let again = apply(&api, &seed).unwrap();
        assert!(
            again.iter().all(|d| d.change == Change::Unchanged),
            "{again:?}"
        );
        assert!(
            fake.log.borrow().iter().all(|r| r.starts_with("GET ")),
            "{:?}",
            fake.log.borrow()
        );
    }

    #[test]
    fn a_failure_undoes_every_step_before_it_in_reverse() {
        let mut fake = fake_server();
        fake.fail = Some(("PUT".into(), "/1.0/profiles/default".into()));
        let before = fake.objects.borrow().clone();
        let api = Api::new(&fake);
        let err = apply(&api, &Preseed::parse(SEED).unwrap()).unwrap_err();
        assert_eq!(
            crate::chain(&err),
            "failed to apply profile \"default\": refused by the fake"
        );
        assert_eq!(*fake.objects.borrow(), before, "everything taken back");
        let log = fake.log.borrow();
        let undo: Vec<&String> = log
            .iter()
            .skip_while(|r| *r != "PUT /1.0/profiles/default")
            .skip(1)
            .collect();
        assert_eq!(
            undo,
            [
                "DELETE /1.0/storage-pools/fast",
                "DELETE /1.0/networks/lan0",
                "PATCH /1.0"
            ]
        );
    }

    #[test]
    fn existing_objects_of_another_kind_are_refused() {
        let fake = fake_server();
        let api = Api::new(&fake);
        for (text, want) in [
            (
                "storage_pools:\n- name: default\n  driver: zfs\n",
                "failed to apply storage pool \"default\": it is a btrfs, not a zfs",
            ),
            (
                "networks:\n- name: eth0\n",
                "failed to apply network \"eth0\": it exists and is not managed by hutchd",
            ),
        ] {
            let err = apply(&api, &Preseed::parse(text).unwrap()).unwrap_err();
            assert_eq!(crate::chain(&err), want);
        }
    }

    #[test]
    fn pool_sizes_compare_by_bytes() {
        let have = "5368709120".to_string();
        assert!(same_pool_value("size", Some(&have), "5GiB"));
        assert!(!same_pool_value("size", Some(&have), "6GiB"));
        assert!(!same_pool_value("source", Some(&have), "5GiB"));
        assert!(!same_pool_value("size", None, "5GiB"));
    }

    #[test]
    fn operations_are_waited_for_and_their_failure_is_the_error() {
        struct Ops;
        impl Transport for Ops {
            fn send(
                &self,
                _: &str,
                path: &str,
                _: Option<&Value>,
            ) -> Result<(u16, Vec<u8>), InitError> {
                let env = match path {
                    "/1.0/thing" => Envelope::async_op("/1.0/operations/42", json!({})),
                    "/1.0/operations/42/wait?timeout=-1" => {
                        Envelope::sync(json!({"status_code": 400, "err": "it broke"}))
                    }
                    _ => return Ok((404, b"not json".to_vec())),
                };
                Ok((200, serde_json::to_vec(&env).unwrap()))
            }
        }
        let api = Api::new(&Ops);
        let err = api.call("POST", "/1.0/thing", None).unwrap_err();
        assert_eq!(err.to_string(), "it broke");
        let err = api.call("GET", "/other", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected response from hutchd to GET /other (HTTP 404)"
        );
    }
}
