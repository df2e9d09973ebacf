//! Image templates: the pongo2-compatible subset that LXD images use (`{{ container.name }}`,
//! `{{ config_get("user.x", "") }}`, `{% if %}`, filters, whitespace control), parsed and
//! rendered with bounded depth and output, since a template comes from an image.

use std::collections::BTreeMap;
use std::fmt::Write as _;

mod lex;
mod parse;
mod render;

use lex::lex;
use parse::{Node, Parser};
use render::Renderer;

/// Every way a template can fail to parse or render.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("line {line}: {what}")]
    Syntax { line: usize, what: String },
    #[error("line {line}: unknown tag {name:?}")]
    UnknownTag { line: usize, name: String },
    #[error("line {line}: filter {name:?} does not exist")]
    UnknownFilter { line: usize, name: String },
    #[error("line {line}: function {name:?} does not exist")]
    UnknownFunction { line: usize, name: String },
    #[error("line {line}: {name} takes {expected} arguments, not {got}")]
    Arguments {
        line: usize,
        name: String,
        expected: usize,
        got: usize,
    },
    #[error("template nests deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("template output is larger than the {limit} bytes allowed")]
    TooLarge { limit: usize },
    #[error("template takes more than {limit} steps to render")]
    TooManySteps { limit: usize },
}

/// Bounds on parsing and rendering one template.
#[derive(Debug, Clone, Copy)]
pub struct TemplateLimits {
    /// Nested blocks and expressions.
    pub max_depth: usize,
    /// Bytes of output.
    pub max_output: usize,
    /// Nodes visited while rendering (nested loops over the config cannot spin forever).
    pub max_steps: usize,
}

impl Default for TemplateLimits {
    fn default() -> Self {
        TemplateLimits {
            max_depth: 64,
            max_output: 16 << 20,
            max_steps: 1_000_000,
        }
    }
}

/// A value in a template's context, as pongo2 sees Go values.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<&BTreeMap<String, String>> for Value {
    fn from(m: &BTreeMap<String, String>) -> Self {
        Value::Map(
            m.iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect(),
        )
    }
}

impl Value {
    /// pongo2's truth: empty strings, lists and maps, zero, false and nil are false.
    pub fn is_true(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }

    /// The text pongo2 prints for a value (Go's `fmt` for lists and maps).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) {
        match self {
            Value::Nil => {}
            Value::Bool(true) => out.push_str("True"),
            Value::Bool(false) => out.push_str("False"),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => {
                let _ = write!(out, "{f:.6}");
            }
            Value::Str(s) => out.push_str(s),
            Value::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    v.write_text(out);
                }
                out.push(']');
            }
            Value::Map(m) => {
                out.push_str("map[");
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push(':');
                    v.write_text(out);
                }
                out.push(']');
            }
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    fn equals(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
                self.as_f64() == other.as_f64()
            }
            _ => self == other,
        }
    }

    fn contains(&self, needle: &Value) -> bool {
        match self {
            Value::Str(s) => s.contains(&needle.to_text()),
            Value::Map(m) => m.contains_key(&needle.to_text()),
            Value::List(l) => l.iter().any(|v| v.equals(needle)),
            _ => false,
        }
    }

    fn attribute(&self, name: &str) -> Value {
        match self {
            Value::Map(m) => m.get(name).cloned().unwrap_or(Value::Nil),
            Value::List(l) => name
                .parse::<usize>()
                .ok()
                .and_then(|i| l.get(i).cloned())
                .unwrap_or(Value::Nil),
            _ => Value::Nil,
        }
    }

    fn len(&self) -> usize {
        match self {
            Value::Str(s) => s.chars().count(),
            Value::List(l) => l.len(),
            Value::Map(m) => m.len(),
            _ => 0,
        }
    }
}

/// What a template sees: its variables, and the config `config_get` reads.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub vars: BTreeMap<String, Value>,
    /// The instance's expanded config (`config_get(key, default)`).
    pub config: BTreeMap<String, String>,
}

/// The instance a template is rendered for.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    pub name: String,
    pub architecture: String,
    pub privileged: bool,
    pub ephemeral: bool,
}

impl Context {
    /// The context LXD gives an image template: `trigger`, `path`, `container` and
    /// `instance` (name, type, architecture, privileged, ephemeral, all strings), `config`,
    /// `devices`, `properties`, and `config_get(key, default)`.
    pub fn lxd(
        trigger: &str,
        path: &str,
        instance: &InstanceInfo,
        config: &BTreeMap<String, String>,
        devices: &BTreeMap<String, BTreeMap<String, String>>,
        properties: &BTreeMap<String, String>,
    ) -> Self {
        let flag = |b: bool| Value::from(if b { "true" } else { "false" });
        let meta = Value::Map(BTreeMap::from([
            ("name".to_string(), Value::from(instance.name.as_str())),
            ("type".to_string(), Value::from("container")),
            (
                "architecture".to_string(),
                Value::from(instance.architecture.as_str()),
            ),
            ("privileged".to_string(), flag(instance.privileged)),
            ("ephemeral".to_string(), flag(instance.ephemeral)),
        ]));
        let devices = Value::Map(
            devices
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v)))
                .collect(),
        );
        let vars = BTreeMap::from([
            ("trigger".to_string(), Value::from(trigger)),
            ("path".to_string(), Value::from(path)),
            ("container".to_string(), meta.clone()),
            ("instance".to_string(), meta),
            ("config".to_string(), Value::from(config)),
            ("devices".to_string(), devices),
            ("properties".to_string(), Value::from(properties)),
        ]);
        Context {
            vars,
            config: config.clone(),
        }
    }
}

/// Parses and renders `source` in one go.
pub fn render(
    source: &str,
    ctx: &Context,
    limits: TemplateLimits,
) -> Result<String, TemplateError> {
    CompiledTemplate::parse(source, limits)?.render(ctx, limits)
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct CompiledTemplate {
    nodes: Vec<Node>,
}

impl CompiledTemplate {
    /// Parses a template; every syntax error is found here, before anything renders.
    pub fn parse(source: &str, limits: TemplateLimits) -> Result<Self, TemplateError> {
        let tokens = lex(source)?;
        let mut parser = Parser {
            tokens,
            pos: 0,
            depth: 0,
            limits,
        };
        let (nodes, end) = parser.block(&[])?;
        if let Some(end) = end {
            return Err(TemplateError::Syntax {
                line: end.line,
                what: format!("unexpected {{% {} %}}", end.name),
            });
        }
        Ok(CompiledTemplate { nodes })
    }

    /// Renders with `ctx`; output past `limits.max_output` is an error, not a truncation.
    pub fn render(&self, ctx: &Context, limits: TemplateLimits) -> Result<String, TemplateError> {
        let mut r = Renderer {
            ctx,
            scopes: Vec::new(),
            out: String::new(),
            limits,
            autoescape: false,
            steps: 0,
        };
        r.nodes(&self.nodes)?;
        Ok(r.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(config: &[(&str, &str)]) -> Context {
        let config: BTreeMap<String, String> = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let devices = BTreeMap::from([(
            "eth0".to_string(),
            BTreeMap::from([
                ("type".to_string(), "nic".to_string()),
                ("nictype".to_string(), "bridged".to_string()),
            ]),
        )]);
        let properties = BTreeMap::from([("default".to_string(), "#cloud-config\n{}".to_string())]);
        Context::lxd(
            "create",
            "/etc/hostname",
            &InstanceInfo {
                name: "web1".into(),
                architecture: "x86_64".into(),
                privileged: false,
                ephemeral: true,
            },
            &config,
            &devices,
            &properties,
        )
    }

    fn r(src: &str, c: &Context) -> String {
        render(src, c, TemplateLimits::default()).unwrap_or_else(|e| panic!("{src:?}: {e}"))
    }

    fn err(src: &str) -> TemplateError {
        render(src, &ctx(&[]), TemplateLimits::default()).unwrap_err()
    }

    // distrobuilder's hostname generator.
    #[test]
    fn public_hostname_template() {
        assert_eq!(r("{{ container.name }}\n", &ctx(&[])), "web1\n");
    }

    // distrobuilder's hosts generator: the image's /etc/hosts with its name replaced.
    #[test]
    fn public_hosts_template() {
        let tpl = "127.0.1.1\t{{ container.name }}\n127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n";
        let out = r(tpl, &ctx(&[]));
        assert!(
            out.starts_with("127.0.1.1\tweb1\n127.0.0.1\tlocalhost\n"),
            "{out}"
        );
        assert_eq!(out.lines().count(), 5);
    }

    // distrobuilder's cloud-init user-data (vendor-data is the same with its own keys).
    const USER_DATA: &str = r#"{%- if config_get("cloud-init.user-data", properties.default) == properties.default -%}
{{ config_get("user.user-data", properties.default) }}
{%- else -%}
{{- config_get("cloud-init.user-data", properties.default) }}
{%- endif %}
"#;

    #[test]
    fn public_cloud_init_user_data() {
        assert_eq!(r(USER_DATA, &ctx(&[])), "#cloud-config\n{}\n");
        assert_eq!(
            r(
                USER_DATA,
                &ctx(&[("user.user-data", "#cloud-config\npackages: [vim]\n")])
            ),
            "#cloud-config\npackages: [vim]\n"
        );
        assert_eq!(
            r(
                USER_DATA,
                &ctx(&[
                    ("user.user-data", "old"),
                    ("cloud-init.user-data", "#cloud-config\nnew: 1\n\n")
                ])
            ),
            "#cloud-config\nnew: 1\n"
        );
    }

    #[test]
    fn public_cloud_init_meta_data() {
        let tpl = "instance-id: {{ container.name }}\nlocal-hostname: {{ container.name }}\n{{ config_get(\"user.meta-data\", \"\") }}\n";
        assert_eq!(
            r(tpl, &ctx(&[])),
            "instance-id: web1\nlocal-hostname: web1\n\n"
        );
        assert_eq!(
            r(tpl, &ctx(&[("user.meta-data", "a: b\n")])),
            "instance-id: web1\nlocal-hostname: web1\na: b\n"
        );
    }

    // distrobuilder's default network-config, with lxc-ci's content put in.
    const NETWORK_CONFIG: &str = r#"{%- if config_get("cloud-init.network-config", "") == "" -%}
{%- if config_get("user.network-config", "") == "" -%}
version: 1
config:
  - type: physical
    name: {% if instance.type == "virtual-machine" %}enp5s0{% else %}eth0{% endif %}
    subnets:
      - type: dhcp
        control: auto
{%- else -%}
{{- config_get("user.network-config", "") -}}
{%- endif -%}
{%- else -%}
{{- config_get("cloud-init.network-config", "") -}}
{%- endif %}
"#;

    #[test]
    fn public_cloud_init_network_config() {
        assert_eq!(
            r(NETWORK_CONFIG, &ctx(&[])),
            "version: 1\nconfig:\n  - type: physical\n    name: eth0\n    subnets:\n      - type: dhcp\n        control: auto\n"
        );
        assert_eq!(
            r(
                NETWORK_CONFIG,
                &ctx(&[("user.network-config", "version: 2\n")])
            ),
            "version: 2\n"
        );
        assert_eq!(
            r(
                NETWORK_CONFIG,
                &ctx(&[
                    ("cloud-init.network-config", "x: 1"),
                    ("user.network-config", "y")
                ])
            ),
            "x: 1\n"
        );
    }

    // lxc-ci's almalinux/fedora/rockylinux network-config (no whitespace control).
    #[test]
    fn public_lxc_ci_network_config() {
        let tpl = r#"{% if config_get("user.network-config", "") == "" %}version: 1
config:
  - type: physical
    name: {% if instance.type == "virtual-machine" %}enp5s0{% else %}eth0{% endif %}
    subnets:
      - type: {% if config_get("user.network_mode", "") == "link-local" %}manual{% else %}dhcp{% endif %}
        control: auto
      - type: dhcp6
        control: auto{% else %}{{ config_get("user.network-config", "") }}{% endif %}
"#;
        let out = r(tpl, &ctx(&[("user.network_mode", "link-local")]));
        assert!(out.starts_with("version: 1\nconfig:\n"), "{out}");
        assert!(out.contains("name: eth0\n"), "{out}");
        assert!(out.contains("- type: manual\n"), "{out}");
        assert!(out.ends_with("control: auto\n"), "{out}");
        assert_eq!(r(tpl, &ctx(&[("user.network-config", "mine")])), "mine\n");
    }

    // lxc-ci's centos ifcfg-eth0 and openwrt hostname templates.
    #[test]
    fn public_plain_templates() {
        let tpl = "DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\nHOSTNAME={{ container.name }}\nNM_CONTROLLED=no\nTYPE=Ethernet\nMTU=\nDHCP_HOSTNAME={{ container.name }}\n";
        let out = r(tpl, &ctx(&[]));
        assert!(out.contains("HOSTNAME=web1\n") && out.contains("DHCP_HOSTNAME=web1\n"));
        assert_eq!(
            r(
                "uci -q set system.@system[0].hostname='{{ container.name }}'\nexit 0\n",
                &ctx(&[])
            ),
            "uci -q set system.@system[0].hostname='web1'\nexit 0\n"
        );
        assert_eq!(
            r("networking.hostName = \"{{ instance.name }}\";", &ctx(&[])),
            "networking.hostName = \"web1\";"
        );
    }

    #[test]
    fn context_holds_what_lxd_gives() {
        let c = ctx(&[("user.x", "1")]);
        assert_eq!(
            r("{{ trigger }} {{ path }} {{ instance.type }} {{ container.architecture }} {{ instance.privileged }} {{ instance.ephemeral }}", &c),
            "create /etc/hostname container x86_64 false true"
        );
        assert_eq!(r("{{ config[\"user.x\"] }}", &c), "1");
        assert_eq!(r("{{ devices.eth0.nictype }}", &c), "bridged");
        assert_eq!(r("{{ devices.eth0 }}", &c), "map[nictype:bridged type:nic]");
        assert_eq!(r("{{ nothing }}{{ nothing.deeper.still }}", &c), "");
        assert_eq!(r("{{ config_get(\"user.none\", 5) }}", &c), "5");
    }

    #[test]
    fn filters() {
        let c = ctx(&[("user.name", "Web Server"), ("user.empty", "")]);
        assert_eq!(r("{{ container.name|upper }}", &c), "WEB1");
        assert_eq!(
            r("{{ config_get(\"user.name\", \"\")|lower }}", &c),
            "web server"
        );
        assert_eq!(
            r(
                "{{ config_get(\"user.empty\", \"\")|default:\"none\" }}",
                &c
            ),
            "none"
        );
        assert_eq!(r("{{ missing|default:'x' }}", &c), "x");
        assert_eq!(
            r(
                "{{ missing|default_if_none:'x' }}{{ ''|default_if_none:'y' }}",
                &c
            ),
            "x"
        );
        assert_eq!(
            r("{{ 'hello world'|capfirst }} {{ 'hello world'|title }}", &c),
            "Hello world Hello World"
        );
        assert_eq!(r("{{ devices|length }} {{ 'abc'|length }}", &c), "1 3");
        assert_eq!(r("{{ 'a-b-c'|cut:'-' }}", &c), "abc");
        assert_eq!(r("{{ 'abc'|first }}{{ 'abc'|last }}", &c), "ac");
        assert_eq!(r("{{ '<b>x</b>'|striptags }}", &c), "x");
        assert_eq!(r("{{ true|yesno:'on,off' }} {{ 0|yesno }}", &c), "on no");
        assert_eq!(r("{{ container.name|upper|lower }}", &c), "web1");
        assert!(matches!(
            err("{{ x|nosuch }}"),
            TemplateError::UnknownFilter { .. }
        ));
        assert!(matches!(
            err("{{ x|default }}"),
            TemplateError::Arguments { .. }
        ));
    }

    #[test]
    fn conditions() {
        let c = ctx(&[("user.a", "yes"), ("user.list", "a,b")]);
        let cases = [
            (
                "{% if container.name == 'web1' %}T{% else %}F{% endif %}",
                "T",
            ),
            (
                "{% if container.name != 'web1' %}T{% else %}F{% endif %}",
                "F",
            ),
            ("{% if not missing %}T{% endif %}", "T"),
            ("{% if !missing %}T{% endif %}", "T"),
            (
                "{% if missing or config.user.a %}T{% else %}F{% endif %}",
                "F",
            ),
            (
                "{% if config_get('user.a', '') == 'yes' and container.name %}T{% endif %}",
                "T",
            ),
            (
                "{% if 'b' in config_get('user.list', '') %}T{% endif %}",
                "T",
            ),
            ("{% if 'user.a' in config %}T{% endif %}", "T"),
            ("{% if 'x' not in config %}T{% endif %}", "T"),
            (
                "{% if 1 == 2 %}a{% elif 2 == 2 %}b{% else %}c{% endif %}",
                "b",
            ),
            (
                "{% if 1 == 2 %}a{% elif 3 == 2 %}b{% else %}c{% endif %}",
                "c",
            ),
            (
                "{% if (1 < 2) and (2 >= 2) and not (3 <= 1) %}T{% endif %}",
                "T",
            ),
            ("{% if 1 == 1.0 %}T{% endif %}", "T"),
            ("{% if 'a' < 'b' %}T{% endif %}", "T"),
            (
                "{{ 1 + 2 * 3 }} {{ 'a' + 'b' }} {{ 7 / 0 }} {{ -2 }}",
                "7 ab  -2",
            ),
            ("{{ 1.5 }} {{ true }} {{ false }}", "1.500000 True False"),
        ];
        for (src, want) in cases {
            assert_eq!(r(src, &c), want, "{src}");
        }
    }

    #[test]
    fn loops() {
        let c = ctx(&[("user.a", "1"), ("user.b", "2")]);
        assert_eq!(
            r("{% for k, v in config %}{{ forloop.Counter }}:{{ k }}={{ v }}{% if not forloop.Last %},{% endif %}{% endfor %}", &c),
            "1:user.a=1,2:user.b=2"
        );
        assert_eq!(
            r("{% for k in config reversed %}{{ k }} {% endfor %}", &c),
            "user.b user.a "
        );
        assert_eq!(
            r("{% for k in missing %}x{% empty %}none{% endfor %}", &c),
            "none"
        );
        assert_eq!(
            r(
                "{% for name, d in devices %}{{ name }}:{{ d.type }}{% endfor %}",
                &c
            ),
            "eth0:nic"
        );
    }

    #[test]
    fn whitespace_control_and_comments() {
        let c = ctx(&[]);
        assert_eq!(
            r("a  \n {%- if true -%} \n b \n {%- endif -%}\n c", &c),
            "abc"
        );
        assert_eq!(r("a {{- 'x' -}} b", &c), "axb");
        // Only spaces, tabs and newlines go, as in pongo2.
        assert_eq!(r("a\u{a0} {{- 'x' -}} \u{b}b", &c), "a\u{a0}x\u{b}b");
        assert_eq!(r("a\n{% if true %}\nb\n{% endif %}\n", &c), "a\n\nb\n\n");
        assert_eq!(
            r(
                "a{# a comment {{ x }} #}b{% comment %}{{ x }}{% endcomment %}c",
                &c
            ),
            "abc"
        );
        assert_eq!(r("{{ '%}}' }}", &c), "%}}");
        assert_eq!(
            r(
                "{% autoescape on %}{{ '<a>' }}{{ '<b>'|safe }}{% endautoescape %}{{ '<c>' }}",
                &c
            ),
            "&lt;a&gt;<b><c>"
        );
        assert_eq!(r("{{ '<'|escape }}", &c), "&lt;");
    }

    #[test]
    fn syntax_errors_are_typed_and_located() {
        for bad in [
            "{{ x",
            "{{ }}",
            "{% if x %}",
            "{% if x %}{% else %}",
            "{% endif %}",
            "{% for %}{% endfor %}",
            "{% for x y %}{% endfor %}",
            "{{ 'unterminated }}",
            "{# open",
            "{{ a b }}",
            "{{ (a }}",
            "{{ a. }}",
            "{{ x ~ y }}",
            "{% if x %}{% endif extra %}",
            "{% autoescape maybe %}{% endautoescape %}",
            "{{ 99999999999999999999999 }}",
        ] {
            assert!(
                matches!(err(bad), TemplateError::Syntax { .. }),
                "{bad:?}: {:?}",
                err(bad)
            );
        }
        assert_eq!(
            err("line\n\n{% include 'x' %}"),
            TemplateError::UnknownTag {
                line: 3,
                name: "include".into()
            }
        );
        assert!(matches!(
            err("{{ nosuch(1) }}"),
            TemplateError::UnknownFunction { .. }
        ));
        assert!(matches!(
            err("{{ config_get('a') }}"),
            TemplateError::Arguments {
                expected: 2,
                got: 1,
                ..
            }
        ));
    }

    #[test]
    fn hostile_templates_are_bounded() {
        let c = ctx(&[("user.a", "1"), ("user.b", "2"), ("user.c", "3")]);
        let limits = TemplateLimits {
            max_depth: 64,
            max_output: 1000,
            max_steps: 10_000,
        };
        // Deep nesting, in blocks and in expressions.
        let deep = "{% if true %}".repeat(100) + &"{% endif %}".repeat(100);
        assert!(matches!(
            render(&deep, &c, limits),
            Err(TemplateError::TooDeep { .. })
        ));
        let deep = format!("{{{{ {}1{} }}}}", "(".repeat(200), ")".repeat(200));
        assert!(matches!(
            render(&deep, &c, limits),
            Err(TemplateError::TooDeep { .. })
        ));
        let nots = format!("{{{{ {}1 }}}}", "not ".repeat(10_000));
        assert!(render(&nots, &c, limits).is_err());
        let ands = format!("{{{{ {}true }}}}", "true and ".repeat(10_000));
        assert!(matches!(
            render(&ands, &c, limits),
            Err(TemplateError::TooDeep { .. })
        ));
        let nots = format!(
            "{{{{ {}1{} }}}}",
            "not (".repeat(10_000),
            ")".repeat(10_000)
        );
        assert!(matches!(
            render(&nots, &c, limits),
            Err(TemplateError::TooDeep { .. })
        ));
        let negs = format!("{{{{ {}1 }}}}", "-".repeat(10_000));
        assert!(render(&negs, &c, limits).is_err());
        // Output that multiplies.
        let big = "{% for a in config %}{% for b in config %}{{ config }}{% endfor %}{% endfor %}";
        let small = TemplateLimits {
            max_output: 100,
            ..limits
        };
        assert!(matches!(
            render(big, &c, small),
            Err(TemplateError::TooLarge { limit: 100 })
        ));
        // Work without output.
        let spin = "{% for a in config %}".repeat(30) + &"{% endfor %}".repeat(30);
        assert!(matches!(
            render(&spin, &c, limits),
            Err(TemplateError::TooManySteps { .. })
        ));
        // Odd bytes never panic.
        for src in [
            "{",
            "}",
            "{{",
            "{%",
            "{#",
            "{{-",
            "{%-%}",
            "{{ 'é",
            "{{ \"\\",
            "é{{ x.0 }}",
            "{{ x[ }}",
            "{{ x|",
            "{{ 1.x }}",
            "{{ - }}",
        ] {
            let _ = render(src, &c, limits);
        }
    }
}
