//! Rendering nodes against a context, with bounded output and steps.

use std::collections::BTreeMap;

use super::parse::{BinOp, Expr, Node};
use super::{Context, TemplateError, TemplateLimits, Value};

pub(super) struct Renderer<'a> {
    pub(super) ctx: &'a Context,
    /// Loop variables, innermost last.
    pub(super) scopes: Vec<BTreeMap<String, Value>>,
    pub(super) out: String,
    pub(super) limits: TemplateLimits,
    pub(super) autoescape: bool,
    pub(super) steps: usize,
}

/// A value and whether `safe` marked it (it then skips autoescaping).
pub(super) struct Evaluated {
    pub(super) value: Value,
    pub(super) safe: bool,
}

impl Renderer<'_> {
    pub(super) fn emit(&mut self, text: &str) -> Result<(), TemplateError> {
        if self.out.len() + text.len() > self.limits.max_output {
            return Err(TemplateError::TooLarge {
                limit: self.limits.max_output,
            });
        }
        self.out.push_str(text);
        Ok(())
    }

    pub(super) fn step(&mut self) -> Result<(), TemplateError> {
        self.steps += 1;
        if self.steps > self.limits.max_steps {
            return Err(TemplateError::TooManySteps {
                limit: self.limits.max_steps,
            });
        }
        Ok(())
    }

    pub(super) fn nodes(&mut self, nodes: &[Node]) -> Result<(), TemplateError> {
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

    pub(super) fn lookup(&self, name: &str) -> Value {
        self.scopes
            .iter()
            .rev()
            .find_map(|s| s.get(name))
            .or_else(|| self.ctx.vars.get(name))
            .cloned()
            .unwrap_or(Value::Nil)
    }

    pub(super) fn eval(&self, e: &Expr) -> Result<Evaluated, TemplateError> {
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

pub(super) fn binary(op: BinOp, l: &Value, r: &Value) -> Value {
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
pub(super) fn arithmetic(op: BinOp, l: &Value, r: &Value) -> Value {
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

pub(super) fn filter(name: &str, input: Evaluated, arg: Option<Value>) -> Evaluated {
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

pub(super) fn title(s: &str) -> String {
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

pub(super) fn strip_tags(s: &str) -> String {
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

pub(super) fn escape_html(s: &str) -> String {
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
