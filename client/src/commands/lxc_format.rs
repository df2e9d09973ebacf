//! Objects printed byte for byte as `lxc` prints them: `lxc` decodes the daemon's JSON into
//! LXD's Go structs (unknown fields dropped, struct fields in declaration order, maps sorted)
//! and prints them with Go's `gopkg.in/yaml.v2` or `encoding/json`. `Shape` names a struct's
//! fields; `Node` is the decoded value; `to_yaml` and `to_json` follow the two Go encoders
//! (yaml.v2's quoting, key order and 80-column folding; json's HTML escaping).

use serde_json::Value;

/// What a Go field holds.
#[derive(Clone, Copy)]
pub enum Kind {
    Str,
    Bool,
    Int,
    /// `time.Time`: RFC 3339 with Go's trimmed fraction.
    Time,
    /// `*time.Time`: `null` when absent.
    OptTime,
    /// `[]string`.
    StrList,
    /// `map[string]string` (or `map[string]any` of strings).
    StrMap,
    /// `map[string]any` of scalars (the server's config: write-only keys read `true`).
    AnyMap,
    /// `map[string]map[string]string` (devices).
    Devices,
    Struct(&'static Shape),
}

/// One struct field: its JSON/YAML name, what it holds, and `omitempty`.
pub struct Field(pub &'static str, pub Kind, pub bool);

/// A Go struct: its fields in declaration order (embedded structs flattened).
pub struct Shape(pub &'static [Field]);

use Kind::*;

/// `api.InstancePut` (what `lxc config show` prints).
pub static INSTANCE_PUT: Shape = Shape(&[
    Field("architecture", Str, false),
    Field("config", StrMap, false),
    Field("devices", Devices, false),
    Field("ephemeral", Bool, false),
    Field("profiles", StrList, false),
    Field("restore", Str, true),
    Field("stateful", Bool, false),
    Field("description", Str, false),
]);

/// `api.Instance` without its expanded config and devices (what `lxc config edit` opens).
pub static INSTANCE_EDIT: Shape = Shape(&[
    Field("architecture", Str, false),
    Field("config", StrMap, false),
    Field("devices", Devices, false),
    Field("ephemeral", Bool, false),
    Field("profiles", StrList, false),
    Field("restore", Str, true),
    Field("stateful", Bool, false),
    Field("description", Str, false),
    Field("created_at", Time, false),
    Field("name", Str, false),
    Field("status", Str, false),
    Field("status_code", Int, false),
    Field("last_used_at", Time, false),
    Field("location", Str, false),
    Field("type", Str, false),
    Field("project", Str, false),
]);

/// `api.InstanceSnapshot` (what `lxc config show INSTANCE/SNAPSHOT` prints).
pub static INSTANCE_SNAPSHOT: Shape = Shape(&[
    Field("expires_at", Time, false),
    Field("architecture", Str, false),
    Field("config", StrMap, false),
    Field("created_at", Time, false),
    Field("devices", Devices, false),
    Field("ephemeral", Bool, false),
    Field("expanded_config", StrMap, true),
    Field("expanded_devices", Devices, true),
    Field("last_used_at", Time, false),
    Field("name", Str, false),
    Field("profiles", StrList, false),
    Field("stateful", Bool, false),
    Field("size", Int, false),
]);

/// `api.ServerPut`.
pub static SERVER_PUT: Shape = Shape(&[Field("config", AnyMap, false)]);

/// `api.Profile`.
pub static PROFILE: Shape = Shape(&[
    Field("config", StrMap, false),
    Field("description", Str, false),
    Field("devices", Devices, false),
    Field("name", Str, false),
    Field("used_by", StrList, false),
]);

/// `api.Network`.
pub static NETWORK: Shape = Shape(&[
    Field("config", StrMap, false),
    Field("description", Str, false),
    Field("name", Str, false),
    Field("type", Str, false),
    Field("used_by", StrList, false),
    Field("managed", Bool, false),
    Field("status", Str, false),
    Field("locations", StrList, false),
]);

/// `api.NetworkLease`.
pub static NETWORK_LEASE: Shape = Shape(&[
    Field("hostname", Str, false),
    Field("hwaddr", Str, false),
    Field("address", Str, false),
    Field("type", Str, false),
    Field("location", Str, false),
]);

/// `api.StoragePool`.
pub static STORAGE_POOL: Shape = Shape(&[
    Field("config", StrMap, false),
    Field("description", Str, false),
    Field("name", Str, false),
    Field("driver", Str, false),
    Field("used_by", StrList, false),
    Field("status", Str, false),
    Field("locations", StrList, false),
]);

/// `api.ResourcesStoragePool`.
pub static POOL_RESOURCES: Shape = Shape(&[
    Field("space", Struct(&POOL_SPACE), true),
    Field("inodes", Struct(&POOL_INODES), true),
]);

static POOL_SPACE: Shape = Shape(&[Field("used", Int, true), Field("total", Int, false)]);

static POOL_INODES: Shape = Shape(&[Field("used", Int, false), Field("total", Int, false)]);

/// `api.StorageVolumeSnapshot`.
pub static STORAGE_VOLUME_SNAPSHOT: Shape = Shape(&[
    Field("description", Str, false),
    Field("expires_at", OptTime, false),
    Field("name", Str, false),
    Field("config", StrMap, false),
    Field("content_type", Str, false),
    Field("created_at", Time, false),
]);

/// `api.StorageVolume`.
pub static STORAGE_VOLUME: Shape = Shape(&[
    Field("config", StrMap, false),
    Field("description", Str, false),
    Field("restore", Str, true),
    Field("name", Str, false),
    Field("type", Str, false),
    Field("used_by", StrList, false),
    Field("location", Str, false),
    Field("content_type", Str, false),
    Field("project", Str, false),
    Field("created_at", Time, false),
]);

/// A decoded Go value.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    /// A `time.Time`, already in Go's RFC3339Nano form.
    Time(String),
    /// A slice; `None` is Go's nil slice (`[]` in YAML, `null` in JSON).
    Seq(Option<Vec<Node>>),
    /// A struct's fields in order.
    Struct(Vec<(&'static str, Node)>),
    /// A Go map (sorted on output); `None` is a nil map.
    Map(Option<Vec<(String, Node)>>),
}

/// Decodes `v` as Go decodes JSON into the struct `shape`.
pub fn decode(v: &Value, shape: &Shape) -> Node {
    Node::Struct(
        shape
            .0
            .iter()
            .filter_map(|Field(name, kind, omitempty)| {
                let n = decode_kind(&v[*name], *kind);
                let empty = match &n {
                    Node::Str(s) => s.is_empty(),
                    Node::Bool(b) => !b,
                    Node::Int(i) => *i == 0,
                    Node::Null | Node::Seq(None) | Node::Map(None) => true,
                    Node::Seq(Some(s)) => s.is_empty(),
                    Node::Map(Some(m)) => m.is_empty(),
                    Node::Time(_) => false,
                    // yaml.v2 leaves out a struct whose fields are all zero.
                    Node::Struct(f) => f.iter().all(|(_, n)| {
                        matches!(n, Node::Int(0) | Node::Bool(false) | Node::Null)
                            || matches!(n, Node::Str(s) if s.is_empty())
                    }),
                };
                (!(*omitempty && empty)).then_some((*name, n))
            })
            .collect(),
    )
}

/// `sort.Strings(x.UsedBy)`, which lxc's `show` of pools, volumes and networks does.
pub fn sort_used_by(v: &mut Value) {
    if let Some(a) = v["used_by"].as_array_mut() {
        a.sort_by(|x, y| x.as_str().unwrap_or("").cmp(y.as_str().unwrap_or("")));
    }
}

/// Decodes a JSON array into `[]shape` (nil when it is not an array).
pub fn decode_list(v: &Value, shape: &Shape) -> Node {
    Node::Seq(
        v.as_array()
            .map(|a| a.iter().map(|x| decode(x, shape)).collect()),
    )
}

/// Decodes a `map[string]map[string]string` (devices).
pub fn decode_devices(v: &Value) -> Node {
    decode_kind(v, Devices)
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn decode_kind(v: &Value, kind: Kind) -> Node {
    match kind {
        Str => Node::Str(scalar_string(v)),
        Bool => Node::Bool(v.as_bool().unwrap_or(false)),
        Int => Node::Int(v.as_i64().unwrap_or(0)),
        Time => Node::Time(go_time(v.as_str().unwrap_or(""))),
        OptTime => match v.as_str() {
            Some(t) => Node::Time(go_time(t)),
            None => Node::Null,
        },
        StrList => Node::Seq(
            v.as_array()
                .map(|a| a.iter().map(|x| Node::Str(scalar_string(x))).collect()),
        ),
        StrMap => Node::Map(v.as_object().map(|m| {
            m.iter()
                .map(|(k, x)| (k.clone(), Node::Str(scalar_string(x))))
                .collect()
        })),
        AnyMap => Node::Map(v.as_object().map(|m| {
            m.iter()
                .map(|(k, x)| {
                    let n = match x {
                        Value::Bool(b) => Node::Bool(*b),
                        Value::Number(n) if n.is_i64() => Node::Int(n.as_i64().unwrap_or(0)),
                        Value::Null => Node::Null,
                        other => Node::Str(scalar_string(other)),
                    };
                    (k.clone(), n)
                })
                .collect()
        })),
        Devices => Node::Map(v.as_object().map(|m| {
            m.iter()
                .map(|(k, d)| (k.clone(), decode_kind(d, StrMap)))
                .collect()
        })),
        Struct(s) => decode(v, s),
    }
}

/// An RFC 3339 time as Go's `time.Time` prints it after decoding: the fraction without
/// trailing zeros, `Z` for a zero offset; the zero time when it does not parse.
pub fn go_time(s: &str) -> String {
    const ZERO: &str = "0001-01-01T00:00:00Z";
    if s.len() < 20 || !s.is_char_boundary(19) || s.as_bytes()[10] != b'T' {
        return ZERO.into();
    }
    let (base, rest) = s.split_at(19);
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            (r[..end].trim_end_matches('0'), &r[end..])
        }
        None => ("", rest),
    };
    let zone = match zone {
        "Z" | "z" | "+00:00" | "-00:00" => "Z",
        z if z.len() == 6 && (z.starts_with('+') || z.starts_with('-')) => z,
        _ => return ZERO.into(),
    };
    if frac.is_empty() {
        format!("{base}{zone}")
    } else {
        format!("{base}.{frac}{zone}")
    }
}

/// lxc's row order (`utils.ByName`, `sortorder.NaturalLess`): one implementation, in
/// `output`.
pub use crate::output::natural_cmp;

// ---- encoding/json ----

/// `json.NewEncoder(os.Stdout).Encode(node)`: compact, HTML-escaped, one newline.
pub fn to_json(node: &Node) -> String {
    let mut out = String::new();
    json_node(node, &mut out);
    out.push('\n');
    out
}

fn json_node(node: &Node, out: &mut String) {
    match node {
        Node::Null | Node::Seq(None) | Node::Map(None) => out.push_str("null"),
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Int(i) => out.push_str(&i.to_string()),
        Node::Str(s) | Node::Time(s) => json_string(s, out),
        Node::Seq(Some(items)) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_node(item, out);
            }
            out.push(']');
        }
        Node::Struct(fields) => {
            json_object(fields.iter().map(|(k, v)| (*k, v)), out);
        }
        Node::Map(Some(entries)) => {
            let mut sorted: Vec<&(String, Node)> = entries.iter().collect();
            sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            json_object(sorted.into_iter().map(|(k, v)| (k.as_str(), v)), out);
        }
    }
}

fn json_object<'a>(entries: impl Iterator<Item = (&'a str, &'a Node)>, out: &mut String) {
    out.push('{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(k, out);
        out.push(':');
        json_node(v, out);
    }
    out.push('}');
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---- gopkg.in/yaml.v2 ----

/// `yaml.Marshal(node)` as yaml.v2 (v2.4) writes it.
pub fn to_yaml(node: &Node) -> String {
    let mut e = Emitter::default();
    match node {
        Node::Struct(_) | Node::Map(_) | Node::Seq(_) if !is_empty_collection(node) => {
            e.block(node, 0, false)
        }
        _ => {
            e.value(node, 0);
            e.newline();
        }
    }
    e.out
}

/// Go's yaml.v2 key order for maps: runs of digits compare as numbers, and where a
/// letter meets another character the other character comes first.
pub fn yaml_key_less(a: &str, b: &str) -> bool {
    let ar: Vec<char> = a.chars().collect();
    let br: Vec<char> = b.chars().collect();
    let mut i = 0;
    while i < ar.len() && i < br.len() {
        if ar[i] == br[i] {
            i += 1;
            continue;
        }
        let al = ar[i].is_alphabetic();
        let bl = br[i].is_alphabetic();
        if al && bl {
            return ar[i] < br[i];
        }
        if al || bl {
            return bl;
        }
        let (mut an, mut bn): (i64, i64) = (0, 0);
        if ar[i] == '0' || br[i] == '0' {
            let mut j = i;
            while j > 0 && ar[j - 1].is_ascii_digit() {
                j -= 1;
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && ar[ai].is_ascii_digit() {
            an = an.wrapping_mul(10).wrapping_add(ar[ai] as i64 - '0' as i64);
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && br[bi].is_ascii_digit() {
            bn = bn.wrapping_mul(10).wrapping_add(br[bi] as i64 - '0' as i64);
            bi += 1;
        }
        if an != bn {
            return an < bn;
        }
        if ai != bi {
            return ai < bi;
        }
        return ar[i] < br[i];
    }
    ar.len() < br.len()
}

fn is_empty_collection(n: &Node) -> bool {
    match n {
        Node::Seq(s) => !matches!(s, Some(s) if !s.is_empty()),
        Node::Map(m) => !matches!(m, Some(m) if !m.is_empty()),
        Node::Struct(f) => f.is_empty(),
        _ => false,
    }
}

const BEST_WIDTH: usize = 80;
const BEST_INDENT: usize = 2;

#[derive(Default)]
struct Emitter {
    out: String,
    /// Characters on the current line.
    column: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

impl Emitter {
    fn put(&mut self, s: &str) {
        for c in s.chars() {
            self.out.push(c);
            if c == '\n' {
                self.column = 0;
            } else {
                self.column += 1;
            }
        }
    }

    fn newline(&mut self) {
        if self.column != 0 {
            self.put("\n");
        }
    }

    fn indent_to(&mut self, indent: usize) {
        self.newline();
        while self.column < indent {
            self.put(" ");
        }
    }

    /// A non-empty collection in block style at `indent`; `inline` when the cursor already
    /// stands where its first line goes (after `- `).
    fn block(&mut self, node: &Node, indent: usize, inline: bool) {
        let entries: Vec<(&str, &Node)> = match node {
            Node::Struct(f) => f.iter().map(|(k, v)| (*k, v)).collect(),
            Node::Map(Some(m)) => {
                let mut sorted: Vec<&(String, Node)> = m.iter().collect();
                sorted.sort_by(|a, b| {
                    if yaml_key_less(&a.0, &b.0) {
                        std::cmp::Ordering::Less
                    } else if yaml_key_less(&b.0, &a.0) {
                        std::cmp::Ordering::Greater
                    } else {
                        std::cmp::Ordering::Equal
                    }
                });
                sorted.into_iter().map(|(k, v)| (k.as_str(), v)).collect()
            }
            Node::Seq(Some(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if !(inline && i == 0) {
                        self.indent_to(indent);
                    }
                    self.put("- ");
                    if is_empty_collection(item) || !is_collection(item) {
                        self.value(item, indent + BEST_INDENT);
                        self.newline();
                    } else {
                        self.block(item, indent + BEST_INDENT, true);
                    }
                }
                return;
            }
            _ => return,
        };
        for (i, (k, v)) in entries.into_iter().enumerate() {
            if !(inline && i == 0) {
                self.indent_to(indent);
            }
            self.scalar(k, indent + BEST_INDENT, true);
            self.put(":");
            if is_collection(v) && !is_empty_collection(v) {
                // A sequence in a mapping is not indented further (yaml.v2's indentless
                // sequences); a mapping is.
                let inner = if matches!(v, Node::Seq(_)) {
                    indent
                } else {
                    indent + BEST_INDENT
                };
                self.newline();
                self.block(v, inner, false);
            } else {
                self.put(" ");
                self.value(v, indent + BEST_INDENT);
                self.newline();
            }
        }
    }

    /// A scalar or an empty collection (flow style), continuing at `indent`.
    fn value(&mut self, node: &Node, indent: usize) {
        match node {
            Node::Null => self.put("null"),
            Node::Bool(b) => self.put(if *b { "true" } else { "false" }),
            Node::Int(i) => self.put(&i.to_string()),
            Node::Time(t) => self.put(t),
            Node::Str(s) => self.scalar(s, indent, false),
            Node::Seq(_) => self.put("[]"),
            Node::Map(_) | Node::Struct(_) => self.put("{}"),
        }
    }

    /// A string as yaml.v2's `stringv` and the emitter pick its style.
    fn scalar(&mut self, s: &str, indent: usize, simple_key: bool) {
        let requested = if s.contains('\n') {
            Style::Literal
        } else if resolves_to_string(s) {
            Style::Plain
        } else {
            Style::Double
        };
        let a = analyze(s);
        let mut style = requested;
        if simple_key && a.multiline {
            style = Style::Double;
        }
        if style == Style::Plain && (!a.block_plain || (s.is_empty() && simple_key)) {
            style = Style::Single;
        }
        if style == Style::Single && !a.single_quoted {
            style = Style::Double;
        }
        if style == Style::Literal && (!a.block || simple_key) {
            style = Style::Double;
        }
        let allow_breaks = !simple_key;
        match style {
            Style::Plain => self.plain(s, indent, allow_breaks),
            Style::Single => self.single(s, indent, allow_breaks),
            Style::Double => self.double(s, indent, allow_breaks),
            Style::Literal => self.literal(s, indent),
        }
    }

    fn plain(&mut self, s: &str, indent: usize, allow_breaks: bool) {
        let chars: Vec<char> = s.chars().collect();
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if c == ' ' {
                if allow_breaks
                    && !spaces
                    && self.column > BEST_WIDTH
                    && chars.get(i + 1) != Some(&' ')
                {
                    self.indent_to(indent);
                } else {
                    self.put(" ");
                }
                spaces = true;
            } else {
                self.out.push(c);
                self.column += 1;
                spaces = false;
            }
        }
    }

    fn single(&mut self, s: &str, indent: usize, allow_breaks: bool) {
        self.put("'");
        let chars: Vec<char> = s.chars().collect();
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if c == ' ' {
                if allow_breaks
                    && !spaces
                    && self.column > BEST_WIDTH
                    && i > 0
                    && i < chars.len() - 1
                    && chars.get(i + 1) != Some(&' ')
                {
                    self.indent_to(indent);
                } else {
                    self.put(" ");
                }
                spaces = true;
            } else {
                if c == '\'' {
                    self.put("'");
                }
                self.out.push(c);
                self.column += 1;
                spaces = false;
            }
        }
        self.put("'");
    }

    fn double(&mut self, s: &str, indent: usize, allow_breaks: bool) {
        self.put("\"");
        let chars: Vec<char> = s.chars().collect();
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if !is_printable(c) || c == '\u{feff}' || is_break(c) || c == '"' || c == '\\' {
                let esc = match c {
                    '\0' => "0".to_string(),
                    '\u{7}' => "a".into(),
                    '\u{8}' => "b".into(),
                    '\t' => "t".into(),
                    '\n' => "n".into(),
                    '\u{b}' => "v".into(),
                    '\u{c}' => "f".into(),
                    '\r' => "r".into(),
                    '\u{1b}' => "e".into(),
                    '"' => "\"".into(),
                    '\\' => "\\".into(),
                    '\u{85}' => "N".into(),
                    '\u{a0}' => "_".into(),
                    '\u{2028}' => "L".into(),
                    '\u{2029}' => "P".into(),
                    c if (c as u32) <= 0xff => format!("x{:02X}", c as u32),
                    c if (c as u32) <= 0xffff => format!("u{:04X}", c as u32),
                    c => format!("U{:08X}", c as u32),
                };
                self.put("\\");
                self.put(&esc);
                spaces = false;
            } else if c == ' ' {
                if allow_breaks
                    && !spaces
                    && self.column > BEST_WIDTH
                    && i > 0
                    && i < chars.len() - 1
                {
                    self.indent_to(indent);
                    if chars.get(i + 1) == Some(&' ') {
                        self.put("\\");
                    }
                } else {
                    self.put(" ");
                }
                spaces = true;
            } else {
                self.out.push(c);
                self.column += 1;
                spaces = false;
            }
        }
        self.put("\"");
    }

    fn literal(&mut self, s: &str, indent: usize) {
        self.put("|");
        let chars: Vec<char> = s.chars().collect();
        if chars.first().is_some_and(|&c| c == ' ' || is_break(c)) {
            self.put(&BEST_INDENT.to_string());
        }
        let n = chars.len();
        let chomp = if n == 0 || !is_break(chars[n - 1]) {
            "-"
        } else if n == 1 || is_break(chars[n - 2]) {
            "+"
        } else {
            ""
        };
        self.put(chomp);
        self.put("\n");
        let mut breaks = true;
        for &c in &chars {
            if is_break(c) {
                self.out.push('\n');
                self.column = 0;
                breaks = true;
            } else {
                if breaks {
                    while self.column < indent {
                        self.put(" ");
                    }
                }
                self.out.push(c);
                self.column += 1;
                breaks = false;
            }
        }
    }
}

fn is_collection(n: &Node) -> bool {
    matches!(n, Node::Seq(_) | Node::Map(_) | Node::Struct(_))
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// libyaml's printable set (4-byte UTF-8 is not in it).
fn is_printable(c: char) -> bool {
    let u = c as u32;
    u == 0x0a
        || (0x20..=0x7e).contains(&u)
        || (0xa0..=0xd7ff).contains(&u)
        || ((0xe000..=0xfffd).contains(&u) && u != 0xfeff)
}

struct Analysis {
    multiline: bool,
    block_plain: bool,
    single_quoted: bool,
    block: bool,
}

/// libyaml's `yaml_emitter_analyze_scalar` (block context).
fn analyze(s: &str) -> Analysis {
    if s.is_empty() {
        return Analysis {
            multiline: false,
            block_plain: true,
            single_quoted: true,
            block: false,
        };
    }
    let chars: Vec<char> = s.chars().collect();
    let mut block_indicators = s.starts_with("---") || s.starts_with("...");
    let (mut line_breaks, mut special) = (false, false);
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) =
        (false, false, false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut previous_space, mut previous_break) = (false, false);
    let mut preceded_by_ws = true;
    let blank = |c: Option<&char>| matches!(c, None | Some(' ') | Some('\t'));
    for (i, &c) in chars.iter().enumerate() {
        let followed_by_ws = blank(chars.get(i + 1));
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => block_indicators = true,
                '?' | ':' | '-' if followed_by_ws => block_indicators = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_ws => block_indicators = true,
                '#' if preceded_by_ws => block_indicators = true,
                _ => {}
            }
        }
        if !is_printable(c) {
            special = true;
        }
        if c == ' ' {
            leading_space |= i == 0;
            trailing_space |= i == chars.len() - 1;
            break_space |= previous_break;
            previous_space = true;
            previous_break = false;
        } else if is_break(c) {
            line_breaks = true;
            leading_break |= i == 0;
            trailing_break |= i == chars.len() - 1;
            space_break |= previous_space;
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_ws = c == ' ' || c == '\t' || is_break(c);
    }
    let mut a = Analysis {
        multiline: line_breaks,
        block_plain: true,
        single_quoted: true,
        block: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.block_plain = false;
    }
    if trailing_space {
        a.block = false;
    }
    if break_space {
        a.block_plain = false;
        a.single_quoted = false;
    }
    if space_break || special {
        a.block_plain = false;
        a.single_quoted = false;
        a.block = false;
    }
    if line_breaks || block_indicators {
        a.block_plain = false;
    }
    a
}

/// Whether yaml.v2 reads `s` back, unquoted, as a string (so it may be written plain):
/// not a bool, null, int, float, timestamp or base-60 float of YAML 1.1.
fn resolves_to_string(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "n", "N", "no",
        "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", "", "~", "null", "Null",
        "NULL", ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf",
        "-.Inf", "-.INF", "<<",
    ];
    if WORDS.contains(&s) {
        return false;
    }
    let first = s.chars().next().unwrap_or('x');
    if first == '.' {
        return !is_go_float(s);
    }
    if !(first == '+' || first == '-' || first.is_ascii_digit()) {
        return true;
    }
    if is_timestamp(s) {
        return false;
    }
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    if is_go_int(&plain) || is_yaml_float(&plain) || is_base60_float(s) {
        return false;
    }
    let digits = plain
        .strip_prefix("0b")
        .or_else(|| plain.strip_prefix("-0b"));
    !digits.is_some_and(|d| !d.is_empty() && d.chars().all(|c| c == '0' || c == '1'))
}

/// `strconv.ParseInt(s, 0, 64)` or `ParseUint` would accept `s` (ignoring overflow of
/// decimals, which the float rule then takes).
fn is_go_int(s: &str) -> bool {
    let body = s
        .strip_prefix('+')
        .or_else(|| s.strip_prefix('-'))
        .unwrap_or(s);
    let (digits, radix) =
        if let Some(d) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
            (d, 16)
        } else if let Some(d) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
            (d, 8)
        } else if let Some(d) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
            (d, 2)
        } else if body.len() > 1 && body.starts_with('0') {
            (&body[1..], 8)
        } else {
            (body, 10)
        };
    !digits.is_empty()
        && digits.chars().all(|c| c.is_digit(radix))
        && (radix == 10 || u64::from_str_radix(digits, radix).is_ok())
}

/// yaml.v2's float pattern `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let s = s
        .strip_prefix('+')
        .or_else(|| s.strip_prefix('-'))
        .unwrap_or(s);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", f)) => !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()),
        Some((i, f)) => {
            !i.is_empty()
                && i.chars().all(|c| c.is_ascii_digit())
                && f.chars().all(|c| c.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.chars().all(|c| c.is_ascii_digit()),
    };
    let exp_ok = match exp {
        None => true,
        Some(e) => {
            let e = e
                .strip_prefix('+')
                .or_else(|| e.strip_prefix('-'))
                .unwrap_or(e);
            !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
        }
    };
    mantissa_ok && exp_ok
}

/// `strconv.ParseFloat` on a string starting with `.` (`.5`, `.5e3`).
fn is_go_float(s: &str) -> bool {
    is_yaml_float(s)
}

/// `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`.
fn is_base60_float(s: &str) -> bool {
    let s = s
        .strip_prefix('+')
        .or_else(|| s.strip_prefix('-'))
        .unwrap_or(s);
    let (main, frac) = match s.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (s, None),
    };
    if frac.is_some_and(|f| !f.chars().all(|c| c.is_ascii_digit() || c == '_')) {
        return false;
    }
    let mut parts = main.split(':');
    let head = parts.next().unwrap_or("");
    if !head.starts_with(|c: char| c.is_ascii_digit())
        || !head.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        return false;
    }
    let rest: Vec<&str> = parts.collect();
    !rest.is_empty()
        && rest.iter().all(|p| {
            let b = p.as_bytes();
            match b.len() {
                1 => b[0].is_ascii_digit(),
                2 => (b'0'..=b'5').contains(&b[0]) && b[1].is_ascii_digit(),
                _ => false,
            }
        })
}

/// yaml.v2's timestamp forms: `YYYY-M-D`, with `T`/`t`/space and a time.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let rest = &s[5..];
    let (date, time) = match rest.find(['T', 't', ' ']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut dp = date.split('-');
    let month_ok = dp
        .next()
        .is_some_and(|m| (1..=2).contains(&m.len()) && m.bytes().all(|c| c.is_ascii_digit()));
    let day_ok = dp
        .next()
        .is_some_and(|d| (1..=2).contains(&d.len()) && d.bytes().all(|c| c.is_ascii_digit()));
    if !month_ok || !day_ok || dp.next().is_some() {
        return false;
    }
    match time {
        None => true,
        // A time part: H:M:S with an optional fraction and zone; close enough to quote.
        Some(t) => {
            let mut tp = t.splitn(3, ':');
            tp.next()
                .is_some_and(|h| !h.is_empty() && h.bytes().all(|c| c.is_ascii_digit()))
                && tp
                    .next()
                    .is_some_and(|m| !m.is_empty() && m.bytes().all(|c| c.is_ascii_digit()))
                && tp
                    .next()
                    .is_some_and(|s| s.starts_with(|c: char| c.is_ascii_digit()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instance_config_prints_as_lxc_prints_it() {
        let v = json!({
            "architecture": "x86_64", "name": "c1", "status": "Running",
            "config": {"limits.memory": "64MiB", "user.n": "10", "user.b": "true",
                       "image.os": "busybox", "user.empty": ""},
            "devices": {"eth10": {"type": "nic"}, "eth2": {"type": "nic", "name": "eth2"}},
            "ephemeral": false, "profiles": ["default"], "description": "",
        });
        assert_eq!(
            to_yaml(&decode(&v, &INSTANCE_PUT)),
            "architecture: x86_64
config:
  image.os: busybox
  limits.memory: 64MiB
  user.b: \"true\"
  user.empty: \"\"
  user.n: \"10\"
devices:
  eth2:
    name: eth2
    type: nic
  eth10:
    type: nic
ephemeral: false
profiles:
- default
stateful: false
description: \"\"
"
        );
    }

    #[test]
    fn lists_empty_values_and_json_follow_go() {
        let v = json!([{"name": "p<1>", "config": {}, "description": "a: b",
                        "devices": {"root": {"path": "/", "type": "disk"}},
                        "used_by": ["/1.0/instances/c1"]},
                       {"name": "p2", "config": null, "description": "#x", "devices": {}}]);
        let list = decode_list(&v, &PROFILE);
        assert_eq!(
            to_yaml(&list),
            "- config: {}
  description: 'a: b'
  devices:
    root:
      path: /
      type: disk
  name: p<1>
  used_by:
  - /1.0/instances/c1
- config: {}
  description: '#x'
  devices: {}
  name: p2
  used_by: []
"
        );
        assert_eq!(
            to_json(&list),
            "[{\"config\":{},\"description\":\"a: b\",\"devices\":{\"root\":{\"path\":\"/\",\"type\":\"disk\"}},\"name\":\"p\\u003c1\\u003e\",\"used_by\":[\"/1.0/instances/c1\"]},{\"config\":null,\"description\":\"#x\",\"devices\":{},\"name\":\"p2\",\"used_by\":null}]\n"
        );
        assert_eq!(to_yaml(&Node::Seq(Some(vec![]))), "[]\n");
    }

    #[test]
    fn strings_get_yaml_v2_styles() {
        let one = |s: &str| to_yaml(&Node::Struct(vec![("k", Node::Str(s.into()))]));
        assert_eq!(one("plain"), "k: plain\n");
        assert_eq!(one("0644"), "k: \"0644\"\n");
        assert_eq!(one("1.5"), "k: \"1.5\"\n");
        assert_eq!(one("1GiB"), "k: 1GiB\n");
        assert_eq!(one("yes"), "k: \"yes\"\n");
        assert_eq!(one("2023-01-02"), "k: \"2023-01-02\"\n");
        assert_eq!(one("1:20"), "k: \"1:20\"\n");
        assert_eq!(one("-"), "k: '-'\n");
        assert_eq!(one(" lead"), "k: ' lead'\n");
        assert_eq!(one("tab\there"), "k: \"tab\\there\"\n");
        assert_eq!(one("it's: x"), "k: 'it''s: x'\n");
        assert_eq!(one("a\nb\n"), "k: |\n  a\n  b\n");
        assert_eq!(one("a\nb"), "k: |-\n  a\n  b\n");
        assert_eq!(one("a\n\nb\n\n"), "k: |+\n  a\n\n  b\n\n");
        assert_eq!(one("10.0.0.1/24"), "k: 10.0.0.1/24\n");
        assert_eq!(one(":8443"), "k: :8443\n");
        let long = "word ".repeat(20) + "end";
        assert_eq!(
            one(&long),
            format!(
                "k: {}word\n  {}end\n",
                "word ".repeat(15),
                "word ".repeat(4)
            )
        );
    }

    #[test]
    fn map_keys_sort_as_yaml_v2_does() {
        let mut keys = vec![
            "eth10",
            "eth2",
            "b",
            "a1",
            "a",
            "_x",
            "volatile.eth0.hwaddr",
        ];
        keys.sort_by(|a, b| {
            if yaml_key_less(a, b) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        assert_eq!(
            keys,
            vec![
                "_x",
                "a",
                "a1",
                "b",
                "eth2",
                "eth10",
                "volatile.eth0.hwaddr"
            ]
        );
    }

    #[test]
    fn go_times_are_normalised() {
        assert_eq!(
            go_time("2026-12-02T04:12:00.120000+00:00"),
            "2026-12-02T04:12:00.12Z"
        );
        assert_eq!(go_time("2026-12-02T04:12:00Z"), "2026-12-02T04:12:00Z");
        assert_eq!(
            go_time("2026-12-02T04:12:00.000+02:00"),
            "2026-12-02T04:12:00+02:00"
        );
        assert_eq!(go_time(""), "0001-01-01T00:00:00Z");
    }
}
