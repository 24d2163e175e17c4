//! The compiled plan: a format string becomes a prefix literal and a list of fields, each
//! knowing what it feeds in the record, how its extent is found, and the literal after it.
//!
//! Compilation decides everything that does not depend on the line: which of several
//! candidate fields fills a record slot (`$host` beats `$server_name`, `%>s` beats `%s`), how a
//! field ends (quoted and escape-aware, up to a literal, fixed width, a character class), and
//! which fields are carried as extras. The executor (`exec.rs`) then only follows the plan.

use std::sync::Arc;

use super::escape::Decode;
use super::time::EpochUnit;
use super::FormatError;

/// What a field is. Ranks order candidates for the same record slot (lower wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `$remote_addr` (0), `%a` (0), `%h` (1).
    ClientAddr { rank: u8 },
    /// `$remote_user`, `%u`.
    RemoteUser,
    /// `$time_local` (bare) / `%t` (with brackets).
    TimeLocal { bracketed: bool },
    /// `$time_iso8601`.
    TimeIso,
    /// `$msec`, `%{sec}t`, `%{msec}t`, `%{usec}t`.
    TimeEpoch { unit: EpochUnit },
    /// `%{msec_frac}t` (×1000) / `%{usec_frac}t` (×1): added to a whole-second time.
    TimeFrac { scale: u32 },
    /// `%{strftime}t`: chrono's slow path; `spaces` is how many spaces the value holds.
    TimeStrftime { fmt: Box<str>, spaces: usize },
    /// `$request`, `%r`.
    Request,
    /// `$request_method`, `%m`.
    Method,
    /// `$request_uri` and `$uri$is_args$args` (with query, rank 0); `$uri`, `%U` (rank 1).
    Target { with_query: bool },
    /// `$args`, `$query_string`; apache `%q` writes the leading `?`.
    Query { leading_q: bool },
    /// `$server_protocol`, `%H`.
    Protocol,
    /// `$status`, `%>s` (0), `%s` (1).
    Status { rank: u8 },
    /// `$body_bytes_sent`, `%b`, `%B` (0), `$bytes_sent`, `%O` (1).
    Bytes { rank: u8 },
    /// Request duration: `%D` / `%{us}T` (0), `$request_time` / `%{ms}T` (1), `%T` (2).
    Duration { unit: DurUnit, rank: u8 },
    /// `$upstream_response_time`: a list like `0.004, 0.010` or `0.001 : 0.002`.
    Upstream,
    /// `$upstream_status`: a list like `502, 200` or `502 : 200`; the last one is kept.
    UpstreamStatus,
    /// `$upstream_cache_status`.
    Cache,
    /// `$host`, `%V` (0), `$http_host`, `%{Host}i` (1), `$server_name`, `%v` (2).
    Host { rank: u8 },
    /// `$http_referer`, `%{Referer}i`.
    Referer,
    /// `$http_user_agent`, `%{User-Agent}i`.
    Agent,
    /// `$http_x_forwarded_for`, `%{X-Forwarded-For}i`: an extra, and the source of the client
    /// address when trusted proxies are configured.
    Xff,
    /// Anything else: carried as a named extra. `list`: may hold `a, b` / `a : b` lists.
    Other { list: bool, class: Option<Class> },
}

/// Units of a logged duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DurUnit {
    /// Decimal seconds (`0.123`).
    Seconds,
    Millis,
    Micros,
}

/// Characters a value can hold, for fields directly followed by another field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Alpha,
    Digits,
    Decimal,
    Hostname,
    Address,
    QuestionMark,
    /// A path without its query: up to `?`, a space or a quote.
    Path,
}

impl Class {
    fn bit(self) -> u8 {
        1 << self as u8
    }

    #[inline(always)]
    pub(crate) fn contains(self, b: u8) -> bool {
        CLASSES[b as usize] & self.bit() != 0
    }

    /// Length of the run of class bytes at the start of `hay`.
    #[inline(always)]
    pub(crate) fn run(self, hay: &[u8]) -> usize {
        let bit = self.bit();
        hay.iter().position(|&b| CLASSES[b as usize] & bit == 0).unwrap_or(hay.len())
    }
}

/// Class membership of every byte, one bit per [`Class`] (a table lookup per byte instead of
/// a `match`).
static CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut bits = 0u8;
        if b.is_ascii_alphabetic() {
            bits |= 1 << Class::Alpha as u8;
        }
        if b.is_ascii_digit() {
            bits |= 1 << Class::Digits as u8;
        }
        if b.is_ascii_digit() || b == b'.' || b == b'-' {
            bits |= 1 << Class::Decimal as u8;
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']') {
            bits |= 1 << Class::Hostname as u8;
        }
        if b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b'-') {
            bits |= 1 << Class::Address as u8;
        }
        if b == b'?' {
            bits |= 1 << Class::QuestionMark as u8;
        }
        if !matches!(b, b' ' | b'?' | b'"') {
            bits |= 1 << Class::Path as u8;
        }
        t[i] = bits;
        i += 1;
    }
    t
};

/// The record slot a kind feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Client,
    User,
    Time,
    TimeFrac,
    Request,
    Method,
    Target,
    Query,
    Protocol,
    Status,
    Bytes,
    Duration,
    Upstream,
    UpstreamStatus,
    Cache,
    Host,
    Referer,
    Agent,
}

impl Kind {
    fn slot(&self) -> Option<(Slot, u8)> {
        Some(match *self {
            Kind::ClientAddr { rank } => (Slot::Client, rank),
            Kind::RemoteUser => (Slot::User, 0),
            Kind::TimeLocal { .. } | Kind::TimeIso | Kind::TimeEpoch { .. } | Kind::TimeStrftime { .. } => {
                (Slot::Time, 0)
            }
            Kind::TimeFrac { .. } => (Slot::TimeFrac, 0),
            Kind::Request => (Slot::Request, 0),
            Kind::Method => (Slot::Method, 0),
            Kind::Target { with_query } => (Slot::Target, if with_query { 0 } else { 1 }),
            Kind::Query { .. } => (Slot::Query, 0),
            Kind::Protocol => (Slot::Protocol, 0),
            Kind::Status { rank } => (Slot::Status, rank),
            Kind::Bytes { rank } => (Slot::Bytes, rank),
            Kind::Duration { rank, .. } => (Slot::Duration, rank),
            Kind::Upstream => (Slot::Upstream, 0),
            Kind::UpstreamStatus => (Slot::UpstreamStatus, 0),
            Kind::Cache => (Slot::Cache, 0),
            Kind::Host { rank } => (Slot::Host, rank),
            Kind::Referer => (Slot::Referer, 0),
            Kind::Agent => (Slot::Agent, 0),
            Kind::Xff | Kind::Other { .. } => return None,
        })
    }

    /// Width of values that always have one (timestamps).
    fn fixed_width(&self) -> Option<usize> {
        match self {
            Kind::TimeLocal { bracketed: false } => Some(26),
            Kind::TimeLocal { bracketed: true } => Some(28),
            Kind::TimeIso => Some(25),
            _ => None,
        }
    }

    fn is_list(&self) -> bool {
        matches!(self, Kind::Upstream | Kind::UpstreamStatus | Kind::Xff | Kind::Other { list: true, .. })
    }

    /// Characters the value nearly always holds, for [`Extent::Scan`].
    fn scan_class(&self) -> Option<Class> {
        match self {
            Kind::ClientAddr { .. } => Some(Class::Address),
            Kind::Status { .. } | Kind::Bytes { .. } | Kind::Duration { .. } => Some(Class::Decimal),
            _ => None,
        }
    }

    /// Characters the value can hold, when that is narrow enough to end it without a literal.
    fn class(&self) -> Option<Class> {
        match self {
            Kind::ClientAddr { rank: 0 } => Some(Class::Address),
            Kind::Host { .. } => Some(Class::Hostname),
            Kind::Target { with_query: false } => Some(Class::Path),
            Kind::Status { .. } | Kind::Bytes { .. } => Some(Class::Digits),
            Kind::Duration { .. } | Kind::TimeEpoch { .. } | Kind::TimeFrac { .. } => Some(Class::Decimal),
            Kind::Other { class, .. } => *class,
            _ => None,
        }
    }
}

/// How a field's end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extent {
    /// The last field with nothing after it: the rest of the line.
    Rest,
    /// The last field with a literal after it: the line must end with that literal.
    Anchored,
    /// Up to the first occurrence of the literal after it.
    Until,
    /// Like `Until`, but `a, b` and `a : b` list separators do not end the value.
    UntilList,
    /// Between quotes: up to a `"` that is not escaped and starts the literal after it.
    Quoted,
    /// Fixed width (timestamps), falling back to `Until`.
    Fixed(usize),
    /// Skip this many spaces, then `Until` (strftime times holding spaces).
    UntilAfterSpaces(usize),
    /// The longest run of bytes of a class (a field directly followed by another field).
    Class(Class),
    /// A run of class bytes that the literal after it must follow, falling back to `Until`:
    /// one pass for addresses and numbers instead of a search and then a parse.
    Scan(Class),
}

/// One field of a compiled format.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    /// As written in the format: `$request`, `%{User-Agent}i`.
    pub name: Arc<str>,
    pub kind: Kind,
    /// Feeds the record; otherwise it is an extra.
    pub store: bool,
    /// The literal after the field (empty for the last field or before another field).
    pub after: Box<[u8]>,
    /// `after` for error messages.
    pub after_text: Arc<str>,
    pub extent: Extent,
    /// Between `"` and `"`: a `\"` inside does not end it.
    pub quoted: bool,
}

/// A compiled format.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub prefix: Box<[u8]>,
    pub prefix_text: Arc<str>,
    pub fields: Vec<Field>,
    pub decode: Decode,
    /// Index of the field giving `record.host`.
    pub host: Option<usize>,
    /// Index of the X-Forwarded-For field.
    pub xff: Option<usize>,
}

/// A piece of a format string, as the nginx and apache tokenizers produce them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    Lit(String),
    Field { name: String, kind: Kind },
}

impl Plan {
    pub(crate) fn build(tokens: Vec<Token>, decode: Decode) -> Result<Plan, FormatError> {
        // Merge adjacent literals; collect (field, literal-after) pairs.
        let mut prefix = String::new();
        let mut fields: Vec<(String, Kind, String)> = Vec::new();
        for t in tokens {
            match t {
                Token::Lit(s) => match fields.last_mut() {
                    Some((_, _, after)) => after.push_str(&s),
                    None => prefix.push_str(&s),
                },
                Token::Field { name, kind } => fields.push((name, kind, String::new())),
            }
        }
        if fields.is_empty() {
            return Err(FormatError::NoFields);
        }

        // Slot winners: lowest rank, then first occurrence.
        let mut best: Vec<(Slot, u8, usize)> = Vec::new();
        for (i, (_, kind, _)) in fields.iter().enumerate() {
            if let Some((slot, rank)) = kind.slot() {
                match best.iter_mut().find(|(s, _, _)| *s == slot) {
                    Some(b) if rank < b.1 => *b = (slot, rank, i),
                    Some(_) => {}
                    None => best.push((slot, rank, i)),
                }
            }
        }
        let winner = |slot: Slot| best.iter().find(|(s, _, _)| *s == slot).map(|b| b.2);
        let has_request = winner(Slot::Request).is_some();
        let target_has_query =
            winner(Slot::Target).is_some_and(|i| matches!(fields[i].1, Kind::Target { with_query: true }));
        let separate_query = !has_request && !target_has_query && winner(Slot::Query).is_some();

        let n = fields.len();
        let mut out = Vec::with_capacity(n);
        let mut prev_lit: &str = &prefix;
        for (i, (name, kind, after)) in fields.iter().enumerate() {
            let mut store = kind.slot().is_some_and(|(slot, _)| winner(slot) == Some(i));
            let request_part = matches!(kind, Kind::Method | Kind::Target { .. } | Kind::Query { .. } | Kind::Protocol);
            if store && request_part && has_request {
                store = false;
            }
            if store && matches!(kind, Kind::Query { .. }) && !separate_query {
                store = false;
            }
            if store && matches!(kind, Kind::TimeFrac { .. }) && winner(Slot::Time).is_none() {
                store = false;
            }
            let last = i + 1 == n;
            let quoted = prev_lit.ends_with('"') && after.starts_with('"');
            let extent = if after.is_empty() {
                if last {
                    Extent::Rest
                } else if let Some(w) = kind.fixed_width() {
                    Extent::Fixed(w)
                } else if let Some(c) = kind.class() {
                    Extent::Class(c)
                } else {
                    return Err(FormatError::Adjacent { first: name.clone(), second: fields[i + 1].0.clone() });
                }
            } else if last {
                Extent::Anchored
            } else if let Some(w) = kind.fixed_width() {
                Extent::Fixed(w)
            } else if quoted && decode != Decode::None {
                Extent::Quoted
            } else if let Kind::TimeStrftime { spaces, .. } = kind {
                Extent::UntilAfterSpaces(*spaces)
            } else if kind.is_list() && after.starts_with(' ') {
                Extent::UntilList
            } else if let Some(c) = kind.scan_class().filter(|c| !c.contains(after.as_bytes()[0])) {
                Extent::Scan(c)
            } else {
                Extent::Until
            };
            out.push(Field {
                name: Arc::from(name.as_str()),
                kind: kind.clone(),
                store,
                after: after.as_bytes().into(),
                after_text: Arc::from(after.as_str()),
                extent,
                quoted,
            });
            prev_lit = after;
        }
        let host = out.iter().position(|f| f.store && matches!(f.kind, Kind::Host { .. }));
        let xff = out.iter().position(|f| f.kind == Kind::Xff);
        Ok(Plan {
            prefix: prefix.as_bytes().into(),
            prefix_text: Arc::from(prefix.as_str()),
            fields: out,
            decode,
            host,
            xff,
        })
    }
}
