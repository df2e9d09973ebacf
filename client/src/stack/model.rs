//! The stack as the objects it wants on the server, checked: names, references, port
//! specs and the `depends_on` graph (cycles refused) — all before anything is created.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::StackError;
use super::file::{Command, Condition, Config, StackFile};
use super::ports::Port;

/// The label every object of a stack carries: `user.hutch.stack=<name>`.
pub const STACK_KEY: &str = "user.hutch.stack";
/// The image as the file writes it, on each instance: a change means a new instance.
pub const IMAGE_KEY: &str = "user.hutch.image";
/// Set once an instance's files and provision commands have run.
pub const PROVISIONED_KEY: &str = "user.hutch.provisioned";

pub type Map = BTreeMap<String, String>;
pub type Devices = BTreeMap<String, Map>;

/// The stack, ready to plan.
#[derive(Debug)]
pub struct Stack {
    pub name: String,
    pub networks: BTreeMap<String, Network>,
    /// By `pool/name`.
    pub volumes: BTreeMap<String, Volume>,
    pub profiles: BTreeMap<String, Profile>,
    /// One per instance name (replicas expanded).
    pub instances: BTreeMap<String, Instance>,
    /// Services (file entries) by name: their instance names and what they wait for.
    pub services: BTreeMap<String, Service>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub name: String,
    pub description: String,
    pub config: Map,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub pool: String,
    pub name: String,
    pub description: String,
    pub config: Map,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub config: Map,
    pub devices: Devices,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub name: String,
    pub service: String,
    pub image: String,
    pub description: String,
    pub profiles: Vec<String>,
    /// With the stack's labels.
    pub config: Map,
    /// With the `ports`, `volumes` and `networks` shorthands turned into devices.
    pub devices: Devices,
    pub provision: Vec<Vec<String>>,
    pub files: Vec<FilePush>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FilePush {
    pub source: PathBuf,
    pub target: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub instances: Vec<String>,
    pub depends_on: BTreeMap<String, Condition>,
    pub healthcheck: Option<Health>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub command: Vec<String>,
    pub interval: Duration,
    pub retries: u64,
}

/// LXD's rule for instance, profile and volume names, kept simple: letters, digits and
/// dashes, starting with a letter, at most 63 characters.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn strings(config: &Config) -> Map {
    config
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

fn devices(devices: &BTreeMap<String, Config>) -> Devices {
    devices
        .iter()
        .map(|(k, v)| (k.clone(), strings(v)))
        .collect()
}

/// `500ms`, `2s`, `1m`, or a number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return None,
    })
}

fn label(stack: &str, mut config: Map) -> Map {
    config.insert(STACK_KEY.into(), stack.into());
    config
}

/// Checks the file and builds the objects it wants. `dir` is the file's folder.
pub fn build(file: StackFile, dir: &Path) -> Result<Stack, StackError> {
    if !valid_name(&file.name) {
        return Err(StackError::invalid(
            "name",
            format!("{:?} is not a valid stack name (letters, digits and dashes, starting with a letter)", file.name),
        ));
    }
    let stack = file.name.clone();
    let mut networks = BTreeMap::new();
    for (name, n) in &file.networks {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', ':']) {
            return Err(StackError::invalid(
                format!("networks.{name}"),
                "a network name is a host interface name: at most 15 characters, no '/', ':' or spaces",
            ));
        }
        networks.insert(
            name.clone(),
            Network {
                name: name.clone(),
                description: n.description.clone().unwrap_or_default(),
                config: label(&stack, strings(&n.config)),
            },
        );
    }
    let mut volumes = BTreeMap::new();
    let mut volume_pool = BTreeMap::new();
    for (name, v) in &file.volumes {
        if !valid_name(name) {
            return Err(StackError::invalid(
                format!("volumes.{name}"),
                "not a valid volume name",
            ));
        }
        let pool = v.pool.clone().unwrap_or_else(|| "default".into());
        volume_pool.insert(name.clone(), pool.clone());
        volumes.insert(
            format!("{pool}/{name}"),
            Volume {
                pool,
                name: name.clone(),
                description: v.description.clone().unwrap_or_default(),
                config: label(&stack, strings(&v.config)),
            },
        );
    }
    let mut profiles = BTreeMap::new();
    for (name, p) in &file.profiles {
        if !valid_name(name) {
            return Err(StackError::invalid(
                format!("profiles.{name}"),
                "not a valid profile name",
            ));
        }
        profiles.insert(
            name.clone(),
            Profile {
                name: name.clone(),
                description: p.description.clone().unwrap_or_default(),
                config: label(&stack, strings(&p.config)),
                devices: devices(&p.devices),
            },
        );
    }
    let mut instances = BTreeMap::new();
    let mut services = BTreeMap::new();
    for (service, spec) in &file.instances {
        let at = format!("instances.{service}");
        if !valid_name(service) {
            return Err(StackError::invalid(
                &at,
                "not a valid instance name (letters, digits and dashes, starting with a letter)",
            ));
        }
        let mut devs = devices(&spec.devices);
        for (i, p) in spec.ports.iter().enumerate() {
            let port = Port::parse(&p.0)
                .map_err(|why| StackError::invalid(format!("{at}.ports[{i}]"), why))?;
            devs.insert(port.device_name(), port.device());
        }
        for (volume, path) in &spec.volumes {
            let Some(pool) = volume_pool.get(volume) else {
                return Err(StackError::invalid(
                    format!("{at}.volumes.{volume}"),
                    "no such volume in the stack's volumes",
                ));
            };
            devs.insert(
                format!("vol-{volume}"),
                Map::from([
                    ("type".into(), "disk".into()),
                    ("pool".into(), pool.clone()),
                    ("source".into(), volume.clone()),
                    ("path".into(), path.clone()),
                ]),
            );
        }
        for (i, net) in spec.networks.iter().enumerate() {
            devs.insert(
                format!("eth{i}"),
                Map::from([
                    ("type".into(), "nic".into()),
                    ("network".into(), net.clone()),
                    ("name".into(), format!("eth{i}")),
                ]),
            );
        }
        let count = spec.count.map(|n| n.0);
        if count == Some(0) || count.is_some_and(|n| n > 1000) {
            return Err(StackError::invalid(
                format!("{at}.count"),
                "count is from 1 to 1000",
            ));
        }
        if count.is_some_and(|n| n > 1) && !spec.ports.is_empty() {
            return Err(StackError::invalid(
                format!("{at}.ports"),
                "ports cannot be used with count > 1: every replica would listen on the same host port",
            ));
        }
        let names: Vec<String> = match count {
            None => vec![service.clone()],
            Some(n) => (1..=n).map(|i| format!("{service}-{i}")).collect(),
        };
        let mut config = label(&stack, strings(&spec.config));
        config.insert(IMAGE_KEY.into(), spec.image.clone());
        let files = spec
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let key = format!("{at}.files[{i}]");
                if !f.target.starts_with('/') {
                    return Err(StackError::invalid(key, "target must be an absolute path"));
                }
                let mode = match &f.mode {
                    None => None,
                    Some(m) => Some(
                        u32::from_str_radix(&m.0, 8)
                            .ok()
                            .filter(|m| *m <= 0o7777)
                            .ok_or_else(|| {
                                StackError::invalid(
                                    format!("{key}.mode"),
                                    format!("{:?} is not an octal mode", m.0),
                                )
                            })?,
                    ),
                };
                let id = |n: Option<super::file::Number>, what: &str| {
                    n.map(|n| {
                        u32::try_from(n.0).map_err(|_| {
                            StackError::invalid(format!("{key}.{what}"), "out of range")
                        })
                    })
                    .transpose()
                };
                Ok(FilePush {
                    source: dir.join(&f.source),
                    target: f.target.clone(),
                    uid: id(f.uid, "uid")?,
                    gid: id(f.gid, "gid")?,
                    mode,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for name in &names {
            if instances.contains_key(name) {
                return Err(StackError::invalid(
                    &at,
                    format!("instance name {name} is used twice (a replica of another entry)"),
                ));
            }
            instances.insert(
                name.clone(),
                Instance {
                    name: name.clone(),
                    service: service.clone(),
                    image: spec.image.clone(),
                    description: spec.description.clone().unwrap_or_default(),
                    profiles: spec
                        .profiles
                        .clone()
                        .unwrap_or_else(|| vec!["default".into()]),
                    config: config.clone(),
                    devices: devs.clone(),
                    provision: spec.provision.iter().map(|Command(c)| c.clone()).collect(),
                    files: files.clone(),
                },
            );
        }
        let healthcheck = match &spec.healthcheck {
            None => None,
            Some(h) => Some(Health {
                command: h.command.0.clone(),
                interval: match &h.interval {
                    None => Duration::from_secs(1),
                    Some(s) => parse_duration(&s.0).ok_or_else(|| {
                        StackError::invalid(
                            format!("{at}.healthcheck.interval"),
                            format!("{:?} is not a duration (500ms, 2s, 1m)", s.0),
                        )
                    })?,
                },
                retries: h.retries.map_or(30, |n| n.0.max(1)),
            }),
        };
        services.insert(
            service.clone(),
            Service {
                instances: names,
                depends_on: spec.depends_on.0.clone(),
                healthcheck,
            },
        );
    }
    for (name, s) in &services {
        for (dep, cond) in &s.depends_on {
            let key = format!("instances.{name}.depends_on.{dep}");
            let Some(target) = services.get(dep) else {
                return Err(StackError::invalid(key, "no such instance in the stack"));
            };
            if *cond == Condition::Healthy && target.healthcheck.is_none() {
                return Err(StackError::invalid(
                    key,
                    format!("condition healthy needs a healthcheck on {dep}"),
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(&services) {
        return Err(StackError::invalid(
            "depends_on",
            format!("dependency cycle: {}", cycle.join(" -> ")),
        ));
    }
    Ok(Stack {
        name: stack,
        networks,
        volumes,
        profiles,
        instances,
        services,
    })
}

/// A cycle in `depends_on`, as the names along it (first = last), if there is one.
pub fn find_cycle(services: &BTreeMap<String, Service>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        name: &str,
        services: &BTreeMap<String, Service>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(name).copied().unwrap_or(Mark::New) {
            Mark::Done => return None,
            Mark::OnPath => {
                let start = path.iter().position(|p| p == name).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(name.to_string());
                return Some(cycle);
            }
            Mark::New => {}
        }
        marks.insert(name.to_string(), Mark::OnPath);
        path.push(name.to_string());
        for dep in services
            .get(name)
            .into_iter()
            .flat_map(|s| s.depends_on.keys())
        {
            if let Some(c) = visit(dep, services, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(name.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for name in services.keys() {
        if let Some(c) = visit(name, services, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// The services in waves: each wave depends only on earlier ones (no cycles: checked).
pub fn waves(services: &BTreeMap<String, Service>) -> Vec<Vec<String>> {
    let mut placed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut waves: Vec<Vec<String>> = Vec::new();
    while placed.len() < services.len() {
        let ready: Vec<&String> = services
            .iter()
            .filter(|(n, s)| {
                !placed.contains_key(n.as_str())
                    && s.depends_on.keys().all(|d| placed.contains_key(d.as_str()))
            })
            .map(|(n, _)| n)
            .collect();
        if ready.is_empty() {
            break; // a cycle; build() refuses those first
        }
        for n in &ready {
            placed.insert(n.as_str(), waves.len());
        }
        waves.push(ready.into_iter().cloned().collect());
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(text: &str) -> Result<Stack, StackError> {
        let f = super::super::file::tests_support::parse_text(text)?;
        build(f, Path::new("/srv/shop"))
    }

    #[test]
    fn replicas_ports_volumes_and_networks_become_instances_and_devices() {
        let s = stack(
            "name: shop\nvolumes: {data: {}}\ninstances:\n  web: {image: bb, ports: [\"127.0.0.1:8080:80\"], files: [{source: a.html, target: /www/a.html}]}\n  app: {image: bb, count: 2, networks: [n1], depends_on: [db]}\n  db: {image: bb, volumes: {data: /data}}\n",
        )
        .unwrap();
        assert_eq!(
            s.instances.keys().collect::<Vec<_>>(),
            ["app-1", "app-2", "db", "web"]
        );
        let web = &s.instances["web"];
        assert_eq!(web.devices["port-8080"]["listen"], "tcp:127.0.0.1:8080");
        assert_eq!(web.devices["port-8080"]["connect"], "tcp:127.0.0.1:80");
        assert_eq!(web.config[STACK_KEY], "shop");
        assert_eq!(web.config[IMAGE_KEY], "bb");
        assert_eq!(web.profiles, ["default"]);
        assert_eq!(web.files[0].source, Path::new("/srv/shop/a.html"));
        assert_eq!(s.instances["app-2"].devices["eth0"]["network"], "n1");
        let db = &s.instances["db"];
        assert_eq!(db.devices["vol-data"]["source"], "data");
        assert_eq!(db.devices["vol-data"]["pool"], "default");
        assert_eq!(s.volumes["default/data"].config[STACK_KEY], "shop");
        assert_eq!(waves(&s.services), [vec!["db", "web"], vec!["app"]]);
    }

    #[test]
    fn cycles_are_refused_naming_the_path() {
        let e = stack(
            "name: s\ninstances:\n  a: {image: bb, depends_on: [b]}\n  b: {image: bb, depends_on: [c]}\n  c: {image: bb, depends_on: [a]}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("dependency cycle: a -> b -> c -> a"), "{e}");
        let e = stack("name: s\ninstances:\n  a: {image: bb, depends_on: [a]}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a -> a"), "{e}");
    }

    #[test]
    fn bad_references_and_names_are_refused() {
        for (text, want) in [
            ("name: s\ninstances: {a: {image: bb, depends_on: [x]}}\n", "instances.a.depends_on.x"),
            ("name: s\ninstances: {a: {image: bb, volumes: {x: /x}}}\n", "instances.a.volumes.x"),
            ("name: s\ninstances: {a: {image: bb}, b: {image: bb, depends_on: {a: {condition: healthy}}}}\n", "needs a healthcheck"),
            ("name: s\ninstances: {a: {image: bb, count: 2, ports: [80]}}\n", "count > 1"),
            ("name: s\ninstances: {a: {image: bb, ports: [\"x\"]}}\n", "instances.a.ports[0]"),
            ("name: s\ninstances: {a_b: {image: bb}}\n", "instances.a_b"),
            ("name: 1s\n", "stack name"),
            ("name: s\ninstances: {a: {image: bb, files: [{source: x, target: rel}]}}\n", "absolute"),
            ("name: s\ninstances: {a: {image: bb, healthcheck: {command: x, interval: 5h}}}\n", "interval"),
        ] {
            let e = stack(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("x"), None);
    }
}
