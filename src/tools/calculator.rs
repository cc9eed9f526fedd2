//! `calculator`: arithmetic on numbers, evaluated by a small parser, never by running
//! code. `+ - * / %`, `**` or `^` for powers, parentheses, unary minus, and `sqrt abs
//! round floor ceil min max`. Integers stay exact (i128, overflow is an error) until a
//! division or a function makes a float; results print as sluice-tiny's training data
//! prints them (`training/data_calc.py`): integers plainly, other numbers rounded to
//! six decimals with trailing zeros removed.

use async_trait::async_trait;
use serde_json::Value;

use super::{string_arg, CallContext, Tool, ToolError, ToolSpec};
use crate::config::ToolConfig;

/// Longest expression accepted, in bytes.
const MAX_LEN: usize = 1_000;
/// Deepest nesting of parentheses and operators.
const MAX_DEPTH: usize = 64;

pub struct Calculator {
    spec: ToolSpec,
}

impl Calculator {
    pub fn new(name: &str, config: &ToolConfig) -> Self {
        Calculator {
            spec: ToolSpec {
                name: name.to_owned(),
                description: config
                    .description
                    .clone()
                    .unwrap_or_else(|| "evaluate an arithmetic expression".into()),
                parameters: super::one_string_schema(
                    "expression",
                    "an arithmetic expression, e.g. 37 * (12 + 5) / 2",
                ),
            },
        }
    }
}

#[async_trait]
impl Tool for Calculator {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, arguments: Value, _ctx: &CallContext) -> Result<String, ToolError> {
        let expression = string_arg(&arguments, "expression")?;
        evaluate(expression).map_err(ToolError::InvalidArguments)
    }
}

/// Evaluate and format `expression`.
pub fn evaluate(expression: &str) -> Result<String, String> {
    if expression.len() > MAX_LEN {
        return Err(format!("expression longer than {MAX_LEN} characters"));
    }
    let mut p = Parser {
        tokens: tokenize(expression)?,
        at: 0,
        depth: 0,
    };
    let v = p.expr(0)?;
    if p.at != p.tokens.len() {
        return Err(format!("unexpected `{}`", p.tokens[p.at]));
    }
    format_number(v)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn float(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// How a result prints: `444`, `0.333333`, `2.5`, never `-0`.
fn format_number(v: Num) -> Result<String, String> {
    match v {
        Num::Int(i) => Ok(i.to_string()),
        Num::Float(f) if !f.is_finite() => Err("the result is not a finite number".into()),
        Num::Float(f) if f == f.trunc() && f.abs() < 1e15 => Ok(format!("{}", f as i64)),
        Num::Float(f) => {
            let s = format!("{f:.6}");
            let s = s.trim_end_matches('0').trim_end_matches('.');
            Ok(if s == "-0" { "0".into() } else { s.to_owned() })
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(Num),
    Op(char),
    Pow,
    Open,
    Close,
    Comma,
    Ident(String),
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Num(Num::Int(i)) => write!(f, "{i}"),
            Token::Num(Num::Float(x)) => write!(f, "{x}"),
            Token::Op(c) => write!(f, "{c}"),
            Token::Pow => f.write_str("**"),
            Token::Open => f.write_str("("),
            Token::Close => f.write_str(")"),
            Token::Comma => f.write_str(","),
            Token::Ident(s) => f.write_str(s),
        }
    }
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'0'..=b'9' | b'.' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'_') {
                    i += 1;
                }
                if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                    let mut j = i + 1;
                    if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
                        j += 1;
                    }
                    if j < b.len() && b[j].is_ascii_digit() {
                        i = j;
                        while i < b.len() && b[i].is_ascii_digit() {
                            i += 1;
                        }
                    }
                }
                let text: String = s[start..i].chars().filter(|&c| c != '_').collect();
                let is_float = text.contains(['.', 'e', 'E']);
                let num = if is_float {
                    text.parse::<f64>().map(Num::Float).ok()
                } else {
                    text.parse::<i128>().map(Num::Int).ok()
                };
                out.push(Token::Num(
                    num.ok_or_else(|| format!("`{text}` is not a number"))?,
                ));
            }
            b'*' if b.get(i + 1) == Some(&b'*') => {
                out.push(Token::Pow);
                i += 2;
            }
            b'^' => {
                out.push(Token::Pow);
                i += 1;
            }
            b'+' | b'-' | b'*' | b'/' | b'%' => {
                out.push(Token::Op(c as char));
                i += 1;
            }
            b'x' | b'X' | b'\xC3' if is_times(s, i) => {
                out.push(Token::Op('*'));
                i += if c == b'\xC3' { 2 } else { 1 };
            }
            b'(' => {
                out.push(Token::Open);
                i += 1;
            }
            b')' => {
                out.push(Token::Close);
                i += 1;
            }
            b',' => {
                out.push(Token::Comma);
                i += 1;
            }
            c if c.is_ascii_alphabetic() => {
                let start = i;
                while i < b.len() && b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                out.push(Token::Ident(s[start..i].to_ascii_lowercase()));
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or('?');
                return Err(format!("unexpected character `{ch}`"));
            }
        }
    }
    Ok(out)
}

/// `x` or `×` written between two numbers as multiplication ("12 x 4").
fn is_times(s: &str, i: usize) -> bool {
    let rest = &s[i..];
    let len = if rest.starts_with('×') {
        '×'.len_utf8()
    } else if rest.starts_with(['x', 'X']) {
        1
    } else {
        return false;
    };
    let before = s[..i].trim_end().chars().last();
    let after = s[i + len..].trim_start().chars().next();
    let numeric = |c: Option<char>, open: char| {
        c.is_some_and(|c| c.is_ascii_digit() || c == open || c == '.')
    };
    numeric(before, ')') && numeric(after, '(')
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    /// Precedence climbing: + - (1) < * / % (2) < unary (3) < ** (4, right-assoc).
    fn expr(&mut self, min: u8) -> Result<Num, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("expression nested too deeply".into());
        }
        let mut lhs = self.unary()?;
        loop {
            let (op, prec) = match self.peek() {
                Some(Token::Op(c @ ('+' | '-'))) => (*c, 1),
                Some(Token::Op(c @ ('*' | '/' | '%'))) => (*c, 2),
                _ => break,
            };
            if prec < min.max(1) {
                break;
            }
            self.at += 1;
            let rhs = self.expr(prec + 1)?;
            lhs = binary(op, lhs, rhs)?;
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Num, String> {
        match self.peek() {
            Some(Token::Op('-')) => {
                self.at += 1;
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err("expression nested too deeply".into());
                }
                let v = self.unary()?;
                self.depth -= 1;
                Ok(match v {
                    Num::Int(i) => Num::Int(i.checked_neg().ok_or("number too large")?),
                    Num::Float(f) => Num::Float(-f),
                })
            }
            Some(Token::Op('+')) => {
                self.at += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<Num, String> {
        let base = self.atom()?;
        if self.peek() == Some(&Token::Pow) {
            self.at += 1;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err("expression nested too deeply".into());
            }
            let exp = self.unary()?;
            self.depth -= 1;
            return pow(base, exp);
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Num, String> {
        match self.next() {
            Some(Token::Num(n)) => Ok(n),
            Some(Token::Open) => {
                let v = self.expr(0)?;
                match self.next() {
                    Some(Token::Close) => Ok(v),
                    _ => Err("missing `)`".into()),
                }
            }
            Some(Token::Ident(name)) => self.call(&name),
            Some(t) => Err(format!("unexpected `{t}`")),
            None => Err("the expression ends too early".into()),
        }
    }

    fn call(&mut self, name: &str) -> Result<Num, String> {
        if name == "pi" {
            return Ok(Num::Float(std::f64::consts::PI));
        }
        if name == "e" {
            return Ok(Num::Float(std::f64::consts::E));
        }
        if self.next() != Some(Token::Open) {
            return Err(format!("unknown name `{name}`"));
        }
        let mut args = vec![self.expr(0)?];
        loop {
            match self.next() {
                Some(Token::Comma) => args.push(self.expr(0)?),
                Some(Token::Close) => break,
                _ => return Err(format!("missing `)` after the arguments of {name}")),
            }
        }
        let one = |args: &[Num]| match args {
            [x] => Ok(*x),
            _ => Err(format!("{name} takes one argument")),
        };
        match name {
            "sqrt" => {
                let x = one(&args)?.float();
                if x < 0.0 {
                    return Err("square root of a negative number".into());
                }
                Ok(Num::Float(x.sqrt()))
            }
            "abs" => Ok(match one(&args)? {
                Num::Int(i) => Num::Int(i.checked_abs().ok_or("number too large")?),
                Num::Float(f) => Num::Float(f.abs()),
            }),
            "round" | "floor" | "ceil" => {
                let x = one(&args)?.float();
                let r = match name {
                    "round" => x.round(),
                    "floor" => x.floor(),
                    _ => x.ceil(),
                };
                Ok(Num::Float(r))
            }
            "min" | "max" => {
                let mut best = args[0];
                for &a in &args[1..] {
                    let better = if name == "min" {
                        a.float() < best.float()
                    } else {
                        a.float() > best.float()
                    };
                    if better {
                        best = a;
                    }
                }
                Ok(best)
            }
            _ => Err(format!(
                "unknown function `{name}` (known: sqrt, abs, round, floor, ceil, min, max)"
            )),
        }
    }
}

fn binary(op: char, a: Num, b: Num) -> Result<Num, String> {
    const LARGE: &str = "result too large";
    if let (Num::Int(x), Num::Int(y)) = (a, b) {
        return match op {
            '+' => x.checked_add(y).map(Num::Int).ok_or_else(|| LARGE.into()),
            '-' => x.checked_sub(y).map(Num::Int).ok_or_else(|| LARGE.into()),
            '*' => x.checked_mul(y).map(Num::Int).ok_or_else(|| LARGE.into()),
            '%' if y == 0 => Err("modulo by zero".into()),
            // Python's sign convention: the result has the divisor's sign.
            '%' => Ok(Num::Int(((x % y) + y) % y)),
            _ if y == 0 => Err("division by zero".into()),
            _ => Ok(Num::Float(x as f64 / y as f64)),
        };
    }
    let (x, y) = (a.float(), b.float());
    let v = match op {
        '+' => x + y,
        '-' => x - y,
        '*' => x * y,
        _ if y == 0.0 => {
            return Err(if op == '%' {
                "modulo by zero"
            } else {
                "division by zero"
            }
            .into())
        }
        '/' => x / y,
        _ => x - y * (x / y).floor(),
    };
    if v.is_finite() {
        Ok(Num::Float(v))
    } else {
        Err(LARGE.into())
    }
}

fn pow(base: Num, exp: Num) -> Result<Num, String> {
    if let (Num::Int(b), Num::Int(e)) = (base, exp) {
        if e >= 0 {
            let e = u32::try_from(e).map_err(|_| "exponent too large")?;
            return b
                .checked_pow(e)
                .map(Num::Int)
                .ok_or_else(|| "result too large".into());
        }
    }
    let (b, e) = (base.float(), exp.float());
    if b == 0.0 && e < 0.0 {
        return Err("zero to a negative power".into());
    }
    let v = b.powf(e);
    if v.is_nan() {
        return Err("the result is not a real number".into());
    }
    if !v.is_finite() {
        return Err("result too large".into());
    }
    Ok(Num::Float(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_training_data() {
        assert_eq!(evaluate("17 * 23").unwrap(), "391");
        assert_eq!(evaluate("37 * 12").unwrap(), "444");
        assert_eq!(evaluate("1 / 3").unwrap(), "0.333333");
        assert_eq!(evaluate("10 / 4").unwrap(), "2.5");
        assert_eq!(evaluate("10 / 5").unwrap(), "2");
        assert_eq!(evaluate("2.5 * 4").unwrap(), "10");
        assert_eq!(evaluate("-0.0000001").unwrap(), "0");
        assert_eq!(evaluate("(12.5 + 7.25) - 3").unwrap(), "16.75");
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(evaluate("2 + 3 * 4").unwrap(), "14");
        assert_eq!(evaluate("(2 + 3) * 4").unwrap(), "20");
        assert_eq!(evaluate("2 ** 3 ** 2").unwrap(), "512");
        assert_eq!(evaluate("-2 ^ 2").unwrap(), "-4");
        assert_eq!(evaluate("10 - 4 - 3").unwrap(), "3");
        assert_eq!(evaluate("100 / 10 / 5").unwrap(), "2");
        assert_eq!(evaluate("-7 % 3").unwrap(), "2");
        assert_eq!(evaluate("12 x 4").unwrap(), "48");
        assert_eq!(evaluate("sqrt(16) + max(1, 2, 3)").unwrap(), "7");
        assert_eq!(evaluate("1_000 * 3").unwrap(), "3000");
    }

    #[test]
    fn bad_expressions_are_clear_errors() {
        for (e, want) in [
            ("1 / 0", "division by zero"),
            ("2 +", "ends too early"),
            ("import os", "unknown name"),
            ("__import__('os')", "unexpected character"),
            ("(1 + 2", "missing `)`"),
            ("10 ** 100", "too large"),
            ("9 ** 9 ** 9", "too large"),
            ("sqrt(-1)", "negative"),
            ("exec(1)", "unknown function"),
        ] {
            let err = evaluate(e).unwrap_err();
            assert!(err.contains(want), "{e}: {err}");
        }
        assert!(evaluate(&"(".repeat(500)).unwrap_err().contains("deeply"));
        assert!(evaluate(&"1+".repeat(600)).unwrap_err().contains("longer"));
    }

    #[test]
    fn large_integers_stay_exact() {
        assert_eq!(evaluate("123456789012 * 1000").unwrap(), "123456789012000");
        assert_eq!(
            evaluate("2 ** 100").unwrap(),
            "1267650600228229401496703205376"
        );
    }
}
