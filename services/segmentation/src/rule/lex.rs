//! The lexer of the rule text: tokens with their 1-based line and column
//! (columns counted in characters).

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::{Location, Pos, RuleError};

/// Longest rule text, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// Longest string literal, in characters.
pub const MAX_STRING_CHARS: usize = 1_024;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// An identifier or keyword, as written.
    Ident(String),
    /// A string literal, unescaped.
    Str(String),
    /// A number, with its text as written.
    Number(String),
    /// A duration in hours, with its unit letter and text as written.
    Duration {
        hours: u64,
        unit: char,
        text: String,
    },
    /// A timestamp, with its text as written.
    Time(DateTime<Utc>, String),
    /// Punctuation: ( ) [ ] , . % = != < <= > >=
    Punct(&'static str),
    End,
}

#[derive(Clone, Debug)]
pub struct Token {
    pub tok: Tok,
    pub pos: Pos,
}

impl Tok {
    /// How the token is named in "found ..." messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("\"{s}\""),
            Tok::Str(s) => format!("string {}", quote(s)),
            Tok::Number(s) => format!("number {s}"),
            Tok::Duration { text, .. } => format!("duration {text}"),
            Tok::Time(_, text) => format!("timestamp {text}"),
            Tok::Punct(p) => format!("\"{p}\""),
            Tok::End => "end of rule".to_string(),
        }
    }

    /// Whether this is the keyword `kw` (case-insensitive).
    pub fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }
}

/// A string literal in rule syntax: double quotes, escapes for `"`, `\`,
/// line feed, tab and other control characters.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn error(pos: Pos, message: impl Into<String>) -> RuleError {
    RuleError {
        location: Location::Text(pos),
        message: message.into(),
    }
}

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic()
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

struct Lexer {
    chars: Vec<char>,
    i: usize,
    line: u32,
    column: u32,
}

impl Lexer {
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.get(self.i).copied()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek(0) {
            if c.is_whitespace() {
                self.bump();
            } else if c == '#' {
                while let Some(c) = self.peek(0) {
                    if c == '\n' {
                        break;
                    }
                    self.bump();
                }
            } else {
                break;
            }
        }
    }

    fn string(&mut self, start: Pos) -> Result<Tok, RuleError> {
        self.bump(); // the opening quote
        let mut out = String::new();
        let mut count = 0usize;
        loop {
            let here = self.pos();
            let Some(c) = self.bump() else {
                return Err(error(
                    here,
                    "expected a closing '\"' to end the string, found end of rule",
                ));
            };
            let c = match c {
                '"' => break,
                '\\' => {
                    let epos = self.pos();
                    match self.bump() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('u') => {
                            let mut code = 0u32;
                            for _ in 0..4 {
                                let hpos = self.pos();
                                match self.bump().and_then(|h| h.to_digit(16)) {
                                    Some(d) => code = code * 16 + d,
                                    None => {
                                        return Err(error(
                                            hpos,
                                            "expected four hexadecimal digits after \\u, found something else",
                                        ));
                                    }
                                }
                            }
                            match char::from_u32(code) {
                                Some(c) => c,
                                None => {
                                    return Err(error(
                                        epos,
                                        format!(
                                            "expected a Unicode scalar value after \\u, found \\u{code:04x}"
                                        ),
                                    ));
                                }
                            }
                        }
                        Some(other) => {
                            return Err(error(
                                epos,
                                format!(
                                    "expected an escape (\\\", \\\\, \\n, \\t or \\uXXXX), found \\{other}"
                                ),
                            ));
                        }
                        None => {
                            return Err(error(
                                epos,
                                "expected an escape (\\\", \\\\, \\n, \\t or \\uXXXX), found end of rule",
                            ));
                        }
                    }
                }
                c => c,
            };
            count += 1;
            if count > MAX_STRING_CHARS {
                return Err(error(
                    start,
                    format!(
                        "expected a string of at most {MAX_STRING_CHARS} characters, found a longer one"
                    ),
                ));
            }
            out.push(c);
        }
        Ok(Tok::Str(out))
    }

    fn word_from(&self, start: usize) -> String {
        let mut end = self.i;
        while end < self.chars.len() && (ident_char(self.chars[end]) || self.chars[end] == '.') {
            end += 1;
        }
        self.chars[start..end].iter().collect()
    }

    fn number(&mut self, start: Pos) -> Result<Tok, RuleError> {
        let begin = self.i;
        // A timestamp: four digits and a dash.
        if (0..4).all(|k| self.peek(k).is_some_and(|c| c.is_ascii_digit()))
            && self.peek(4) == Some('-')
        {
            while let Some(c) = self.peek(0) {
                if c.is_ascii_alphanumeric() || matches!(c, ':' | '+' | '-' | '.') {
                    self.bump();
                } else {
                    break;
                }
            }
            let text: String = self.chars[begin..self.i].iter().collect();
            return match parse_time(&text) {
                Some(t) => Ok(Tok::Time(t, text)),
                None => Err(error(
                    start,
                    format!(
                        "expected a timestamp (RFC 3339, e.g. 2025-01-31 or 2025-01-31T08:00:00Z), found \"{text}\""
                    ),
                )),
            };
        }
        if self.peek(0) == Some('-') {
            self.bump();
        }
        while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        if self.peek(0) == Some('.') && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
        }
        let text: String = self.chars[begin..self.i].iter().collect();
        match self.peek(0) {
            Some(u @ ('h' | 'd' | 'w' | 'y'))
                if !text.contains('.')
                    && !text.starts_with('-')
                    && !self.peek(1).is_some_and(ident_char) =>
            {
                self.bump();
                let full = format!("{text}{u}");
                let per: u64 = match u {
                    'h' => 1,
                    'd' => 24,
                    'w' => 24 * 7,
                    _ => 24 * 365,
                };
                let hours = text
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| n.checked_mul(per))
                    .filter(|h| *h <= u64::from(u32::MAX));
                match hours {
                    Some(hours) => Ok(Tok::Duration {
                        hours,
                        unit: u,
                        text: full,
                    }),
                    None => Err(error(
                        start,
                        format!("expected a duration of at most 36500d, found duration {full}"),
                    )),
                }
            }
            Some(c) if ident_char(c) || c == '.' => {
                let word = self.word_from(begin);
                Err(error(
                    start,
                    format!(
                        "expected a number, a duration (e.g. 90d, 12h, 2w, 1y) or a timestamp, found \"{word}\""
                    ),
                ))
            }
            _ => Ok(Tok::Number(text)),
        }
    }

    fn next(&mut self) -> Result<Token, RuleError> {
        self.skip_space();
        let pos = self.pos();
        let Some(c) = self.peek(0) else {
            return Ok(Token { tok: Tok::End, pos });
        };
        let tok = if ident_start(c) {
            let begin = self.i;
            while self.peek(0).is_some_and(ident_char) {
                self.bump();
            }
            Tok::Ident(self.chars[begin..self.i].iter().collect())
        } else if c.is_ascii_digit()
            || (c == '-' && self.peek(1).is_some_and(|d| d.is_ascii_digit()))
        {
            self.number(pos)?
        } else if c == '"' {
            self.string(pos)?
        } else {
            let two: String = [Some(c), self.peek(1)].iter().flatten().collect();
            let p: &'static str = match two.as_str() {
                "!=" => "!=",
                "<=" => "<=",
                ">=" => ">=",
                _ => match c {
                    '(' => "(",
                    ')' => ")",
                    '[' => "[",
                    ']' => "]",
                    ',' => ",",
                    '.' => ".",
                    '%' => "%",
                    '=' => "=",
                    '<' => "<",
                    '>' => ">",
                    _ => {
                        let shown = if c.is_control() {
                            format!("character U+{:04X}", c as u32)
                        } else {
                            format!("\"{c}\"")
                        };
                        return Err(error(
                            pos,
                            format!("expected a field, operator or literal, found {shown}"),
                        ));
                    }
                },
            };
            for _ in 0..p.chars().count() {
                self.bump();
            }
            Tok::Punct(p)
        };
        Ok(Token { tok, pos })
    }
}

/// An RFC 3339 date (midnight UTC) or date-time.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if text.len() == 10 {
        let d = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A number literal's value: an integer when it has no fraction and fits in
/// 64 bits, otherwise an exact decimal.
pub fn parse_number(text: &str) -> Option<super::Literal> {
    if !text.contains('.')
        && let Ok(i) = text.parse::<i64>()
    {
        return Some(super::Literal::Int(i));
    }
    text.parse::<Decimal>().ok().map(super::Literal::Dec)
}

/// Splits the text into tokens, ending with `Tok::End`.
pub fn tokenize(text: &str) -> Result<Vec<Token>, RuleError> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() > MAX_TEXT_CHARS {
        // Point at the first character past the limit.
        let mut lx = Lexer {
            chars: chars[..MAX_TEXT_CHARS].to_vec(),
            i: 0,
            line: 1,
            column: 1,
        };
        while lx.bump().is_some() {}
        return Err(error(
            lx.pos(),
            format!(
                "expected a rule of at most {MAX_TEXT_CHARS} characters, found {} characters",
                chars.len()
            ),
        ));
    }
    let mut lx = Lexer {
        chars,
        i: 0,
        line: 1,
        column: 1,
    };
    let mut out = Vec::new();
    loop {
        let t = lx.next()?;
        let end = t.tok == Tok::End;
        out.push(t);
        if end {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        tokenize(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn lexes_every_kind_of_token() {
        assert_eq!(
            toks("clv >= -1.5 # c\n90d \"a\\\"b\\u0041\" 2024-01-01 [ ] %"),
            vec![
                Tok::Ident("clv".into()),
                Tok::Punct(">="),
                Tok::Number("-1.5".into()),
                Tok::Duration {
                    hours: 2160,
                    unit: 'd',
                    text: "90d".into()
                },
                Tok::Str("a\"bA".into()),
                Tok::Time(parse_time("2024-01-01").unwrap(), "2024-01-01".into()),
                Tok::Punct("["),
                Tok::Punct("]"),
                Tok::Punct("%"),
                Tok::End,
            ]
        );
    }

    #[test]
    fn positions_count_characters() {
        let t = tokenize("\"é\" x\n  y").unwrap();
        assert_eq!(t[1].pos, Pos { line: 1, column: 5 });
        assert_eq!(t[2].pos, Pos { line: 2, column: 3 });
    }

    #[test]
    fn bad_tokens_are_errors() {
        assert!(tokenize("\"abc").is_err());
        assert!(tokenize("90days").is_err());
        assert!(tokenize("2024-13-01").is_err());
        assert!(tokenize("a ; b").is_err());
        assert!(tokenize(&"x".repeat(10_001)).is_err());
        assert!(tokenize(&format!("\"{}\"", "x".repeat(1_025))).is_err());
        assert!(tokenize(&format!("\"{}\"", "x".repeat(1_024))).is_ok());
    }

    #[test]
    fn timestamps_parse_with_offsets() {
        let t = parse_time("2025-01-31T08:00:00+01:00").unwrap();
        assert_eq!(t, parse_time("2025-01-31T07:00:00Z").unwrap());
    }
}
