//! Parsing pieces into nodes and expressions, with pongo2's grammar and bounded depth.

use super::lex::{Piece, Tok};
use super::{TemplateError, TemplateLimits, Value};

#[derive(Debug, Clone)]
pub(super) enum Expr {
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
pub(super) enum BinOp {
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
pub(super) enum Node {
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
pub(super) struct EndTag {
    pub(super) name: String,
    pub(super) words: Vec<Tok>,
    pub(super) line: usize,
}

pub(super) const FILTERS: [(&str, bool); 15] = [
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
pub(super) const INNER_TAGS: [&str; 7] = [
    "elif",
    "else",
    "endif",
    "empty",
    "endfor",
    "endautoescape",
    "endcomment",
];

pub(super) struct Parser {
    pub(super) tokens: Vec<Piece>,
    pub(super) pos: usize,
    pub(super) depth: usize,
    pub(super) limits: TemplateLimits,
}

impl Parser {
    pub(super) fn deeper(&mut self) -> Result<(), TemplateError> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(TemplateError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        Ok(())
    }

    /// Nodes up to one of the `ends` tags (which is returned) or the end of input.
    pub(super) fn block(
        &mut self,
        ends: &[&str],
    ) -> Result<(Vec<Node>, Option<EndTag>), TemplateError> {
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
    pub(super) fn until(
        &mut self,
        ends: &[&str],
        line: usize,
    ) -> Result<(Vec<Node>, EndTag), TemplateError> {
        match self.block(ends)? {
            (nodes, Some(end)) => Ok((nodes, end)),
            (_, None) => Err(TemplateError::Syntax {
                line,
                what: format!("{{% {} %}} is missing", ends[ends.len() - 1]),
            }),
        }
    }

    pub(super) fn tag(
        &mut self,
        name: &str,
        words: Vec<Tok>,
        line: usize,
    ) -> Result<Node, TemplateError> {
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

    pub(super) fn expression(
        &mut self,
        toks: Vec<Tok>,
        line: usize,
    ) -> Result<Expr, TemplateError> {
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

pub(super) fn no_words(end: &EndTag) -> Result<(), TemplateError> {
    if end.words.is_empty() {
        Ok(())
    } else {
        Err(TemplateError::Syntax {
            line: end.line,
            what: format!("{} takes no arguments", end.name),
        })
    }
}

pub(super) struct ExprParser {
    pub(super) toks: Vec<Tok>,
    pub(super) pos: usize,
    pub(super) line: usize,
    pub(super) depth: usize,
    pub(super) limit: usize,
}

impl ExprParser {
    pub(super) fn syntax(&self, what: &str) -> TemplateError {
        TemplateError::Syntax {
            line: self.line,
            what: what.to_string(),
        }
    }

    pub(super) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    pub(super) fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(i)) if i == w)
    }

    pub(super) fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Sym(x)) if *x == s)
    }

    pub(super) fn expect_sym(&mut self, s: &str) -> Result<(), TemplateError> {
        if self.is_sym(s) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.syntax(&format!("expected {s:?}")))
        }
    }

    pub(super) fn deeper(&mut self) -> Result<(), TemplateError> {
        self.depth += 1;
        if self.depth > self.limit {
            return Err(TemplateError::TooDeep { limit: self.limit });
        }
        Ok(())
    }

    /// pongo2's grammar: `and` and `or` bind alike, to the right (`a and b or c` is
    /// `a and (b or c)`).
    pub(super) fn or(&mut self) -> Result<Expr, TemplateError> {
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

    pub(super) fn comparison(&mut self) -> Result<Expr, TemplateError> {
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
    pub(super) fn simple(&mut self) -> Result<Expr, TemplateError> {
        if self.is_word("not") || self.is_sym("!") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.additive()?)));
        }
        self.additive()
    }

    pub(super) fn additive(&mut self) -> Result<Expr, TemplateError> {
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

    pub(super) fn multiplicative(&mut self) -> Result<Expr, TemplateError> {
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

    pub(super) fn unary(&mut self) -> Result<Expr, TemplateError> {
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

    pub(super) fn filtered(&mut self) -> Result<Expr, TemplateError> {
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

    pub(super) fn postfix(&mut self) -> Result<Expr, TemplateError> {
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

    pub(super) fn primary(&mut self) -> Result<Expr, TemplateError> {
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
