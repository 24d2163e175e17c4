//! Access-log formats: nginx `log_format` and apache `LogFormat` strings compiled once into a
//! zero-copy parser plan, and the built-in formats.
//!
//! ```
//! use sitelog_ingest::format::LogFormat;
//!
//! let fmt = LogFormat::resolve("combined").unwrap();
//! let line = br#"203.0.113.7 - - [10/Oct/2026:13:55:36 +0300] "GET /wp-login.php HTTP/2.0" 200 4523 "-" "curl/8.5.0""#;
//! let rec = fmt.parse_line(line).unwrap();
//! assert_eq!((&*rec.method, &*rec.path, rec.status), ("GET", "/wp-login.php", 200));
//! ```
//!
//! Stages: `nginx.rs` / `apache.rs` tokenize a format string (nom), `config.rs` reads
//! `log_format` out of an nginx config, `plan.rs` compiles tokens into a plan, `exec.rs`
//! runs the plan over a line, `fast.rs` holds fused parsers for the common built-in layouts
//! (the hot path; they leave anything unusual to the plan), `time.rs`, `ip.rs`, `value.rs`
//! and `escape.rs` turn field bytes into typed values, `render.rs` writes records back as
//! log lines.

mod apache;
mod config;
mod escape;
/// Non-UTF-8 field text is kept reversibly (`\xHH`, backslashes doubled); these convert.
pub use escape::{escape_invalid_utf8, unescape_invalid_utf8};
mod exec;
mod fast;
mod ip;
mod nginx;
mod plan;
mod render;
mod time;
mod value;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sitelog_schema::AccessRecord;

pub use ip::{IpNet, IpNetError};

use escape::Decode;
use fast::Fast;
use plan::Plan;

/// Which server's format language a format is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Nginx,
    Apache,
}

/// nginx's `log_format … escape=` parameter: how variable values are escaped in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Escape {
    /// `"`, `\` and non-printable bytes as `\xHH` (nginx's default).
    #[default]
    Default,
    /// JSON string escapes (`escape=json`).
    Json,
    /// No escaping (`escape=none`).
    None,
}

impl FromStr for Escape {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(Escape::Default),
            "json" => Ok(Escape::Json),
            "none" => Ok(Escape::None),
            _ => Err(FormatError::Escape(s.to_owned())),
        }
    }
}

/// A format string or configuration that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("unknown built-in format `{0}` (built-ins: {builtins})", builtins = LogFormat::BUILTIN_NAMES.join(", "))]
    UnknownBuiltin(String),
    #[error("the format has no fields")]
    NoFields,
    #[error("fields {first} and {second} are not separated by any text, so where one ends is ambiguous")]
    Adjacent { first: String, second: String },
    #[error("{what} at byte {at} of the format")]
    Syntax { at: usize, what: String },
    #[error("no `log_format {name}` in the nginx configuration{}", if available.is_empty() { String::new() } else { format!(" (found: {})", available.join(", ")) })]
    NotFound { name: String, available: Vec<String> },
    #[error("nginx configuration, line {line}: {msg}")]
    Config { line: usize, msg: String },
    #[error("unknown escape mode `{0}` (expected default, json or none)")]
    Escape(String),
    #[error("`{0}` is neither a built-in format name nor a format string (nginx formats use `$variables`, apache formats `%directives`)")]
    Unrecognized(String),
}

/// Why a line did not match its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineErrorKind {
    /// The line is empty.
    Empty,
    /// A literal of the format was not found (shown as the text expected).
    Expected(Arc<str>),
    /// A field's value is not what the field holds (`timestamp`, `status`, …).
    Invalid(&'static str),
}

/// A line that does not match its format: what was expected, at which byte column (1-based),
/// in which field. Displays as `expected '" ' at column 57 (field $request)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    kind: LineErrorKind,
    column: usize,
    field: Option<Arc<str>>,
}

impl LineError {
    fn empty() -> Self {
        LineError { kind: LineErrorKind::Empty, column: 1, field: None }
    }

    fn expected(lit: &Arc<str>, at: usize, field: Option<&Arc<str>>) -> Self {
        LineError { kind: LineErrorKind::Expected(lit.clone()), column: at + 1, field: field.cloned() }
    }

    fn invalid(what: &'static str, at: usize, field: &Arc<str>) -> Self {
        LineError { kind: LineErrorKind::Invalid(what), column: at + 1, field: Some(field.clone()) }
    }

    pub fn kind(&self) -> &LineErrorKind {
        &self.kind
    }

    /// 1-based byte column where the problem was found.
    pub fn column(&self) -> usize {
        self.column
    }

    /// The field being read, as written in the format (`$request`, `%{User-Agent}i`).
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The reason without the column, for counting rejects by reason:
    /// `expected '" ' (field $request)`.
    pub fn reason_key(&self) -> String {
        let mut s = String::new();
        self.write(&mut s, false).ok();
        s
    }

    fn write(&self, f: &mut impl fmt::Write, column: bool) -> fmt::Result {
        match &self.kind {
            LineErrorKind::Empty => return f.write_str("empty line"),
            LineErrorKind::Expected(lit) => {
                f.write_str("expected '")?;
                for c in lit.chars() {
                    if c.is_control() {
                        write!(f, "{}", c.escape_default())?;
                    } else {
                        f.write_char(c)?;
                    }
                }
                f.write_char('\'')?;
            }
            LineErrorKind::Invalid(what) => write!(f, "invalid {what}")?,
        }
        if column {
            write!(f, " at column {}", self.column)?;
        }
        match &self.field {
            Some(field) => write!(f, " (field {field})"),
            None => f.write_str(" (start of line)"),
        }
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, true)
    }
}

impl std::error::Error for LineError {}

/// Fields of a line that have no place in [`AccessRecord`] (`$upstream_addr`, `%p`, unknown
/// variables), as `(name as written in the format, value)`. Reuse one across lines: after
/// the first few lines it no longer allocates.
#[derive(Debug, Default, Clone)]
pub struct Extras {
    items: Vec<(Arc<str>, usize, usize)>,
    arena: String,
}

impl Extras {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clear(&mut self) {
        self.items.clear();
        self.arena.clear();
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// `(name, value)` pairs in format order; `-` values are empty.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.items.iter().map(|(name, s, e)| (&**name, self.arena.get(*s..*e).unwrap_or("")))
    }

    /// The value of the named field (`$upstream_addr`, `%{X-Request-Id}i`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn push(&mut self, name: &Arc<str>, value: &str) {
        let start = self.arena.len();
        self.arena.push_str(value);
        self.items.push((name.clone(), start, self.arena.len()));
    }
}

/// nginx's predefined `combined` (what `access_log … combined;` writes).
const NGINX_COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;

/// A compiled log format. Compile once, then call [`LogFormat::parse_line`] per line.
#[derive(Debug, Clone)]
pub struct LogFormat {
    family: Family,
    escape: Escape,
    source: String,
    plan: Plan,
    /// The fused parser of a common layout, tried before the plan.
    fast: Option<Fast>,
    trusted: Vec<IpNet>,
}

impl LogFormat {
    /// Names accepted by [`LogFormat::builtin`].
    pub const BUILTIN_NAMES: &'static [&'static str] = &["combined", "common", "vhost_combined", "main", "json"];

    /// apache's `combined`; also parses nginx's `combined` (same layout, and nginx's `\xHH`
    /// escapes decode the same way).
    pub const COMBINED: &'static str = r#"%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i""#;
    /// apache's `common`.
    pub const COMMON: &'static str = r#"%h %l %u %t "%r" %>s %b"#;
    /// apache's `vhost_combined` (Debian's default for virtual hosts).
    pub const VHOST_COMBINED: &'static str = r#"%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i""#;
    /// nginx's `main` from the stock `nginx.conf`.
    pub const MAIN: &'static str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for""#;
    /// The JSON-lines format, for nginx as:
    ///
    /// ```nginx
    /// log_format json escape=json
    ///   '{"time":"$time_iso8601","remote_addr":"$remote_addr","remote_user":"$remote_user",'
    ///   '"host":"$host","request":"$request","status":$status,"body_bytes_sent":$body_bytes_sent,'
    ///   '"request_time":$request_time,"upstream_response_time":"$upstream_response_time",'
    ///   '"upstream_cache_status":"$upstream_cache_status","http_referer":"$http_referer",'
    ///   '"http_user_agent":"$http_user_agent","http_x_forwarded_for":"$http_x_forwarded_for"}';
    /// ```
    ///
    /// Values that can be empty are quoted (nginx writes nothing for them in JSON mode).
    pub const JSON: &'static str = concat!(
        r#"{"time":"$time_iso8601","remote_addr":"$remote_addr","remote_user":"$remote_user","#,
        r#""host":"$host","request":"$request","status":$status,"body_bytes_sent":$body_bytes_sent,"#,
        r#""request_time":$request_time,"upstream_response_time":"$upstream_response_time","#,
        r#""upstream_cache_status":"$upstream_cache_status","http_referer":"$http_referer","#,
        r#""http_user_agent":"$http_user_agent","http_x_forwarded_for":"$http_x_forwarded_for"}"#
    );

    /// A built-in format by name: `combined`, `common`, `vhost_combined`, `main`, `json`.
    pub fn builtin(name: &str) -> Option<LogFormat> {
        let built = match name {
            "combined" => LogFormat::apache(Self::COMBINED),
            "common" => LogFormat::apache(Self::COMMON),
            "vhost_combined" => LogFormat::apache(Self::VHOST_COMBINED),
            "main" => LogFormat::nginx(Self::MAIN, Escape::Default),
            "json" => LogFormat::nginx(Self::JSON, Escape::Json),
            _ => return None,
        };
        built.ok()
    }

    /// Compiles an nginx `log_format` string (the concatenated quoted parts, without quotes).
    pub fn nginx(format: &str, escape: Escape) -> Result<LogFormat, FormatError> {
        let decode = match escape {
            Escape::Default => Decode::Backslash,
            Escape::Json => Decode::Json,
            Escape::None => Decode::None,
        };
        let plan = Plan::build(nginx::tokenize(format)?, decode)?;
        let fast = Fast::detect(&plan);
        Ok(LogFormat { family: Family::Nginx, escape, source: format.to_owned(), plan, fast, trusted: Vec::new() })
    }

    /// Compiles an apache `LogFormat` string; `\"` as written inside httpd.conf quotes is
    /// understood.
    pub fn apache(format: &str) -> Result<LogFormat, FormatError> {
        let plan = Plan::build(apache::tokenize(format)?, Decode::Backslash)?;
        let fast = Fast::detect(&plan);
        Ok(LogFormat {
            family: Family::Apache,
            escape: Escape::Default,
            source: format.to_owned(),
            plan,
            fast,
            trusted: Vec::new(),
        })
    }

    /// The `log_format NAME …;` directive of an nginx configuration file. `combined` is
    /// nginx's predefined format unless the file defines it.
    pub fn from_nginx_config(config: &str, name: &str) -> Result<LogFormat, FormatError> {
        let directives = config::log_formats(config)?;
        match directives.iter().find(|d| d.name == name) {
            Some(d) => LogFormat::nginx(&d.format, d.escape),
            None if name == "combined" => LogFormat::nginx(NGINX_COMBINED, Escape::Default),
            None => Err(FormatError::NotFound {
                name: name.to_owned(),
                available: directives.into_iter().map(|d| d.name).collect(),
            }),
        }
    }

    /// The names of the `log_format` directives in an nginx configuration, in order.
    pub fn nginx_config_names(config: &str) -> Result<Vec<String>, FormatError> {
        Ok(config::log_formats(config)?.into_iter().map(|d| d.name).collect())
    }

    /// What ops type: a built-in name, a pasted nginx format (has `$`), a pasted apache format
    /// (has `%`), or a whole pasted `log_format name '…';` / `LogFormat "…" name` directive.
    pub fn resolve(spec: &str) -> Result<LogFormat, FormatError> {
        let s = spec.trim();
        if let Some(f) = LogFormat::builtin(s) {
            return Ok(f);
        }
        if s.starts_with("log_format") && s.len() > 10 && s.as_bytes()[10].is_ascii_whitespace() {
            let text = if s.ends_with(';') { s.to_owned() } else { format!("{s};") };
            let first = config::log_formats(&text)?.into_iter().next();
            return match first {
                Some(d) => LogFormat::nginx(&d.format, d.escape),
                None => Err(FormatError::Unrecognized(spec.to_owned())),
            };
        }
        if let Some(rest) = s.strip_prefix("LogFormat ") {
            return LogFormat::apache(&unquote_apache_directive(rest));
        }
        if s.contains('$') {
            return LogFormat::nginx(spec, Escape::Default);
        }
        if s.contains('%') {
            return LogFormat::apache(spec);
        }
        if !s.contains(' ') && !s.is_empty() {
            return Err(FormatError::UnknownBuiltin(s.to_owned()));
        }
        Err(FormatError::Unrecognized(spec.to_owned()))
    }

    /// Takes the client address from X-Forwarded-For when the connecting peer is one of
    /// `proxies`: the first address from the right that is not a trusted proxy (as nginx's
    /// `real_ip_recursive on`). Needs the format to log `$http_x_forwarded_for` /
    /// `%{X-Forwarded-For}i`; the peer's own X-Forwarded-For is ignored when it is not trusted.
    pub fn with_trusted_proxies(mut self, proxies: Vec<IpNet>) -> LogFormat {
        self.trusted = proxies;
        self.fast = self.fast.filter(|f| f.usable_with(&self.trusted));
        self
    }

    /// Parses one line (without its newline). Strings borrow from `line` unless an escape
    /// had to be decoded or bytes were not UTF-8; `source` is left for the caller to fill.
    #[inline]
    pub fn parse_line<'a>(&self, line: &'a [u8]) -> Result<AccessRecord<'a>, LineError> {
        match self.fast {
            Some(fast) => fast.parse_or(line, &self.plan, &self.trusted, |line| self.parse_line_plan(line)),
            None => self.parse_line_plan(line),
        }
    }

    /// [`LogFormat::parse_line`] by the plan. Not inlined: with a fused parser this is the rare
    /// path, and the (large) executor inlined into every caller's loop made that loop slower.
    #[inline(never)]
    fn parse_line_plan<'a>(&self, line: &'a [u8]) -> Result<AccessRecord<'a>, LineError> {
        let mut rec = AccessRecord::default();
        self.plan.run(line, &mut rec, &self.trusted, None)?;
        Ok(rec)
    }

    /// Like [`LogFormat::parse_line`], and fills `extras` (cleared first) with the fields that
    /// have no place in the record.
    pub fn parse_line_with_extras<'a>(
        &self,
        line: &'a [u8],
        extras: &mut Extras,
    ) -> Result<AccessRecord<'a>, LineError> {
        extras.clear();
        let mut rec = AccessRecord::default();
        self.plan.run(line, &mut rec, &self.trusted, Some(extras))?;
        Ok(rec)
    }

    /// The field that gives `record.host` (`$host`, `$http_host`, `$server_name`, `%V`, `%v`,
    /// `%{Host}i`), as written in the format; `None` when the format logs no host (the
    /// collector then takes it from the file's path).
    pub fn host_field(&self) -> Option<&str> {
        self.plan.host.map(|i| &*self.plan.fields[i].name)
    }

    /// Whether the format logs X-Forwarded-For (so trusted proxies can take effect).
    pub fn has_forwarded_for(&self) -> bool {
        self.plan.xff.is_some()
    }

    /// Every field, as written in the format, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> + '_ {
        self.plan.fields.iter().map(|f| &*f.name)
    }

    /// The fields carried as extras rather than record fields.
    pub fn extra_fields(&self) -> impl Iterator<Item = &str> + '_ {
        self.plan.fields.iter().filter(|f| !f.store).map(|f| &*f.name)
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// nginx's `escape=` mode (apache formats report `Default`).
    pub fn escape(&self) -> Escape {
        self.escape
    }

    /// The format string this was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted
    }
}

/// `"%h %l \"%r\"" combined` → `%h %l "%r"` (the nickname is dropped).
fn unquote_apache_directive(rest: &str) -> String {
    let rest = rest.trim();
    let Some(body) = rest.strip_prefix('"') else {
        return rest.to_owned();
    };
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push('\\');
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '"' => break,
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
