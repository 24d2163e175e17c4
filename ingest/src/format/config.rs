//! Reading `log_format` directives out of an nginx configuration file.
//!
//! nginx's own tokenizer rules, as far as `log_format` needs them: `#` comments, `'…'` and
//! `"…"` strings with `\"`, `\'`, `\\`, `\t`, `\r`, `\n` escapes, bare words, and `;`, `{`,
//! `}`. A directive spans lines and its strings are concatenated:
//!
//! ```nginx
//! log_format main escape=default '$remote_addr - $remote_user [$time_local] "$request" '
//!                                '$status $body_bytes_sent';
//! ```
//! `include` is not followed: point at the file holding the `log_format`.

use nom::branch::alt;
use nom::bytes::complete::{is_not, tag, take_till};
use nom::character::complete::{multispace1, none_of, one_of};
use nom::combinator::value;
use nom::multi::many0_count;
use nom::sequence::preceded;
use nom::{IResult, Parser};

use super::{Escape, FormatError};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A bare word or a quoted string (with its escapes undone).
    Word {
        text: String,
        quoted: bool,
    },
    Semi,
    Open,
    Close,
}

/// Whitespace and comments.
fn skip(i: &str) -> IResult<&str, ()> {
    value((), many0_count(alt((value((), multispace1), value((), preceded(tag("#"), take_till(|c| c == '\n')))))))
        .parse(i)
}

fn punct(i: &str) -> IResult<&str, Tok> {
    alt((value(Tok::Semi, tag(";")), value(Tok::Open, tag("{")), value(Tok::Close, tag("}")))).parse(i)
}

/// A quoted string; `Err(Failure)` when it never closes.
fn quoted(i: &str) -> IResult<&str, Tok> {
    let (mut rest, q) = one_of("'\"").parse(i)?;
    let mut text = String::new();
    loop {
        let (r, chunk) = take_till(|c| c == q || c == '\\').parse(rest)?;
        text.push_str(chunk);
        let mut chars = r.chars();
        match chars.next() {
            None => return Err(nom::Err::Failure(nom::error::Error::new(i, nom::error::ErrorKind::Char))),
            Some(c) if c == q => return Ok((chars.as_str(), Tok::Word { text, quoted: true })),
            Some(_) => {
                match chars.next() {
                    Some(c @ ('"' | '\'' | '\\')) => text.push(c),
                    Some('t') => text.push('\t'),
                    Some('r') => text.push('\r'),
                    Some('n') => text.push('\n'),
                    Some(c) => {
                        text.push('\\');
                        text.push(c);
                    }
                    None => return Err(nom::Err::Failure(nom::error::Error::new(i, nom::error::ErrorKind::Char))),
                }
                rest = chars.as_str();
            }
        }
    }
}

/// A bare word; `${name}` inside it does not end it at the braces.
fn bare(i: &str) -> IResult<&str, Tok> {
    let mut text = String::new();
    let mut rest = i;
    loop {
        if let Ok((r, var)) = (tag::<_, _, nom::error::Error<&str>>("${"), is_not("}"), tag("}")).parse(rest) {
            text.push_str("${");
            text.push_str(var.1);
            text.push('}');
            rest = r;
            continue;
        }
        match none_of::<_, _, nom::error::Error<&str>>(" \t\r\n;{}'\"").parse(rest) {
            Ok((r, c)) => {
                text.push(c);
                rest = r;
            }
            Err(_) => break,
        }
    }
    if text.is_empty() {
        return Err(nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::NoneOf)));
    }
    Ok((rest, Tok::Word { text, quoted: false }))
}

/// Tokens with the 1-based line each starts on.
fn tokenize(config: &str) -> Result<Vec<(Tok, usize)>, FormatError> {
    let line_of = |rest: &str| config[..config.len() - rest.len()].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut rest = config;
    loop {
        let (r, ()) = skip(rest).map_err(|_| FormatError::Config { line: line_of(rest), msg: "unreadable".into() })?;
        rest = r;
        if rest.is_empty() {
            return Ok(out);
        }
        match alt((punct, quoted, bare)).parse(rest) {
            Ok((r, tok)) => {
                out.push((tok, line_of(rest)));
                rest = r;
            }
            Err(_) => {
                return Err(FormatError::Config { line: line_of(rest), msg: "unterminated quoted string".into() });
            }
        }
    }
}

/// One `log_format` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Directive {
    pub name: String,
    pub escape: Escape,
    pub format: String,
}

/// Every `log_format` directive in the file, in order.
pub(crate) fn log_formats(config: &str) -> Result<Vec<Directive>, FormatError> {
    let toks = tokenize(config)?;
    let mut out = Vec::new();
    let mut at_statement_start = true;
    let mut i = 0;
    while i < toks.len() {
        let (tok, line) = &toks[i];
        let is_directive =
            at_statement_start && matches!(tok, Tok::Word { text, quoted: false } if text == "log_format");
        at_statement_start = !matches!(tok, Tok::Word { .. });
        i += 1;
        if !is_directive {
            continue;
        }
        let mut args = Vec::new();
        loop {
            match toks.get(i) {
                Some((Tok::Word { text, quoted }, _)) => args.push((text.as_str(), *quoted)),
                Some((Tok::Semi, _)) => break,
                _ => {
                    return Err(FormatError::Config { line: *line, msg: "log_format is not terminated by `;`".into() })
                }
            }
            i += 1;
        }
        i += 1;
        at_statement_start = true;
        let Some(((name, _), rest)) = args.split_first() else {
            return Err(FormatError::Config { line: *line, msg: "log_format without a name".into() });
        };
        let (escape, strings) = match rest.split_first() {
            Some(((arg, false), strings)) if arg.starts_with("escape=") => {
                let mode = &arg["escape=".len()..];
                (mode.parse::<Escape>().map_err(|_| FormatError::Escape(mode.to_owned()))?, strings)
            }
            _ => (Escape::Default, rest),
        };
        if strings.is_empty() {
            return Err(FormatError::Config { line: *line, msg: format!("log_format {name} has no format string") });
        }
        let format = strings.iter().map(|(s, _)| *s).collect::<String>();
        out.push(Directive { name: (*name).to_owned(), escape, format });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_multi_line_directives() {
        let conf = r#"
http {
    # log_format commented '$nothing';
    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      "\"$http_user_agent\" \"$http_x_forwarded_for\"";
    log_format json escape=json '{"a":"$remote_addr"}';
    access_log /var/log/nginx/access.log main;
    server { listen 80; location / { return 200 'log_format fake'; } }
}
"#;
        let d = log_formats(conf).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "main");
        assert_eq!(
            d[0].format,
            r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for""#
        );
        assert_eq!(d[1].escape, Escape::Json);
        assert_eq!(d[1].format, r#"{"a":"$remote_addr"}"#);
    }

    #[test]
    fn errors_name_the_line() {
        assert!(matches!(log_formats("log_format x '$a"), Err(FormatError::Config { line: 1, .. })));
        assert!(matches!(log_formats("\n\nlog_format x '$a'"), Err(FormatError::Config { line: 3, .. })));
        assert!(matches!(log_formats("log_format x escape=yaml '$a';"), Err(FormatError::Escape(_))));
        assert!(matches!(log_formats("log_format;"), Err(FormatError::Config { .. })));
    }

    #[test]
    fn bare_words_with_braced_variables() {
        let d = log_formats("log_format short ${remote_addr}:$status;").unwrap();
        assert_eq!(d[0].format, "${remote_addr}:$status");
    }
}
