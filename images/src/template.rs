//! Image templates: the pongo2-compatible subset that LXD images use (`{{ container.name }}`,
//! `{{ config_get("user.x", "") }}`, `{% if %}`, filters, whitespace control), parsed and
//! rendered with bounded depth and output, since a template comes from an image.

use std::collections::BTreeMap;
use std::fmt::Write as _;

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

// ---- lexing ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Sym(&'static str),
}

#[derive(Debug)]
enum Piece {
    Text(String),
    Output { expr: Vec<Tok>, line: usize },
    Tag { words: Vec<Tok>, line: usize },
}

/// What `{%-`/`-%}` trim: pongo2's `tokenSpaceChars`, not all of Unicode's whitespace.
const SPACE: [char; 4] = [' ', '\n', '\r', '\t'];

const SYMBOLS: [&str; 23] = [
    "==", "!=", "<>", "<=", ">=", "&&", "||", "(", ")", ",", ".", "|", ":", "[", "]", "<", ">",
    "!", "+", "-", "*", "/", "%",
];

/// Splits a template into text, `{{ }}` and `{% %}` pieces (comments dropped), applying
/// `{%-`/`-%}` whitespace trimming as pongo2 does.
fn lex(src: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut line = 1;
    let mut trim_next = false;
    loop {
        let next = ["{{", "{%", "{#"]
            .iter()
            .filter_map(|open| rest.find(open))
            .min();
        let text_end = next.unwrap_or(rest.len());
        let mut text = &rest[..text_end];
        if trim_next {
            text = text.trim_start_matches(SPACE);
            trim_next = false;
        }
        line += rest[..text_end].matches('\n').count();
        let Some(at) = next else {
            push_text(&mut pieces, text);
            return Ok(pieces);
        };
        let open = &rest[at..at + 2];
        let mut body = &rest[at + 2..];
        if open == "{#" {
            push_text(&mut pieces, text);
            let end = body.find("#}").ok_or_else(|| TemplateError::Syntax {
                line,
                what: "comment is not closed".into(),
            })?;
            line += body[..end].matches('\n').count();
            rest = &body[end + 2..];
            continue;
        }
        let trim_before = body.starts_with('-');
        if trim_before {
            body = &body[1..];
        }
        let text = if trim_before {
            text.trim_end_matches(SPACE)
        } else {
            text
        };
        push_text(&mut pieces, text);
        let close = if open == "{{" { "}}" } else { "%}" };
        let (toks, used, trim_after) = lex_expr(body, close, line)?;
        let at_line = line;
        line += body[..used].matches('\n').count();
        rest = &body[used..];
        trim_next = trim_after;
        pieces.push(if open == "{{" {
            Piece::Output {
                expr: toks,
                line: at_line,
            }
        } else {
            Piece::Tag {
                words: toks,
                line: at_line,
            }
        });
    }
}

fn push_text(pieces: &mut Vec<Piece>, text: &str) {
    if !text.is_empty() {
        pieces.push(Piece::Text(text.to_string()));
    }
}

/// Tokens of an expression up to `close` (or `-close`); returns them, the bytes used
/// including the closing delimiter, and whether it trims what follows.
fn lex_expr(s: &str, close: &str, line: usize) -> Result<(Vec<Tok>, usize, bool), TemplateError> {
    let err = |what: &str| TemplateError::Syntax {
        line,
        what: what.to_string(),
    };
    let bytes = s.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if s[i..].starts_with(close) {
            return Ok((toks, i + close.len(), false));
        }
        if c == b'-' && s[i + 1..].starts_with(close) {
            return Ok((toks, i + 1 + close.len(), true));
        }
        if c == b'"' || c == b'\'' {
            let mut value = String::new();
            let mut j = i + 1;
            loop {
                let Some(ch) = s[j..].chars().next() else {
                    return Err(err("string is not closed"));
                };
                j += ch.len_utf8();
                match ch {
                    '\\' => {
                        let Some(esc) = s[j..].chars().next() else {
                            return Err(err("string is not closed"));
                        };
                        j += esc.len_utf8();
                        value.push(match esc {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
                    }
                    q if q as u32 == c as u32 => break,
                    other => value.push(other),
                }
            }
            toks.push(Tok::Str(value));
            i = j;
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let is_float = i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit();
            if is_float {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let f = s[start..i].parse().map_err(|_| err("bad number"))?;
                toks.push(Tok::Float(f));
            } else {
                let n = s[start..i]
                    .parse()
                    .map_err(|_| err("number out of range"))?;
                toks.push(Tok::Int(n));
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            toks.push(Tok::Ident(s[start..i].to_string()));
            continue;
        }
        match SYMBOLS.iter().find(|sym| s[i..].starts_with(**sym)) {
            Some(sym) => {
                toks.push(Tok::Sym(sym));
                i += sym.len();
            }
            None => {
                let ch = s[i..].chars().next().unwrap_or('?');
                return Err(err(&format!("unexpected character {ch:?}")));
            }
        }
    }
    Err(err(&format!("{close} is missing")))
}

// ---- parsing ----

#[derive(Debug, Clone)]
enum Expr {
    Literal(Value),
    Var(String),
    Attr(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Call {
        name: String,
        args: Vec<Expr>,
        line: usize,
    },
    Filter {
        input: Box<Expr>,
        name: String,
        arg: Option<Box<Expr>>,
    },
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BinOp {
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    In,
    NotIn,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Output(Expr),
    If {
        branches: Vec<(Expr, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    For {
        key: String,
        value: Option<String>,
        iterable: Expr,
        reversed: bool,
        /// Lists in order of their items' text (maps always go in key order).
        sorted: bool,
        body: Vec<Node>,
        empty: Vec<Node>,
    },
    Autoescape(bool, Vec<Node>),
}

/// The tag that ended a block, with the rest of its words.
struct EndTag {
    name: String,
    words: Vec<Tok>,
    line: usize,
}

const FILTERS: [(&str, bool); 15] = [
    // (name, takes an argument)
    ("default", true),
    ("default_if_none", true),
    ("lower", false),
    ("upper", false),
    ("capfirst", false),
    ("title", false),
    ("length", false),
    ("join", true),
    ("first", false),
    ("last", false),
    ("cut", true),
    ("safe", false),
    ("escape", false),
    ("striptags", false),
    ("yesno", true),
];

/// Tags that only continue or end a block.
const INNER_TAGS: [&str; 7] = [
    "elif",
    "else",
    "endif",
    "empty",
    "endfor",
    "endautoescape",
    "endcomment",
];

struct Parser {
    tokens: Vec<Piece>,
    pos: usize,
    depth: usize,
    limits: TemplateLimits,
}

impl Parser {
    fn deeper(&mut self) -> Result<(), TemplateError> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(TemplateError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        Ok(())
    }

    /// Nodes up to one of the `ends` tags (which is returned) or the end of input.
    fn block(&mut self, ends: &[&str]) -> Result<(Vec<Node>, Option<EndTag>), TemplateError> {
        self.deeper()?;
        let mut nodes = Vec::new();
        while self.pos < self.tokens.len() {
            let piece = std::mem::replace(&mut self.tokens[self.pos], Piece::Text(String::new()));
            self.pos += 1;
            match piece {
                Piece::Text(t) => nodes.push(Node::Text(t)),
                Piece::Output { expr, line } => {
                    if expr.is_empty() {
                        return Err(TemplateError::Syntax {
                            line,
                            what: "empty {{ }}".into(),
                        });
                    }
                    nodes.push(Node::Output(self.expression(expr, line)?));
                }
                Piece::Tag { mut words, line } => {
                    let name = match words.first() {
                        Some(Tok::Ident(n)) => n.clone(),
                        _ => {
                            return Err(TemplateError::Syntax {
                                line,
                                what: "a tag needs a name".into(),
                            })
                        }
                    };
                    words.remove(0);
                    if ends.contains(&name.as_str()) {
                        self.depth -= 1;
                        return Ok((nodes, Some(EndTag { name, words, line })));
                    }
                    if INNER_TAGS.contains(&name.as_str()) {
                        return Err(TemplateError::Syntax {
                            line,
                            what: format!("unexpected {{% {name} %}}"),
                        });
                    }
                    nodes.push(self.tag(&name, words, line)?);
                }
            }
        }
        self.depth -= 1;
        Ok((nodes, None))
    }

    /// A block that must end with one of `ends`.
    fn until(&mut self, ends: &[&str], line: usize) -> Result<(Vec<Node>, EndTag), TemplateError> {
        match self.block(ends)? {
            (nodes, Some(end)) => Ok((nodes, end)),
            (_, None) => Err(TemplateError::Syntax {
                line,
                what: format!("{{% {} %}} is missing", ends[ends.len() - 1]),
            }),
        }
    }

    fn tag(&mut self, name: &str, words: Vec<Tok>, line: usize) -> Result<Node, TemplateError> {
        match name {
            "if" => {
                let mut branches = Vec::new();
                let mut cond = self.expression(words, line)?;
                loop {
                    let (body, end) = self.until(&["elif", "else", "endif"], line)?;
                    branches.push((cond, body));
                    match end.name.as_str() {
                        "elif" => cond = self.expression(end.words, end.line)?,
                        "else" => {
                            no_words(&end)?;
                            let (otherwise, end) = self.until(&["endif"], line)?;
                            no_words(&end)?;
                            return Ok(Node::If {
                                branches,
                                otherwise,
                            });
                        }
                        _ => {
                            no_words(&end)?;
                            return Ok(Node::If {
                                branches,
                                otherwise: Vec::new(),
                            });
                        }
                    }
                }
            }
            "for" => {
                let syntax = |what: &str| TemplateError::Syntax {
                    line,
                    what: what.to_string(),
                };
                let mut it = words.into_iter().peekable();
                let Some(Tok::Ident(key)) = it.next() else {
                    return Err(syntax("for needs a variable name"));
                };
                let mut value = None;
                if it.peek() == Some(&Tok::Sym(",")) {
                    it.next();
                    let Some(Tok::Ident(v)) = it.next() else {
                        return Err(syntax("for needs a second variable name after ,"));
                    };
                    value = Some(v);
                }
                if it.next() != Some(Tok::Ident("in".into())) {
                    return Err(syntax("for needs 'in'"));
                }
                let mut rest: Vec<Tok> = it.collect();
                let (mut reversed, mut sorted) = (false, false);
                while let Some(Tok::Ident(w)) = rest.last() {
                    match w.as_str() {
                        "reversed" => reversed = true,
                        "sorted" => sorted = true,
                        _ => break,
                    }
                    rest.pop();
                }
                let iterable = self.expression(rest, line)?;
                let (body, end) = self.until(&["empty", "endfor"], line)?;
                no_words(&end)?;
                let empty = if end.name == "empty" {
                    let (empty, end) = self.until(&["endfor"], line)?;
                    no_words(&end)?;
                    empty
                } else {
                    Vec::new()
                };
                Ok(Node::For {
                    key,
                    value,
                    iterable,
                    reversed,
                    sorted,
                    body,
                    empty,
                })
            }
            "autoescape" => {
                let on = match words.as_slice() {
                    [Tok::Ident(w)] if w == "on" => true,
                    [Tok::Ident(w)] if w == "off" => false,
                    _ => {
                        return Err(TemplateError::Syntax {
                            line,
                            what: "autoescape takes on or off".into(),
                        })
                    }
                };
                let (body, end) = self.until(&["endautoescape"], line)?;
                no_words(&end)?;
                Ok(Node::Autoescape(on, body))
            }
            "comment" => {
                self.until(&["endcomment"], line)?;
                Ok(Node::Text(String::new()))
            }
            _ => Err(TemplateError::UnknownTag {
                line,
                name: name.to_string(),
            }),
        }
    }

    fn expression(&mut self, toks: Vec<Tok>, line: usize) -> Result<Expr, TemplateError> {
        let mut p = ExprParser {
            toks,
            pos: 0,
            line,
            depth: self.depth,
            limit: self.limits.max_depth,
        };
        let e = p.or()?;
        if p.pos != p.toks.len() {
            return Err(p.syntax(&format!("unexpected {:?}", p.toks[p.pos])));
        }
        Ok(e)
    }
}

fn no_words(end: &EndTag) -> Result<(), TemplateError> {
    if end.words.is_empty() {
        Ok(())
    } else {
        Err(TemplateError::Syntax {
            line: end.line,
            what: format!("{} takes no arguments", end.name),
        })
    }
}

struct ExprParser {
    toks: Vec<Tok>,
    pos: usize,
    line: usize,
    depth: usize,
    limit: usize,
}

impl ExprParser {
    fn syntax(&self, what: &str) -> TemplateError {
        TemplateError::Syntax {
            line: self.line,
            what: what.to_string(),
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(i)) if i == w)
    }

    fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Sym(x)) if *x == s)
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), TemplateError> {
        if self.is_sym(s) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.syntax(&format!("expected {s:?}")))
        }
    }

    fn deeper(&mut self) -> Result<(), TemplateError> {
        self.depth += 1;
        if self.depth > self.limit {
            return Err(TemplateError::TooDeep { limit: self.limit });
        }
        Ok(())
    }

    /// pongo2's grammar: `and` and `or` bind alike, to the right (`a and b or c` is
    /// `a and (b or c)`).
    fn or(&mut self) -> Result<Expr, TemplateError> {
        self.deeper()?;
        let left = self.comparison()?;
        let op = if self.is_word("and") || self.is_sym("&&") {
            BinOp::And
        } else if self.is_word("or") || self.is_sym("||") {
            BinOp::Or
        } else {
            self.depth -= 1;
            return Ok(left);
        };
        self.pos += 1;
        let right = self.or()?;
        self.depth -= 1;
        Ok(Expr::Binary(op, Box::new(left), Box::new(right)))
    }

    fn comparison(&mut self) -> Result<Expr, TemplateError> {
        let left = self.simple()?;
        let op = match self.peek() {
            Some(Tok::Sym("==")) => BinOp::Eq,
            Some(Tok::Sym("!=" | "<>")) => BinOp::Ne,
            Some(Tok::Sym("<")) => BinOp::Lt,
            Some(Tok::Sym(">")) => BinOp::Gt,
            Some(Tok::Sym("<=")) => BinOp::Le,
            Some(Tok::Sym(">=")) => BinOp::Ge,
            Some(Tok::Ident(w)) if w == "in" => BinOp::In,
            Some(Tok::Ident(w))
                if w == "not"
                    && matches!(self.toks.get(self.pos + 1), Some(Tok::Ident(i)) if i == "in") =>
            {
                self.pos += 1;
                BinOp::NotIn
            }
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.simple()?;
        Ok(Expr::Binary(op, Box::new(left), Box::new(right)))
    }

    /// pongo2's negation covers an arithmetic expression, not a comparison:
    /// `not a == b` is `(not a) == b`.
    fn simple(&mut self) -> Result<Expr, TemplateError> {
        if self.is_word("not") || self.is_sym("!") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.additive()?)));
        }
        self.additive()
    }

    fn additive(&mut self) -> Result<Expr, TemplateError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Sym("+")) => BinOp::Add,
                Some(Tok::Sym("-")) => BinOp::Sub,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.multiplicative()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, TemplateError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Sym("*")) => BinOp::Mul,
                Some(Tok::Sym("/")) => BinOp::Div,
                Some(Tok::Sym("%")) => BinOp::Rem,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, TemplateError> {
        if self.is_sym("-") {
            self.pos += 1;
            self.deeper()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Neg(Box::new(inner)));
        }
        if self.is_sym("+") {
            self.pos += 1;
        }
        self.filtered()
    }

    fn filtered(&mut self) -> Result<Expr, TemplateError> {
        let mut e = self.postfix()?;
        while self.is_sym("|") {
            self.pos += 1;
            let Some(Tok::Ident(name)) = self.peek().cloned() else {
                return Err(self.syntax("a filter name must follow |"));
            };
            self.pos += 1;
            let Some((_, takes_arg)) = FILTERS.iter().find(|(n, _)| *n == name) else {
                return Err(TemplateError::UnknownFilter {
                    line: self.line,
                    name,
                });
            };
            let arg = if self.is_sym(":") {
                self.pos += 1;
                Some(Box::new(self.postfix()?))
            } else {
                None
            };
            if *takes_arg && arg.is_none() && name != "yesno" {
                return Err(TemplateError::Arguments {
                    line: self.line,
                    name,
                    expected: 1,
                    got: 0,
                });
            }
            e = Expr::Filter {
                input: Box::new(e),
                name,
                arg,
            };
        }
        Ok(e)
    }

    fn postfix(&mut self) -> Result<Expr, TemplateError> {
        let mut e = self.primary()?;
        loop {
            if self.is_sym(".") {
                self.pos += 1;
                match self.peek().cloned() {
                    Some(Tok::Ident(name)) => e = Expr::Attr(Box::new(e), name),
                    Some(Tok::Int(i)) => e = Expr::Attr(Box::new(e), i.to_string()),
                    _ => return Err(self.syntax("a name must follow .")),
                }
                self.pos += 1;
            } else if self.is_sym("[") {
                self.pos += 1;
                let index = self.or()?;
                self.expect_sym("]")?;
                e = Expr::Index(Box::new(e), Box::new(index));
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, TemplateError> {
        let Some(tok) = self.peek().cloned() else {
            return Err(self.syntax("an expression is missing"));
        };
        self.pos += 1;
        match tok {
            Tok::Str(s) => Ok(Expr::Literal(Value::Str(s))),
            Tok::Int(i) => Ok(Expr::Literal(Value::Int(i))),
            Tok::Float(f) => Ok(Expr::Literal(Value::Float(f))),
            Tok::Sym("(") => {
                let e = self.or()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Tok::Ident(name) => match name.as_str() {
                "true" | "True" => Ok(Expr::Literal(Value::Bool(true))),
                "false" | "False" => Ok(Expr::Literal(Value::Bool(false))),
                "nil" | "None" => Ok(Expr::Literal(Value::Nil)),
                _ if self.is_sym("(") => {
                    self.pos += 1;
                    let mut args = Vec::new();
                    if !self.is_sym(")") {
                        loop {
                            args.push(self.or()?);
                            if self.is_sym(",") {
                                self.pos += 1;
                            } else {
                                break;
                            }
                        }
                    }
                    self.expect_sym(")")?;
                    Ok(Expr::Call {
                        name,
                        args,
                        line: self.line,
                    })
                }
                _ => Ok(Expr::Var(name)),
            },
            Tok::Sym(s) => Err(self.syntax(&format!("unexpected {s:?}"))),
        }
    }
}

// ---- rendering ----

struct Renderer<'a> {
    ctx: &'a Context,
    /// Loop variables, innermost last.
    scopes: Vec<BTreeMap<String, Value>>,
    out: String,
    limits: TemplateLimits,
    autoescape: bool,
    steps: usize,
}

/// A value and whether `safe` marked it (it then skips autoescaping).
struct Evaluated {
    value: Value,
    safe: bool,
}

impl Renderer<'_> {
    fn emit(&mut self, text: &str) -> Result<(), TemplateError> {
        if self.out.len() + text.len() > self.limits.max_output {
            return Err(TemplateError::TooLarge {
                limit: self.limits.max_output,
            });
        }
        self.out.push_str(text);
        Ok(())
    }

    fn step(&mut self) -> Result<(), TemplateError> {
        self.steps += 1;
        if self.steps > self.limits.max_steps {
            return Err(TemplateError::TooManySteps {
                limit: self.limits.max_steps,
            });
        }
        Ok(())
    }

    fn nodes(&mut self, nodes: &[Node]) -> Result<(), TemplateError> {
        for node in nodes {
            self.step()?;
            match node {
                Node::Text(t) => self.emit(t)?,
                Node::Output(e) => {
                    let v = self.eval(e)?;
                    let text = v.value.to_text();
                    if self.autoescape && !v.safe {
                        self.emit(&escape_html(&text))?;
                    } else {
                        self.emit(&text)?;
                    }
                }
                Node::If {
                    branches,
                    otherwise,
                } => {
                    let mut taken = false;
                    for (cond, body) in branches {
                        if self.eval(cond)?.value.is_true() {
                            self.nodes(body)?;
                            taken = true;
                            break;
                        }
                    }
                    if !taken {
                        self.nodes(otherwise)?;
                    }
                }
                Node::For {
                    key,
                    value,
                    iterable,
                    reversed,
                    sorted,
                    body,
                    empty,
                } => {
                    let mut items: Vec<(Value, Value)> = match self.eval(iterable)?.value {
                        Value::List(l) => l.into_iter().map(|v| (v, Value::Nil)).collect(),
                        Value::Map(m) => m.into_iter().map(|(k, v)| (Value::Str(k), v)).collect(),
                        Value::Str(s) => s
                            .chars()
                            .map(|c| (Value::Str(c.to_string()), Value::Nil))
                            .collect(),
                        _ => Vec::new(),
                    };
                    if *sorted {
                        items.sort_by_cached_key(|(k, _)| k.to_text());
                    }
                    if *reversed {
                        items.reverse();
                    }
                    if items.is_empty() {
                        self.nodes(empty)?;
                        continue;
                    }
                    let count = items.len();
                    for (i, (k, v)) in items.into_iter().enumerate() {
                        self.step()?;
                        let forloop = Value::Map(BTreeMap::from([
                            ("Counter".to_string(), Value::Int(i as i64 + 1)),
                            ("Counter0".to_string(), Value::Int(i as i64)),
                            ("Revcounter".to_string(), Value::Int((count - i) as i64)),
                            (
                                "Revcounter0".to_string(),
                                Value::Int((count - i - 1) as i64),
                            ),
                            ("First".to_string(), Value::Bool(i == 0)),
                            ("Last".to_string(), Value::Bool(i + 1 == count)),
                        ]));
                        let mut scope =
                            BTreeMap::from([(key.clone(), k), ("forloop".to_string(), forloop)]);
                        if let Some(name) = value {
                            scope.insert(name.clone(), v);
                        }
                        self.scopes.push(scope);
                        let done = self.nodes(body);
                        self.scopes.pop();
                        done?;
                    }
                }
                Node::Autoescape(on, body) => {
                    let before = std::mem::replace(&mut self.autoescape, *on);
                    let done = self.nodes(body);
                    self.autoescape = before;
                    done?;
                }
            }
        }
        Ok(())
    }

    fn lookup(&self, name: &str) -> Value {
        self.scopes
            .iter()
            .rev()
            .find_map(|s| s.get(name))
            .or_else(|| self.ctx.vars.get(name))
            .cloned()
            .unwrap_or(Value::Nil)
    }

    fn eval(&self, e: &Expr) -> Result<Evaluated, TemplateError> {
        let plain = |value| Ok(Evaluated { value, safe: false });
        match e {
            Expr::Literal(v) => plain(v.clone()),
            Expr::Var(name) => plain(self.lookup(name)),
            Expr::Attr(inner, name) => plain(self.eval(inner)?.value.attribute(name)),
            Expr::Index(inner, index) => {
                let index = self.eval(index)?.value.to_text();
                plain(self.eval(inner)?.value.attribute(&index))
            }
            Expr::Call { name, args, line } => {
                if name != "config_get" {
                    return Err(TemplateError::UnknownFunction {
                        line: *line,
                        name: name.clone(),
                    });
                }
                if args.len() != 2 {
                    return Err(TemplateError::Arguments {
                        line: *line,
                        name: name.clone(),
                        expected: 2,
                        got: args.len(),
                    });
                }
                let key = self.eval(&args[0])?.value.to_text();
                match self.ctx.config.get(&key) {
                    // LXD strips trailing newlines from config values here.
                    Some(v) => plain(Value::Str(v.trim_end_matches(['\r', '\n']).to_string())),
                    None => plain(self.eval(&args[1])?.value),
                }
            }
            Expr::Filter { input, name, arg } => {
                let input = self.eval(input)?;
                let arg = match arg {
                    Some(a) => Some(self.eval(a)?.value),
                    None => None,
                };
                Ok(filter(name, input, arg))
            }
            Expr::Not(inner) => plain(Value::Bool(!self.eval(inner)?.value.is_true())),
            Expr::Neg(inner) => plain(match self.eval(inner)?.value {
                Value::Int(i) => Value::Int(i.wrapping_neg()),
                Value::Float(f) => Value::Float(-f),
                _ => Value::Nil,
            }),
            Expr::Binary(op, left, right) => {
                let l = self.eval(left)?.value;
                // and/or short-circuit as in pongo2.
                match op {
                    BinOp::And if !l.is_true() => return plain(Value::Bool(false)),
                    BinOp::Or if l.is_true() => return plain(Value::Bool(true)),
                    _ => {}
                }
                let r = self.eval(right)?.value;
                plain(binary(*op, &l, &r))
            }
        }
    }
}

fn binary(op: BinOp, l: &Value, r: &Value) -> Value {
    let order = || match (l, r) {
        (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
        _ => l.as_f64()?.partial_cmp(&r.as_f64()?),
    };
    use std::cmp::Ordering::*;
    match op {
        BinOp::And | BinOp::Or => Value::Bool(r.is_true()),
        BinOp::Eq => Value::Bool(l.equals(r)),
        BinOp::Ne => Value::Bool(!l.equals(r)),
        BinOp::Lt => Value::Bool(order() == Some(Less)),
        BinOp::Gt => Value::Bool(order() == Some(Greater)),
        BinOp::Le => Value::Bool(matches!(order(), Some(Less | Equal))),
        BinOp::Ge => Value::Bool(matches!(order(), Some(Greater | Equal))),
        BinOp::In => Value::Bool(r.contains(l)),
        BinOp::NotIn => Value::Bool(!r.contains(l)),
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => arithmetic(op, l, r),
    }
}

/// Integer arithmetic stays integral (division by zero gives nil); anything with a float
/// is float; `+` on strings joins them.
fn arithmetic(op: BinOp, l: &Value, r: &Value) -> Value {
    match (l, r) {
        (Value::Int(a), Value::Int(b)) => match op {
            BinOp::Add => Value::Int(a.wrapping_add(*b)),
            BinOp::Sub => Value::Int(a.wrapping_sub(*b)),
            BinOp::Mul => Value::Int(a.wrapping_mul(*b)),
            BinOp::Rem => a.checked_rem(*b).map(Value::Int).unwrap_or(Value::Nil),
            _ => a.checked_div(*b).map(Value::Int).unwrap_or(Value::Nil),
        },
        (Value::Str(a), Value::Str(b)) if op == BinOp::Add => Value::Str(format!("{a}{b}")),
        _ => match (l.as_f64(), r.as_f64()) {
            (Some(a), Some(b)) => Value::Float(match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Rem => a % b,
                _ => a / b,
            }),
            _ => Value::Nil,
        },
    }
}

fn filter(name: &str, input: Evaluated, arg: Option<Value>) -> Evaluated {
    let arg = arg.unwrap_or(Value::Nil);
    let text = || input.value.to_text();
    let value = match name {
        "default" if !input.value.is_true() => arg,
        "default_if_none" if input.value == Value::Nil => arg,
        "default" | "default_if_none" => return input,
        "lower" => Value::Str(text().to_lowercase()),
        "upper" => Value::Str(text().to_uppercase()),
        "capfirst" => {
            let t = text();
            let mut chars = t.chars();
            Value::Str(match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => String::new(),
            })
        }
        "title" => Value::Str(title(&text())),
        "length" => Value::Int(input.value.len() as i64),
        "join" => match &input.value {
            Value::List(items) => Value::Str(
                items
                    .iter()
                    .map(Value::to_text)
                    .collect::<Vec<_>>()
                    .join(&arg.to_text()),
            ),
            other => Value::Str(other.to_text()),
        },
        "first" | "last" => match &input.value {
            Value::List(items) => {
                let item = if name == "first" {
                    items.first()
                } else {
                    items.last()
                };
                item.cloned().unwrap_or(Value::Nil)
            }
            Value::Str(s) => {
                let c = if name == "first" {
                    s.chars().next()
                } else {
                    s.chars().last()
                };
                c.map(|c| Value::Str(c.to_string())).unwrap_or(Value::Nil)
            }
            _ => Value::Nil,
        },
        "cut" => Value::Str(text().replace(&arg.to_text(), "")),
        "safe" => {
            return Evaluated {
                value: input.value,
                safe: true,
            }
        }
        "escape" => {
            return Evaluated {
                value: Value::Str(escape_html(&text())),
                safe: true,
            }
        }
        "striptags" => Value::Str(strip_tags(&text())),
        "yesno" => {
            let words = match arg {
                Value::Nil => "yes,no,maybe".to_string(),
                other => other.to_text(),
            };
            let words: Vec<&str> = words.split(',').collect();
            let pick = match &input.value {
                Value::Nil => words.get(2).or(words.get(1)),
                v if v.is_true() => words.first(),
                _ => words.get(1),
            };
            Value::Str(pick.copied().unwrap_or("").to_string())
        }
        _ => input.value, // unreachable: names are checked at parse time
    };
    Evaluated { value, safe: false }
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        start = !c.is_alphanumeric();
    }
    out
}

fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
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
