//! Splitting a template into text, `{{ }}` and `{% %}` pieces and expression tokens.

use super::TemplateError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Sym(&'static str),
}

#[derive(Debug)]
pub(super) enum Piece {
    Text(String),
    Output { expr: Vec<Tok>, line: usize },
    Tag { words: Vec<Tok>, line: usize },
}

/// What `{%-`/`-%}` trim: pongo2's `tokenSpaceChars`, not all of Unicode's whitespace.
pub(super) const SPACE: [char; 4] = [' ', '\n', '\r', '\t'];

pub(super) const SYMBOLS: [&str; 23] = [
    "==", "!=", "<>", "<=", ">=", "&&", "||", "(", ")", ",", ".", "|", ":", "[", "]", "<", ">",
    "!", "+", "-", "*", "/", "%",
];

/// Splits a template into text, `{{ }}` and `{% %}` pieces (comments dropped), applying
/// `{%-`/`-%}` whitespace trimming as pongo2 does.
pub(super) fn lex(src: &str) -> Result<Vec<Piece>, TemplateError> {
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

pub(super) fn push_text(pieces: &mut Vec<Piece>, text: &str) {
    if !text.is_empty() {
        pieces.push(Piece::Text(text.to_string()));
    }
}

/// Tokens of an expression up to `close` (or `-close`); returns them, the bytes used
/// including the closing delimiter, and whether it trims what follows.
pub(super) fn lex_expr(
    s: &str,
    close: &str,
    line: usize,
) -> Result<(Vec<Tok>, usize, bool), TemplateError> {
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
