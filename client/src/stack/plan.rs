//! The plan: what apply would do to bring the server to the stack (create, update,
//! replace, delete), with the keys that differ. Pure: the stack and a snapshot of the
//! server in, steps out.

use std::collections::BTreeMap;
use std::fmt;

use super::current::{Current, Object};
use super::model::{Devices, Map, Stack, IMAGE_KEY, PROVISIONED_KEY, STACK_KEY};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Network,
    Volume,
    Profile,
    Instance,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Kind::Network => "network",
            Kind::Volume => "volume",
            Kind::Profile => "profile",
            Kind::Instance => "instance",
        })
    }
}

/// One key that differs: `config.limits.cpu`, `devices.port-8080`, `image`, `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match (&self.from, &self.to) {
            (None, Some(to)) => write!(f, "{}: + {to:?}", self.key),
            (Some(from), None) => write!(f, "{}: - {from:?}", self.key),
            (Some(from), Some(to)) => write!(f, "{}: {from:?} -> {to:?}", self.key),
            (None, None) => write!(f, "{}", self.key),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Create,
    Update(Vec<Change>),
    /// Needs a new object (an image change): done only with `--replace`.
    Replace(Vec<Change>),
    /// Labelled with the stack, no longer in the file: done only with `--remove-orphans`.
    Delete,
}

impl Op {
    pub fn verb(&self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update(_) => "update",
            Op::Replace(_) => "replace",
            Op::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub kind: Kind,
    /// Volumes: `pool/name`.
    pub name: String,
    pub op: Op,
}

impl Step {
    pub fn title(&self) -> String {
        format!("{} {} {}", self.op.verb(), self.kind, self.name)
    }
}

/// Steps in order of kind, then name; objects already as the file wants them have none.
#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn step(&self, kind: Kind, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.kind == kind && s.name == name)
    }
}

/// Objects the file names that exist on the server without this stack's label.
#[derive(Debug)]
pub struct Foreign(pub Vec<String>);

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} not part of this stack (no matching {STACK_KEY} label); hutch never touches what it does not own: rename or remove {} first",
            self.0.join(", "),
            if self.0.len() == 1 { "it" } else { "them" }
        )
    }
}

impl std::error::Error for Foreign {}

/// Keys the server keeps on instances that the file does not own.
fn server_owned(key: &str) -> bool {
    key.starts_with("volatile.") || key.starts_with("image.") || key == PROVISIONED_KEY
}

fn map_changes(prefix: &str, from: &Map, to: &Map, out: &mut Vec<Change>) {
    for (k, v) in to {
        if from.get(k) != Some(v) {
            out.push(Change {
                key: format!("{prefix}{k}"),
                from: from.get(k).cloned(),
                to: Some(v.clone()),
            });
        }
    }
    for (k, v) in from {
        if !to.contains_key(k) {
            out.push(Change {
                key: format!("{prefix}{k}"),
                from: Some(v.clone()),
                to: None,
            });
        }
    }
}

fn device_text(d: &Map) -> String {
    d.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn device_changes(from: &Devices, to: &Devices, out: &mut Vec<Change>) {
    let text =
        |d: &Devices| -> Map { d.iter().map(|(k, v)| (k.clone(), device_text(v))).collect() };
    map_changes("devices.", &text(from), &text(to), out);
}

/// Only the keys the file gives (the server fills in others, e.g. a network's addresses);
/// `auto` matches whatever the server chose.
fn given_changes(from: &Map, to: &Map, out: &mut Vec<Change>) {
    for (k, v) in to {
        let now = from.get(k);
        if now != Some(v) && !(v == "auto" && now.is_some()) {
            out.push(Change {
                key: format!("config.{k}"),
                from: now.cloned(),
                to: Some(v.clone()),
            });
        }
    }
}

fn description_change(from: &str, to: &str, out: &mut Vec<Change>) {
    if from != to {
        out.push(Change {
            key: "description".into(),
            from: Some(from.into()),
            to: Some(to.into()),
        });
    }
}

/// Computes the plan, or names the objects in the way that belong to someone else.
pub fn plan(stack: &Stack, current: &Current) -> Result<Plan, Foreign> {
    let mut steps = Vec::new();
    let mut foreign = Vec::new();
    let mut compare =
        |kind: Kind, name: &str, now: Option<&Object>, diff: &dyn Fn(&Object) -> Vec<Change>| {
            match now {
                None => steps.push(Step {
                    kind,
                    name: name.into(),
                    op: Op::Create,
                }),
                Some(o) if o.stack() != Some(stack.name.as_str()) => {
                    foreign.push(format!("{kind} {name}"));
                }
                Some(o) => {
                    let changes = diff(o);
                    if changes.iter().any(|c| c.key == "image") {
                        steps.push(Step {
                            kind,
                            name: name.into(),
                            op: Op::Replace(changes),
                        });
                    } else if !changes.is_empty() {
                        steps.push(Step {
                            kind,
                            name: name.into(),
                            op: Op::Update(changes),
                        });
                    }
                }
            }
        };
    for (name, n) in &stack.networks {
        compare(Kind::Network, name, current.networks.get(name), &|o| {
            let mut c = Vec::new();
            given_changes(&o.config, &n.config, &mut c);
            if !n.description.is_empty() {
                description_change(&o.description, &n.description, &mut c);
            }
            c
        });
    }
    for (key, v) in &stack.volumes {
        compare(Kind::Volume, key, current.volumes.get(key), &|o| {
            let mut c = Vec::new();
            given_changes(&o.config, &v.config, &mut c);
            if !v.description.is_empty() {
                description_change(&o.description, &v.description, &mut c);
            }
            c
        });
    }
    for (name, p) in &stack.profiles {
        compare(Kind::Profile, name, current.profiles.get(name), &|o| {
            let mut c = Vec::new();
            map_changes("config.", &o.config, &p.config, &mut c);
            device_changes(&o.devices, &p.devices, &mut c);
            description_change(&o.description, &p.description, &mut c);
            c
        });
    }
    for (name, i) in &stack.instances {
        compare(Kind::Instance, name, current.instances.get(name), &|o| {
            let mut c = Vec::new();
            let image_now = o.config.get(IMAGE_KEY);
            if image_now != Some(&i.image) {
                c.push(Change {
                    key: "image".into(),
                    from: image_now.cloned(),
                    to: Some(i.image.clone()),
                });
            }
            let own: Map = o
                .config
                .iter()
                .filter(|(k, _)| !server_owned(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut want = i.config.clone();
            // The image key's change is said once, as `image`.
            want.retain(|k, _| !server_owned(k) && k != IMAGE_KEY);
            let own: Map = own.into_iter().filter(|(k, _)| k != IMAGE_KEY).collect();
            map_changes("config.", &own, &want, &mut c);
            device_changes(&o.devices, &i.devices, &mut c);
            if o.profiles != i.profiles {
                c.push(Change {
                    key: "profiles".into(),
                    from: Some(o.profiles.join(",")),
                    to: Some(i.profiles.join(",")),
                });
            }
            description_change(&o.description, &i.description, &mut c);
            if o.status != "Running" {
                c.push(Change {
                    key: "status".into(),
                    from: Some(o.status.clone()),
                    to: Some("Running".into()),
                });
            }
            if !o.config.contains_key(PROVISIONED_KEY) {
                c.push(Change {
                    key: "provisioned".into(),
                    from: Some("no".into()),
                    to: Some("yes".into()),
                });
            }
            c
        });
    }
    if !foreign.is_empty() {
        return Err(Foreign(foreign));
    }
    let mine = |o: &Object| o.stack() == Some(stack.name.as_str());
    let orphans = |kind: Kind,
                   have: &BTreeMap<String, Object>,
                   want: &dyn Fn(&str) -> bool,
                   steps: &mut Vec<Step>| {
        for (name, o) in have {
            if mine(o) && !want(name) {
                steps.push(Step {
                    kind,
                    name: name.clone(),
                    op: Op::Delete,
                });
            }
        }
    };
    orphans(
        Kind::Network,
        &current.networks,
        &|n| stack.networks.contains_key(n),
        &mut steps,
    );
    orphans(
        Kind::Volume,
        &current.volumes,
        &|n| stack.volumes.contains_key(n),
        &mut steps,
    );
    orphans(
        Kind::Profile,
        &current.profiles,
        &|n| stack.profiles.contains_key(n),
        &mut steps,
    );
    orphans(
        Kind::Instance,
        &current.instances,
        &|n| stack.instances.contains_key(n),
        &mut steps,
    );
    steps.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    Ok(Plan { steps })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::stack::file::tests_support::parse_text;
    use crate::stack::model::build;

    const FILE: &str = "name: shop\nnetworks: {n1: {config: {ipv4.address: auto, ipv4.nat: \"false\"}}}\nvolumes: {data: {}}\nprofiles: {small: {config: {user.tier: s}}}\ninstances:\n  web: {image: bb, ports: [\"8080:80\"], config: {user.color: blue}}\n  db: {image: bb, volumes: {data: /data}}\n";

    fn stack(text: &str) -> Stack {
        build(parse_text(text).unwrap(), Path::new("/x")).unwrap()
    }

    /// The server after a full apply of `s`, as the server would show it.
    fn applied(s: &Stack) -> Current {
        let mut c = Current::default();
        for (n, net) in &s.networks {
            let mut config = net.config.clone();
            config.insert("ipv4.address".into(), "10.0.0.1/24".into());
            config.insert("ipv6.address".into(), "none".into());
            c.networks.insert(
                n.clone(),
                Object {
                    config,
                    ..Default::default()
                },
            );
        }
        for (k, v) in &s.volumes {
            let mut config = v.config.clone();
            config.insert("block.filesystem".into(), "ext4".into());
            c.volumes.insert(
                k.clone(),
                Object {
                    config,
                    ..Default::default()
                },
            );
        }
        for (n, p) in &s.profiles {
            c.profiles.insert(
                n.clone(),
                Object {
                    config: p.config.clone(),
                    devices: p.devices.clone(),
                    ..Default::default()
                },
            );
        }
        for (n, i) in &s.instances {
            let mut config = i.config.clone();
            config.insert("volatile.eth0.hwaddr".into(), "00:16:3e:00:00:01".into());
            config.insert("image.os".into(), "busybox".into());
            config.insert(PROVISIONED_KEY.into(), "true".into());
            c.instances.insert(
                n.clone(),
                Object {
                    config,
                    devices: i.devices.clone(),
                    profiles: i.profiles.clone(),
                    status: "Running".into(),
                    ..Default::default()
                },
            );
        }
        c
    }

    #[test]
    fn an_empty_server_gets_everything_created() {
        let s = stack(FILE);
        let p = plan(&s, &Current::default()).unwrap();
        let titles: Vec<String> = p.steps.iter().map(Step::title).collect();
        assert_eq!(
            titles,
            [
                "create network n1",
                "create volume default/data",
                "create profile small",
                "create instance db",
                "create instance web"
            ]
        );
    }

    #[test]
    fn an_applied_stack_has_an_empty_plan() {
        let s = stack(FILE);
        let p = plan(&s, &applied(&s)).unwrap();
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn changes_are_updates_with_their_keys_and_an_image_change_is_a_replace() {
        let s = stack(FILE);
        let now = applied(&s);
        let changed = stack(
            &FILE
                .replace("blue", "green")
                .replace("web: {image: bb", "web: {image: bb2")
                .replace("s}}}", "m}}}"),
        );
        let p = plan(&changed, &now).unwrap();
        let web = p.step(Kind::Instance, "web").unwrap();
        let Op::Replace(changes) = &web.op else {
            panic!("{web:?}")
        };
        let said: Vec<String> = changes.iter().map(Change::to_string).collect();
        assert_eq!(
            said,
            [
                "image: \"bb\" -> \"bb2\"",
                "config.user.color: \"blue\" -> \"green\""
            ]
        );
        let small = p.step(Kind::Profile, "small").unwrap();
        assert_eq!(
            small.op,
            Op::Update(vec![Change {
                key: "config.user.tier".into(),
                from: Some("s".into()),
                to: Some("m".into())
            }])
        );
        let only_color = stack(&FILE.replace("blue", "green"));
        let p = plan(&only_color, &now).unwrap();
        assert_eq!(p.steps.len(), 1);
        let Op::Update(c) = &p.steps[0].op else {
            panic!()
        };
        assert_eq!(c[0].to_string(), "config.user.color: \"blue\" -> \"green\"");
        let ports = stack(&FILE.replace("8080:80", "8081:80"));
        let p = plan(&ports, &now).unwrap();
        let Op::Update(c) = &p.step(Kind::Instance, "web").unwrap().op else {
            panic!()
        };
        let keys: Vec<&str> = c.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["devices.port-8081", "devices.port-8080"]);
    }

    #[test]
    fn a_stopped_or_unprovisioned_instance_is_an_update() {
        let s = stack(FILE);
        let mut now = applied(&s);
        let db = now.instances.get_mut("db").unwrap();
        db.status = "Stopped".into();
        db.config.remove(PROVISIONED_KEY);
        let p = plan(&s, &now).unwrap();
        let Op::Update(c) = &p.step(Kind::Instance, "db").unwrap().op else {
            panic!()
        };
        let keys: Vec<&str> = c.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["status", "provisioned"]);
    }

    #[test]
    fn orphans_are_deletes_and_foreign_objects_are_refused() {
        let s = stack(FILE);
        let mut now = applied(&s);
        let mut old = now.instances["db"].clone();
        old.config.insert(STACK_KEY.into(), "shop".into());
        now.instances.insert("old".into(), old.clone());
        let mut other = old.clone();
        other.config.insert(STACK_KEY.into(), "another".into());
        now.instances.insert("theirs".into(), other);
        now.instances.insert("plain".into(), Object::default());
        let p = plan(&s, &now).unwrap();
        assert_eq!(p.steps.len(), 1, "{p:?}");
        assert_eq!(p.steps[0].title(), "delete instance old");
        now.profiles
            .get_mut("small")
            .unwrap()
            .config
            .remove(STACK_KEY);
        now.instances
            .get_mut("web")
            .unwrap()
            .config
            .insert(STACK_KEY.into(), "another".into());
        let e = plan(&s, &now).unwrap_err().to_string();
        assert!(
            e.starts_with("profile small, instance web not part of this stack"),
            "{e}"
        );
    }
}
