//! nginx `log_format` strings: `$variable` / `${variable}` and literal text.

use nom::bytes::complete::{tag, take_till1, take_while1};
use nom::character::complete::char;
use nom::sequence::delimited;
use nom::{IResult, Parser};

use super::plan::{Class, DurUnit, Kind, Token};
use super::time::EpochUnit;
use super::FormatError;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn braced_var(i: &str) -> IResult<&str, &str> {
    delimited(tag("${"), take_while1(is_name_char), char('}')).parse(i)
}

fn plain_var(i: &str) -> IResult<&str, &str> {
    (char('$'), take_while1(is_name_char)).map(|(_, name)| name).parse(i)
}

fn literal(i: &str) -> IResult<&str, &str> {
    take_till1(|c| c == '$').parse(i)
}

/// Splits an nginx format string into literals and variables. A `$` that starts no variable
/// is literal text (nginx itself would refuse the config).
pub(crate) fn tokenize(fmt: &str) -> Result<Vec<Token>, FormatError> {
    let mut tokens = Vec::new();
    let mut rest = fmt;
    while !rest.is_empty() {
        if let Ok((r, name)) = braced_var.or(plain_var).parse(rest) {
            tokens.push(Token::Field { name: format!("${name}"), kind: kind(name) });
            rest = r;
        } else if let Ok((r, lit)) = literal(rest) {
            tokens.push(Token::Lit(lit.to_owned()));
            rest = r;
        } else if rest.starts_with("${") {
            return Err(FormatError::Syntax { at: fmt.len() - rest.len(), what: "unterminated `${`".into() });
        } else {
            tokens.push(Token::Lit("$".into()));
            rest = &rest[1..];
        }
    }
    Ok(merge_uri_args(tokens))
}

/// `$uri$is_args$args` is the idiom for "path and query": one field, like `$request_uri`.
fn merge_uri_args(tokens: Vec<Token>) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    for t in tokens {
        out.push(t);
        let n = out.len();
        if n >= 3 {
            let names: Vec<&str> = out[n - 3..]
                .iter()
                .map(|t| match t {
                    Token::Field { name, .. } => name.as_str(),
                    Token::Lit(_) => "",
                })
                .collect();
            if matches!(names[..], ["$uri" | "$document_uri", "$is_args", "$args" | "$query_string"]) {
                let name = names.concat();
                out.truncate(n - 3);
                out.push(Token::Field { name, kind: Kind::Target { with_query: true } });
            }
        }
    }
    out
}

/// What an nginx variable is.
pub(crate) fn kind(name: &str) -> Kind {
    match name {
        "remote_addr" => Kind::ClientAddr { rank: 0 },
        "remote_user" => Kind::RemoteUser,
        "time_local" => Kind::TimeLocal { bracketed: false },
        "time_iso8601" => Kind::TimeIso,
        "msec" => Kind::TimeEpoch { unit: EpochUnit::Seconds },
        "request" => Kind::Request,
        "request_method" => Kind::Method,
        "request_uri" => Kind::Target { with_query: true },
        "uri" | "document_uri" => Kind::Target { with_query: false },
        "args" | "query_string" => Kind::Query { leading_q: false },
        "server_protocol" => Kind::Protocol,
        "status" => Kind::Status { rank: 0 },
        "body_bytes_sent" => Kind::Bytes { rank: 0 },
        "bytes_sent" => Kind::Bytes { rank: 1 },
        "request_time" => Kind::Duration { unit: DurUnit::Seconds, rank: 1 },
        "upstream_response_time" => Kind::Upstream,
        "upstream_status" => Kind::UpstreamStatus,
        "upstream_cache_status" => Kind::Cache,
        "host" => Kind::Host { rank: 0 },
        "http_host" => Kind::Host { rank: 1 },
        "server_name" => Kind::Host { rank: 2 },
        "http_referer" => Kind::Referer,
        "http_user_agent" => Kind::Agent,
        "http_x_forwarded_for" => Kind::Xff,
        "scheme" => Kind::Other { list: false, class: Some(Class::Alpha) },
        "is_args" => Kind::Other { list: false, class: Some(Class::QuestionMark) },
        "server_port" | "remote_port" | "connection" | "request_length" | "connection_requests" => {
            Kind::Other { list: false, class: Some(Class::Digits) }
        }
        n if n.starts_with("upstream_") => Kind::Other { list: true, class: None },
        _ => Kind::Other { list: false, class: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t = tokenize("$remote_addr - ${remote_user} [$time_local] 100$ $").unwrap();
        assert_eq!(t.len(), 9);
        assert_eq!(t[0], Token::Field { name: "$remote_addr".into(), kind: Kind::ClientAddr { rank: 0 } });
        assert_eq!(t[1], Token::Lit(" - ".into()));
        assert_eq!(t[2], Token::Field { name: "$remote_user".into(), kind: Kind::RemoteUser });
        assert_eq!(t[5], Token::Lit("] 100".into()));
        assert_eq!(t[6], Token::Lit("$".into()));
        assert!(tokenize("${host").is_err());
    }

    #[test]
    fn uri_is_args_args_is_one_target() {
        let t = tokenize("$scheme://$host$uri$is_args$args end").unwrap();
        assert_eq!(t[3], Token::Field { name: "$uri$is_args$args".into(), kind: Kind::Target { with_query: true } });
    }
}
