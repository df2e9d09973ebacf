//! The stack file's shape (serde types, unknown keys refused) and its loading: YAML
//! syntax with line and column, `${VAR}` interpolation of string values, then the typed
//! shape with the path of any key that does not fit.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::error::StackError;
use super::interpolate::{interpolate, parse_dotenv, Vars};

/// A `key: value` map whose values are strings, numbers or booleans, kept as strings (as
/// LXD keeps config).
pub type Config = BTreeMap<String, Scalar>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackFile {
    pub name: String,
    #[serde(default)]
    pub instances: BTreeMap<String, InstanceSpec>,
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkSpec>,
    #[serde(default)]
    pub volumes: BTreeMap<String, VolumeSpec>,
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    pub image: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Profiles in order; `["default"]` when not given.
    #[serde(default)]
    pub profiles: Option<Vec<String>>,
    #[serde(default)]
    pub config: Config,
    #[serde(default)]
    pub devices: BTreeMap<String, Config>,
    /// Identical replicas named NAME-1..NAME-N.
    #[serde(default)]
    pub count: Option<Number>,
    #[serde(default)]
    pub depends_on: DependsOn,
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
    /// Commands run once, after the first start.
    #[serde(default)]
    pub provision: Vec<Command>,
    /// Files pushed once, after the first start and before `provision`.
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// `[HOST_IP:]HOST_PORT:INSTANCE_PORT[/tcp|/udp]`, each a proxy device.
    #[serde(default)]
    pub ports: Vec<Scalar>,
    /// The stack's volumes to attach: volume name → path inside.
    #[serde(default)]
    pub volumes: BTreeMap<String, String>,
    /// Networks to plug in, as eth0, eth1, ... (replacing a profile's eth0).
    #[serde(default)]
    pub networks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub config: Config,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// The storage pool, `default` when not given.
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub config: Config,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub config: Config,
    #[serde(default)]
    pub devices: BTreeMap<String, Config>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    pub command: Command,
    /// Between tries: `500ms`, `2s`, `1m` or a number of seconds (default 1s).
    #[serde(default)]
    pub interval: Option<Scalar>,
    /// Tries before giving up (default 30).
    #[serde(default)]
    pub retries: Option<Number>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// On this machine, relative to the stack file's folder.
    pub source: String,
    /// The absolute path inside the instance.
    pub target: String,
    #[serde(default)]
    pub uid: Option<Number>,
    #[serde(default)]
    pub gid: Option<Number>,
    /// Octal, as a string (`"0644"`).
    #[serde(default)]
    pub mode: Option<Scalar>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Running.
    #[default]
    Started,
    /// Running and its healthcheck succeeded.
    Healthy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    #[serde(default)]
    pub condition: Condition,
}

/// `depends_on`: a list of names (started), or a map of name → `{condition: ...}`.
#[derive(Debug, Default)]
pub struct DependsOn(pub BTreeMap<String, Condition>);

impl<'de> Deserialize<'de> for DependsOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DependsOn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of instance names or a map of name to {condition}")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DependsOn, A::Error> {
                let mut m = BTreeMap::new();
                while let Some(name) = seq.next_element::<String>()? {
                    m.insert(name, Condition::Started);
                }
                Ok(DependsOn(m))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DependsOn, A::Error> {
                let mut m = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    let dep: Dependency = map.next_value()?;
                    m.insert(name, dep.condition);
                }
                Ok(DependsOn(m))
            }
        }
        d.deserialize_any(V)
    }
}

/// A command: a string run by `sh -c`, or a list taken as the argv.
#[derive(Debug, Clone, PartialEq)]
pub struct Command(pub Vec<String>);

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Command;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command string or a list of arguments")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Command, E> {
                Ok(Command(vec!["sh".into(), "-c".into(), s.into()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
                let mut argv = Vec::new();
                while let Some(a) = seq.next_element::<Scalar>()? {
                    argv.push(a.0);
                }
                if argv.is_empty() {
                    return Err(de::Error::invalid_length(0, &"at least the program"));
                }
                Ok(Command(argv))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string, number or boolean, as a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar(s.into()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar, E> {
                Ok(Scalar(n.to_string()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar, E> {
                Ok(Scalar(n.to_string()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Scalar, E> {
                Ok(Scalar(n.to_string()))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Scalar, E> {
                Ok(Scalar(b.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A whole number, written as one or as a string of digits (what `${N}` gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Number(pub u64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Scalar::deserialize(d)?;
        s.0.trim()
            .parse()
            .map(Number)
            .map_err(|_| de::Error::custom(format!("{:?} is not a whole number", s.0)))
    }
}

/// Reads, interpolates and shapes the stack file at `path`; `.env` beside it fills
/// variables the environment (`lookup`) lacks. Returns the file and the variables used
/// but set nowhere.
pub fn load(
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(StackFile, Vec<String>), StackError> {
    let text = std::fs::read_to_string(path).map_err(|source| StackError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let dotenv_path = path.parent().unwrap_or(Path::new(".")).join(".env");
    let dotenv = match std::fs::read_to_string(&dotenv_path) {
        Ok(t) => parse_dotenv(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(source) => {
            return Err(StackError::Read {
                path: dotenv_path,
                source,
            })
        }
    };
    let mut vars = Vars {
        lookup,
        dotenv: &dotenv,
        missing: Vec::new(),
    };
    let file = parse(path, &text, &mut vars)?;
    Ok((file, vars.missing))
}

/// [`load`] of text already read.
pub fn parse(path: &Path, text: &str, vars: &mut Vars<'_>) -> Result<StackFile, StackError> {
    let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| syntax(path, &e))?;
    if value.is_null() {
        return Err(StackError::Shape {
            path: path.to_path_buf(),
            at: None,
            key: "name".into(),
            message: "the file is empty".into(),
        });
    }
    interpolate_values(&mut value, "", vars)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        StackError::Shape {
            path: path.to_path_buf(),
            at: location_of(text, &key),
            key: if key == "." { "(top)".into() } else { key },
            message: e.into_inner().to_string(),
        }
    })
}

/// Where in `text` the shape error at `key` is: the values were interpolated in a tree
/// that has no positions, so the raw text is read again and its error taken when it is
/// at the same key (an unknown key always is).
fn location_of(text: &str, key: &str) -> Option<(usize, usize)> {
    let raw = serde_yaml::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, StackFile>(raw) {
        Err(e) if e.path().to_string() == key => {
            e.inner().location().map(|l| (l.line(), l.column()))
        }
        _ => None,
    }
}

fn syntax(path: &Path, e: &serde_yaml::Error) -> StackError {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let mut message = e.to_string();
    // The location is said once, in front.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    StackError::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// Interpolates every string value (not keys) under `value`, whose path is `at`.
fn interpolate_values(
    value: &mut serde_yaml::Value,
    at: &str,
    vars: &mut Vars<'_>,
) -> Result<(), StackError> {
    use serde_yaml::Value;
    match value {
        Value::String(s) => *s = interpolate(s, at, vars)?,
        Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                interpolate_values(v, &format!("{at}[{i}]"), vars)?;
            }
        }
        Value::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .into(),
                };
                let path = if at.is_empty() {
                    key
                } else {
                    format!("{at}.{key}")
                };
                interpolate_values(v, &path, vars)?;
            }
        }
        Value::Tagged(t) => interpolate_values(&mut t.value, at, vars)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// Parsing from text with a given environment, for the unit tests of this module tree.
#[cfg(test)]
pub mod tests_support {
    use super::*;

    pub fn parse_text_env(text: &str, env: &[(&str, &str)]) -> Result<StackFile, StackError> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = |k: &str| env.get(k).cloned();
        let dotenv = BTreeMap::new();
        let mut vars = Vars {
            lookup: &lookup,
            dotenv: &dotenv,
            missing: Vec::new(),
        };
        parse(Path::new("stack.yaml"), text, &mut vars)
    }

    pub fn parse_text(text: &str) -> Result<StackFile, StackError> {
        parse_text_env(text, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::parse_text_env as parse_text;
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let f = parse_text(
            r#"
name: shop
networks:
  shopnet:
    config: {ipv4.nat: false, ipv4.address: 10.1.2.1/24}
volumes:
  data: {pool: fast, config: {size: 1GiB}}
profiles:
  small: {config: {limits.cpu: 1}, devices: {}}
instances:
  db:
    image: ${IMAGE:-bb}
    volumes: {data: /data}
    healthcheck: {command: "test -e /ready", interval: 200ms, retries: "5"}
  web:
    image: bb
    ports: ["8080:80", 9000]
    depends_on: {db: {condition: healthy}}
    provision:
      - echo hi
      - [touch, /x]
    files:
      - {source: index.html, target: /www/index.html, mode: "0644"}
  app:
    image: bb
    count: ${N}
    depends_on: [db]
    networks: [shopnet]
"#,
            &[("N", "2")],
        )
        .unwrap();
        assert_eq!(f.name, "shop");
        assert_eq!(f.instances["db"].image, "bb");
        assert_eq!(f.instances["app"].count, Some(Number(2)));
        assert_eq!(f.networks["shopnet"].config["ipv4.nat"].0, "false");
        assert_eq!(f.profiles["small"].config["limits.cpu"].0, "1");
        let web = &f.instances["web"];
        assert_eq!(web.depends_on.0["db"], Condition::Healthy);
        assert_eq!(web.provision[0].0, ["sh", "-c", "echo hi"]);
        assert_eq!(web.provision[1].0, ["touch", "/x"]);
        assert_eq!(web.ports[1].0, "9000");
        assert_eq!(f.instances["app"].depends_on.0["db"], Condition::Started);
        let hc = f.instances["db"].healthcheck.as_ref().unwrap();
        assert_eq!(hc.retries, Some(Number(5)));
    }

    #[test]
    fn syntax_errors_say_line_and_column() {
        let e = parse_text("name: x\ninstances:\n  web:\n    image: [bb\n", &[]).unwrap_err();
        let StackError::Syntax { line, column, .. } = &e else {
            panic!("{e}")
        };
        assert!(*line >= 4, "{e}");
        assert!(*column > 0, "{e}");
        assert!(e.to_string().starts_with("stack.yaml:"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let e = parse_text("name: x\ninstances:\n  web:\n    imgae: bb\n", &[]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("stack.yaml:4:5: instances.web.imgae: "),
            "{text}"
        );
        assert!(text.contains("unknown field `imgae`"), "{text}");
        let e = parse_text(
            "name: x\ninstances:\n  web:\n    image: bb\n    depends_on: {db: {conditon: healthy}}\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("instances.web.depends_on.db"), "{e}");
        assert!(e.contains("conditon"), "{e}");
        let e = parse_text("name: x\nservices: {}\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `services`"), "{e}");
        let e = parse_text("name: x\ninstances: {web: {image: bb, count: lots}}\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("instances.web.count"), "{e}");
    }
}
