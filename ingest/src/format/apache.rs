//! apache `LogFormat` strings: `%h`, `%>s`, `%{User-Agent}i`, `%400,501{Referer}i`, `%%`.

use nom::bytes::complete::{take_till, take_till1, take_while};
use nom::character::complete::{anychar, char};
use nom::sequence::delimited;
use nom::{IResult, Parser};

use super::plan::{Class, DurUnit, Kind, Token};
use super::time::EpochUnit;
use super::FormatError;

/// The parts of one `%` directive.
struct Directive<'a> {
    modifiers: &'a str,
    arg: Option<&'a str>,
    letter: char,
    /// `%{X}^ti`: the two letters after `^`.
    trailer: Option<&'a str>,
}

fn modifiers(i: &str) -> IResult<&str, &str> {
    take_while(|c: char| matches!(c, '!' | '<' | '>' | ',') || c.is_ascii_digit()).parse(i)
}

fn directive(i: &str) -> IResult<&str, Directive<'_>> {
    let (i, _) = char('%').parse(i)?;
    let (i, m1) = modifiers(i)?;
    let (i, arg) = if i.starts_with('{') {
        let (i, arg) = delimited(char('{'), take_till(|c| c == '}'), char('}')).parse(i)?;
        (i, Some(arg))
    } else {
        (i, None)
    };
    let (i, m2) = modifiers(i)?;
    let (i, letter) = anychar(i)?;
    let (i, trailer) = if letter == '^' {
        let (i, t) = take_while(|c: char| c.is_ascii_alphabetic()).parse(i)?;
        (i, Some(t))
    } else {
        (i, None)
    };
    let modifiers = if m1.is_empty() { m2 } else { m1 };
    Ok((i, Directive { modifiers, arg, letter, trailer }))
}

fn literal(i: &str) -> IResult<&str, &str> {
    take_till1(|c| c == '%').parse(i)
}

/// Undoes the escapes an httpd.conf `LogFormat "…"` argument carries (`\"`, `\\`, `\n`, `\t`),
/// so the format can be pasted from the config file as it stands.
fn unescape_config(fmt: &str) -> String {
    let mut out = String::with_capacity(fmt.len());
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Splits an apache format string into literals and directives.
pub(crate) fn tokenize(fmt: &str) -> Result<Vec<Token>, FormatError> {
    let fmt = unescape_config(fmt);
    let mut tokens = Vec::new();
    let mut rest = fmt.as_str();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("%%") {
            tokens.push(Token::Lit("%".into()));
            rest = r;
        } else if rest.starts_with('%') {
            match directive(rest) {
                Ok((r, d)) => {
                    let name = rest[..rest.len() - r.len()].to_owned();
                    tokens.push(Token::Field { name, kind: kind(&d) });
                    rest = r;
                }
                Err(_) => {
                    let at = fmt.len() - rest.len();
                    let what = if rest.contains('{') && !rest.contains('}') {
                        "unterminated `%{`"
                    } else {
                        "`%` at the end of the format"
                    };
                    return Err(FormatError::Syntax { at, what: what.into() });
                }
            }
        } else if let Ok((r, lit)) = literal(rest) {
            tokens.push(Token::Lit(lit.to_owned()));
            rest = r;
        }
    }
    Ok(tokens)
}

fn other() -> Kind {
    Kind::Other { list: false, class: None }
}

fn digits() -> Kind {
    Kind::Other { list: false, class: Some(Class::Digits) }
}

/// What an apache directive is.
fn kind(d: &Directive<'_>) -> Kind {
    if d.trailer.is_some() {
        return other();
    }
    let arg = d.arg;
    match d.letter {
        'a' if arg.is_none() => Kind::ClientAddr { rank: 0 },
        'a' => Kind::Other { list: false, class: Some(Class::Address) },
        'h' => Kind::ClientAddr { rank: 1 },
        'u' => Kind::RemoteUser,
        't' => time_kind(arg),
        'r' => Kind::Request,
        'm' => Kind::Method,
        'U' => Kind::Target { with_query: false },
        'q' => Kind::Query { leading_q: true },
        'H' => Kind::Protocol,
        's' => Kind::Status { rank: if d.modifiers.contains('>') { 0 } else { 1 } },
        'b' | 'B' => Kind::Bytes { rank: 0 },
        'O' => Kind::Bytes { rank: 1 },
        'D' => Kind::Duration { unit: DurUnit::Micros, rank: 0 },
        'T' => match arg.map(str::to_ascii_lowercase).as_deref() {
            Some("us") => Kind::Duration { unit: DurUnit::Micros, rank: 0 },
            Some("ms") => Kind::Duration { unit: DurUnit::Millis, rank: 1 },
            _ => Kind::Duration { unit: DurUnit::Seconds, rank: 2 },
        },
        'V' => Kind::Host { rank: 0 },
        'v' => Kind::Host { rank: 2 },
        'i' => match arg.map(str::to_ascii_lowercase).as_deref() {
            Some("referer") => Kind::Referer,
            Some("user-agent") => Kind::Agent,
            Some("x-forwarded-for") => Kind::Xff,
            Some("host") => Kind::Host { rank: 1 },
            _ => other(),
        },
        'p' | 'P' | 'k' | 'I' | 'S' => digits(),
        _ => other(),
    }
}

fn valid_strftime(fmt: &str) -> bool {
    chrono::format::StrftimeItems::new(fmt).all(|item| !matches!(item, chrono::format::Item::Error))
}

/// `%t` and `%{…}t`.
fn time_kind(arg: Option<&str>) -> Kind {
    let Some(arg) = arg else {
        return Kind::TimeLocal { bracketed: true };
    };
    let arg = arg.strip_prefix("begin:").or_else(|| arg.strip_prefix("end:")).unwrap_or(arg);
    match arg {
        "sec" => Kind::TimeEpoch { unit: EpochUnit::Seconds },
        "msec" => Kind::TimeEpoch { unit: EpochUnit::Millis },
        "usec" => Kind::TimeEpoch { unit: EpochUnit::Micros },
        "msec_frac" => Kind::TimeFrac { scale: 1000 },
        "usec_frac" => Kind::TimeFrac { scale: 1 },
        "%d/%b/%Y:%H:%M:%S %z" => Kind::TimeLocal { bracketed: false },
        "" => Kind::TimeLocal { bracketed: true },
        fmt if valid_strftime(fmt) => Kind::TimeStrftime { fmt: fmt.into(), spaces: fmt.matches(' ').count() },
        // Not a format chrono understands: carried as an extra rather than failing each line.
        _ => other(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(fmt: &str) -> Vec<String> {
        tokenize(fmt)
            .unwrap()
            .into_iter()
            .map(|t| match t {
                Token::Lit(l) => format!("L({l})"),
                Token::Field { name, .. } => name,
            })
            .collect()
    }

    #[test]
    fn directives() {
        assert_eq!(
            names(r#"%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" %400,501{User-agent}i %!200{X}e %% %{c}a %{X}^ti"#),
            [
                "%h",
                "L( )",
                "%l",
                "L( )",
                "%u",
                "L( )",
                "%t",
                "L( \")",
                "%r",
                "L(\" )",
                "%>s",
                "L( )",
                "%b",
                "L( \")",
                "%{Referer}i",
                "L(\" )",
                "%400,501{User-agent}i",
                "L( )",
                "%!200{X}e",
                "L( )",
                "L(%)",
                "L( )",
                "%{c}a",
                "L( )",
                "%{X}^ti"
            ]
        );
    }

    #[test]
    fn kinds() {
        let t = tokenize("%>s %s %{User-Agent}i %{usec_frac}t %{%Y-%m-%d %H:%M:%S}t %{ms}T").unwrap();
        let kinds: Vec<Kind> = t
            .into_iter()
            .filter_map(|t| match t {
                Token::Field { kind, .. } => Some(kind),
                Token::Lit(_) => None,
            })
            .collect();
        assert_eq!(kinds[0], Kind::Status { rank: 0 });
        assert_eq!(kinds[1], Kind::Status { rank: 1 });
        assert_eq!(kinds[2], Kind::Agent);
        assert_eq!(kinds[3], Kind::TimeFrac { scale: 1 });
        assert_eq!(kinds[4], Kind::TimeStrftime { fmt: "%Y-%m-%d %H:%M:%S".into(), spaces: 1 });
        assert_eq!(kinds[5], Kind::Duration { unit: DurUnit::Millis, rank: 1 });
    }

    #[test]
    fn syntax_errors() {
        assert!(tokenize("%h %{Referer").is_err());
        assert!(tokenize("%h %").is_err());
        let t = tokenize("%{%Y-%}t").unwrap();
        assert!(matches!(&t[0], Token::Field { kind: Kind::Other { .. }, .. }), "an invalid strftime is an extra");
    }
}
