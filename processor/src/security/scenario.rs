//! Scenario definitions: what a scenario matches (a filter over one stored row), how it counts
//! (leaky bucket or distinct values in a window, in event time), and when it fires. The
//! built-in set is `scenarios.toml`; `[security.scenarios.NAME]` in processor.toml overrides
//! thresholds.

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder};
use serde::{Deserialize, Serialize};

use super::fasthash::FastMap;
use crate::store::rows::AccessLogRow;

const BUILTIN: &str = include_str!("scenarios.toml");
const SCANNERS: &str = include_str!("scanners.txt");

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenarios: {0}")]
    Parse(String),
    #[error("scenario {name}: {msg}")]
    Invalid { name: String, msg: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Leaky,
    Distinct,
}

/// What a `distinct` scenario counts distinct values of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistinctField {
    Path,
    PathQuery,
    QueryAuthor,
}

/// Conditions on one row; every condition given must hold (lists: any element), and when
/// `any` is given, at least one of its filters must hold too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    pub methods: Vec<String>,
    pub path_prefix: Vec<String>,
    pub path_suffix: Vec<String>,
    pub path_contains: Vec<String>,
    /// `prefix*suffix` patterns (one `*`).
    pub path_glob: Vec<String>,
    /// Query parameters that must be present (`author` matches `author=3`).
    pub query_param: Vec<String>,
    /// Status codes or ranges: `"404"`, `"400-499"`.
    pub status: Vec<String>,
    pub request_class: Vec<String>,
    /// A named user-agent list (`scanners`: scanners.txt).
    pub user_agent_list: Option<String>,
    pub exclude_known_bots: bool,
    pub exclude_static: bool,
    pub any: Vec<Filter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Where the rule and its default thresholds come from.
    pub source: String,
    pub severity: String,
    pub kind: Kind,
    #[serde(default)]
    pub capacity: f64,
    #[serde(default)]
    pub leak_secs: f64,
    pub distinct: Option<DistinctField>,
    #[serde(default)]
    pub threshold: usize,
    #[serde(default)]
    pub window_secs: u64,
    pub cooldown_secs: u64,
    /// Matching requests of one group that make a cross-tenant near-miss signal (0 = none).
    #[serde(default)]
    pub signal_at: u32,
    #[serde(default)]
    pub filter: Filter,
}

/// Per-scenario overrides in processor.toml.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Override {
    pub enabled: Option<bool>,
    pub capacity: Option<f64>,
    pub leak_secs: Option<f64>,
    pub threshold: Option<usize>,
    pub window_secs: Option<u64>,
    pub cooldown_secs: Option<u64>,
    pub severity: Option<String>,
}

#[derive(Deserialize)]
struct File {
    scenario: Vec<Scenario>,
}

/// The built-in scenarios, with `overrides` applied (disabled ones removed).
pub fn load(overrides: &BTreeMap<String, Override>) -> Result<Vec<Scenario>, ScenarioError> {
    let mut list = toml::from_str::<File>(BUILTIN).map_err(|e| ScenarioError::Parse(e.to_string()))?.scenario;
    for name in overrides.keys() {
        if !list.iter().any(|s| &s.name == name) {
            return Err(ScenarioError::Invalid { name: name.clone(), msg: "no such scenario".into() });
        }
    }
    list.retain(|s| overrides.get(&s.name).and_then(|o| o.enabled) != Some(false));
    for s in &mut list {
        if let Some(o) = overrides.get(&s.name) {
            s.capacity = o.capacity.unwrap_or(s.capacity);
            s.leak_secs = o.leak_secs.unwrap_or(s.leak_secs);
            s.threshold = o.threshold.unwrap_or(s.threshold);
            s.window_secs = o.window_secs.unwrap_or(s.window_secs);
            s.cooldown_secs = o.cooldown_secs.unwrap_or(s.cooldown_secs);
            if let Some(sev) = &o.severity {
                s.severity = sev.clone();
            }
        }
        s.validate()?;
    }
    Ok(list)
}

impl Scenario {
    fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |msg: &str| Err(ScenarioError::Invalid { name: self.name.clone(), msg: msg.into() });
        if !["low", "medium", "high", "critical"].contains(&self.severity.as_str()) {
            return bad("severity must be low, medium, high or critical");
        }
        match self.kind {
            Kind::Leaky if !(self.capacity >= 1.0 && self.leak_secs > 0.0) => {
                bad("leaky needs capacity >= 1 and leak_secs > 0")
            }
            Kind::Distinct if self.distinct.is_none() || self.threshold < 2 || self.window_secs == 0 => {
                bad("distinct needs `distinct`, threshold >= 2 and window_secs > 0")
            }
            _ => Ok(()),
        }
    }
}

/// A filter made ready to run: status ranges parsed, user-agent lists built.
pub struct Matcher {
    methods: Vec<String>,
    path_prefix: Affixes,
    path_suffix: Affixes,
    path_glob: Vec<(String, String)>,
    query_param: Vec<String>,
    status: Vec<(u16, u16)>,
    request_class: Vec<String>,
    /// Whether the row's user agent must be on the scanners list (decided once per row by the
    /// detector, cached per agent: see [`ScannerList`]).
    scanner_agent: bool,
    /// `path_contains` as one searcher (one pass over the path whatever the list's length).
    path_contains: Option<Substrings>,
    exclude_known_bots: bool,
    exclude_static: bool,
    any: Vec<Matcher>,
}

/// The scanners list (`scanners.txt`) with a cache of verdicts per user agent: agents repeat
/// far more than they vary, and a hash lookup (the fast keyed hash of `fasthash`) is cheaper
/// than a scan of the agent.
pub struct ScannerList {
    ac: AhoCorasick,
    cache: FastMap<Box<str>, bool>,
}

impl Default for ScannerList {
    fn default() -> Self {
        let pats: Vec<&str> =
            SCANNERS.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        let ac = AhoCorasickBuilder::new().ascii_case_insensitive(true).build(pats).expect("scanners.txt builds");
        ScannerList { ac, cache: FastMap::default() }
    }
}

impl ScannerList {
    pub fn is_scanner(&mut self, user_agent: &str) -> bool {
        if let Some(&v) = self.cache.get(user_agent) {
            return v;
        }
        let v = self.ac.is_match(user_agent);
        if self.cache.len() >= 50_000 {
            self.cache.clear(); // bounded: a spray of random agents cannot grow it
        }
        self.cache.insert(user_agent.into(), v);
        v
    }
}

/// Path prefixes or suffixes with a one-byte pre-check: the set of the bytes the affixes have
/// at one position (a prefix's second byte — the first is always `/` — or a suffix's last).
/// A path whose byte there is not in the set matches none of them, and most paths are
/// rejected by that one lookup instead of a comparison per affix.
struct Affixes {
    list: Vec<String>,
    suffix: bool,
    /// 256-bit set; `None` when some affix is too short to have the byte.
    bytes: Option<[u64; 4]>,
}

impl Affixes {
    fn new(list: Vec<String>, suffix: bool) -> Self {
        let probe = |s: &[u8]| if suffix { s.last().copied() } else { s.get(1).copied() };
        let bytes = list.iter().map(|a| probe(a.as_bytes())).collect::<Option<Vec<u8>>>().map(|v| {
            let mut set = [0u64; 4];
            for b in v {
                set[b as usize >> 6] |= 1 << (b & 63);
            }
            set
        });
        Affixes { list, suffix, bytes }
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    #[inline]
    fn any(&self, path: &str) -> bool {
        if let Some(set) = &self.bytes {
            let b = if self.suffix { path.as_bytes().last() } else { path.as_bytes().get(1) };
            match b {
                Some(&b) if set[b as usize >> 6] >> (b & 63) & 1 != 0 => {}
                _ => return false,
            }
        }
        if self.suffix {
            self.list.iter().any(|a| path.ends_with(a.as_str()))
        } else {
            self.list.iter().any(|a| path.starts_with(a.as_str()))
        }
    }
}

/// Whether any of a few substrings occurs. The packed (SIMD "Teddy") searcher takes ~15 ns on
/// a typical path where the automaton's prefilter, stopping at every `/`, took ~55 ns; the
/// automaton remains for what the packed searcher cannot take (empty or too many patterns, or
/// a CPU without its instructions).
enum Substrings {
    Packed(aho_corasick::packed::Searcher, Option<u8>),
    Automaton(AhoCorasick),
}

/// A punctuation byte every pattern contains, if there is one (`.` for the built-in
/// sensitive files): a path without it matches none, and one `memchr` tells.
fn required_byte(patterns: &[String]) -> Option<u8> {
    b".~_-=%@!$:".iter().copied().find(|b| patterns.iter().all(|p| p.as_bytes().contains(b)))
}

impl Substrings {
    fn new(patterns: &[String]) -> Self {
        let packed = if patterns.iter().any(|p| p.is_empty()) {
            None
        } else {
            aho_corasick::packed::Config::new().builder().extend(patterns).build()
        };
        match packed {
            Some(p) => Substrings::Packed(p, required_byte(patterns)),
            None => Substrings::Automaton(AhoCorasick::new(patterns).expect("path_contains builds")),
        }
    }

    #[inline]
    fn is_match(&self, hay: &str) -> bool {
        match self {
            Substrings::Packed(p, need) => need.is_none_or(|b| hay.as_bytes().contains(&b)) && p.find(hay).is_some(),
            Substrings::Automaton(a) => a.is_match(hay),
        }
    }
}

impl Matcher {
    pub fn new(f: &Filter, scenario: &str) -> Result<Self, ScenarioError> {
        let bad = |msg: String| ScenarioError::Invalid { name: scenario.to_owned(), msg };
        let status = f
            .status
            .iter()
            .map(|s| {
                let (a, b) = s.split_once('-').unwrap_or((s, s));
                match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
                    (Ok(a), Ok(b)) if a <= b => Ok((a, b)),
                    _ => Err(bad(format!("status '{s}' is not a code or range"))),
                }
            })
            .collect::<Result<_, _>>()?;
        let path_glob = f
            .path_glob
            .iter()
            .map(|g| {
                g.split_once('*')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| bad(format!("glob '{g}' needs one *")))
            })
            .collect::<Result<_, _>>()?;
        let scanner_agent = match f.user_agent_list.as_deref() {
            None => false,
            Some("scanners") => true,
            Some(other) => return Err(bad(format!("unknown user_agent_list '{other}' (known: scanners)"))),
        };
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
        Ok(Matcher {
            methods: f.methods.clone(),
            path_prefix: Affixes::new(lower(&f.path_prefix), false),
            path_suffix: Affixes::new(lower(&f.path_suffix), true),
            path_glob,
            // A name with `=` can never be a key: leave it out here, once, instead of per row
            // (a list of only such names still matches nothing: `impossible`).
            query_param: {
                let ok: Vec<String> = f.query_param.iter().filter(|q| !q.contains('=')).cloned().collect();
                if ok.is_empty() && !f.query_param.is_empty() {
                    vec![IMPOSSIBLE_PARAM.to_owned()]
                } else {
                    ok
                }
            },
            status,
            request_class: f.request_class.clone(),
            scanner_agent,
            path_contains: (!f.path_contains.is_empty()).then(|| Substrings::new(&lower(&f.path_contains))),
            exclude_known_bots: f.exclude_known_bots,
            exclude_static: f.exclude_static,
            any: f.any.iter().map(|a| Matcher::new(a, scenario)).collect::<Result<_, _>>()?,
        })
    }

    /// Whether `row` matches; `path` is its lower-cased path, `scanner` whether its user
    /// agent is on the scanners list. Cheap, selective conditions are tested first.
    pub fn matches(&self, row: &AccessLogRow, path: &str, scanner: bool) -> bool {
        if !self.status.is_empty() && !self.status.iter().any(|&(a, b)| a <= row.status && row.status <= b) {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m.eq_ignore_ascii_case(&row.method)) {
            return false;
        }
        if (self.exclude_known_bots && row.is_bot)
            || (self.exclude_static && row.request_class == "static")
            || (self.scanner_agent && !scanner)
        {
            return false;
        }
        if !self.request_class.is_empty() && !self.request_class.contains(&row.request_class) {
            return false;
        }
        if !self.path_prefix.is_empty() && !self.path_prefix.any(path) {
            return false;
        }
        if !self.path_suffix.is_empty() && !self.path_suffix.any(path) {
            return false;
        }
        if !self.path_glob.is_empty()
            && !self.path_glob.iter().any(|(a, b)| {
                path.len() >= a.len() + b.len() && path.starts_with(a.as_str()) && path.ends_with(b.as_str())
            })
        {
            return false;
        }
        if !self.query_param.is_empty() && !self.query_param.iter().any(|q| find_param(&row.query, q).is_some()) {
            return false;
        }
        if self.path_contains.as_ref().is_some_and(|c| !c.is_match(path)) {
            return false;
        }
        self.any.is_empty() || self.any.iter().any(|m| m.matches(row, path, scanner))
    }

    /// A necessary condition of `matches` on one field: `accept` holds for this filter's own
    /// condition on it and for at least one alternative of `any` (when given).
    fn may_accept(&self, accept: &dyn Fn(&Matcher) -> bool) -> bool {
        accept(self) && (self.any.is_empty() || self.any.iter().any(|a| a.may_accept(accept)))
    }

    /// Whether this filter (or one of its alternatives) asks for the scanners list.
    pub fn needs_scanner(&self) -> bool {
        self.scanner_agent || self.any.iter().any(Matcher::needs_scanner)
    }
}

/// The value of query parameter `name` (first occurrence), if present: the query split at
/// `&`, each part at its first `=` (a part without `=` has the value ""). Written as one scan
/// without iterators: it runs on every row with a query.
pub fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    if name.contains('=') {
        return None; // a key never contains `=`
    }
    find_param(query, name)
}

/// A parameter name no query can have (it contains `&`, where queries are split).
const IMPOSSIBLE_PARAM: &str = "&";

/// [`query_value`] for a name known to have no `=`.
#[inline]
fn find_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    if name == IMPOSSIBLE_PARAM {
        return None;
    }
    let mut rest = query;
    loop {
        let (part, next) = match rest.find('&') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if let Some(after) = part.strip_prefix(name) {
            if after.is_empty() {
                return Some("");
            }
            if let Some(v) = after.strip_prefix('=') {
                return Some(v);
            }
        }
        rest = next?;
    }
}

/// Statuses with a precomputed mask (others take every scenario to the full match).
const STATUS_TABLE: usize = 600;

/// Which scenarios a row can match at all, from its method, status, request class, bot flag
/// and scanner verdict, as a bit mask over the scenario list (bit i = scenario i), so that each
/// row runs only the matchers that may accept it: a page view from a browser skips every
/// POST-only, 4xx-only and scanner-only scenario without looking at them. Each mask is a
/// necessary condition of `Matcher::matches` (computed from the same filters), never a
/// sufficient one: the full match still decides, so the detector's behaviour is unchanged.
pub struct Dispatch {
    all: u64,
    /// Methods named by some filter, each with the scenarios that accept it.
    methods: Vec<(String, u64)>,
    /// Scenarios accepting a method no filter names.
    other_method: u64,
    status: Vec<u64>,
    /// Request classes some filter names (and `static`, which `exclude_static` names), each
    /// with the scenarios that accept it; every other class takes `other_class`.
    classes: Vec<(String, u64)>,
    other_class: u64,
    bot: u64,
    /// Scenarios whose match depends on the scanner verdict, and those that a non-scanner
    /// agent can still match.
    pub needs_scanner: u64,
    pub not_scanner: u64,
}

impl Dispatch {
    /// At most 64 matchers (the built-in list has 8; overrides cannot add any).
    pub fn new(matchers: &[&Matcher]) -> Option<Dispatch> {
        if matchers.len() > 64 {
            return None;
        }
        let mask = |accept: &dyn Fn(&Matcher) -> bool| -> u64 {
            matchers.iter().enumerate().filter(|(_, m)| m.may_accept(accept)).fold(0, |acc, (i, _)| acc | 1 << i)
        };
        let mut named: Vec<String> = Vec::new();
        fn collect(m: &Matcher, out: &mut Vec<String>) {
            for x in &m.methods {
                if !out.iter().any(|y| y.eq_ignore_ascii_case(x)) {
                    out.push(x.to_ascii_uppercase());
                }
            }
            m.any.iter().for_each(|a| collect(a, out));
        }
        matchers.iter().for_each(|m| collect(m, &mut named));
        let methods = named
            .into_iter()
            .map(|x| {
                let mk = mask(&|m| m.methods.is_empty() || m.methods.iter().any(|y| y.eq_ignore_ascii_case(&x)));
                (x, mk)
            })
            .collect();
        let status = (0..STATUS_TABLE as u16)
            .map(|st| mask(&|m| m.status.is_empty() || m.status.iter().any(|&(a, b)| a <= st && st <= b)))
            .collect();
        let mut named: Vec<String> = vec!["static".into()];
        fn collect_classes(m: &Matcher, out: &mut Vec<String>) {
            for x in &m.request_class {
                if !out.contains(x) {
                    out.push(x.clone());
                }
            }
            m.any.iter().for_each(|a| collect_classes(a, out));
        }
        matchers.iter().for_each(|m| collect_classes(m, &mut named));
        let classes = named
            .into_iter()
            .map(|c| {
                let mk = mask(&|m| {
                    (m.request_class.is_empty() || m.request_class.contains(&c)) && !(m.exclude_static && c == "static")
                });
                (c, mk)
            })
            .collect();
        Some(Dispatch {
            all: mask(&|_| true),
            methods,
            other_method: mask(&|m| m.methods.is_empty()),
            status,
            classes,
            other_class: mask(&|m| m.request_class.is_empty()),
            bot: mask(&|m| !m.exclude_known_bots),
            needs_scanner: matchers
                .iter()
                .enumerate()
                .filter(|(_, m)| m.needs_scanner())
                .fold(0, |acc, (i, _)| acc | 1 << i),
            not_scanner: mask(&|m| !m.scanner_agent),
        })
    }

    /// The scenarios `row` may match, before its user agent is looked at.
    #[inline]
    pub fn candidates(&self, row: &AccessLogRow) -> u64 {
        let method = match self.methods.iter().find(|(m, _)| m.eq_ignore_ascii_case(&row.method)) {
            Some((_, mask)) => *mask,
            None => self.other_method,
        };
        let status = self.status.get(row.status as usize).copied().unwrap_or(u64::MAX);
        let class = match self.classes.iter().find(|(c, _)| *c == row.request_class) {
            Some((_, mask)) => *mask,
            None => self.other_class,
        };
        let bot = if row.is_bot { self.bot } else { u64::MAX };
        self.all & method & status & class & bot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, path: &str, query: &str, status: u16, ua: &str) -> AccessLogRow {
        AccessLogRow {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            status,
            user_agent: ua.into(),
            request_class: crate::classify::request_class(method, path, query).as_str().into(),
            ..Default::default()
        }
    }

    fn matcher(name: &str) -> Matcher {
        let s = load(&BTreeMap::new()).unwrap().into_iter().find(|s| s.name == name).unwrap();
        Matcher::new(&s.filter, name).unwrap()
    }

    #[test]
    fn builtins_load_with_their_stable_names() {
        let names: Vec<String> = load(&BTreeMap::new()).unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "wp-login-bruteforce",
                "xmlrpc-abuse",
                "user-enumeration",
                "wp-scan",
                "sensitive-file-probe",
                "bad-user-agent",
                "http-probing",
                "aggressive-crawl"
            ]
        );
        let mut o = BTreeMap::new();
        o.insert("wp-scan".to_owned(), Override { enabled: Some(false), ..Default::default() });
        o.insert("xmlrpc-abuse".to_owned(), Override { capacity: Some(50.0), ..Default::default() });
        let l = load(&o).unwrap();
        assert!(!l.iter().any(|s| s.name == "wp-scan"));
        assert_eq!(l.iter().find(|s| s.name == "xmlrpc-abuse").unwrap().capacity, 50.0);
        o.insert("no-such".to_owned(), Override::default());
        assert!(load(&o).unwrap_err().to_string().contains("no such scenario"));
    }

    #[test]
    fn the_packed_substring_search_agrees_with_the_automaton() {
        let pats: Vec<String> =
            ["/.env", "/.git/", "wp-config.php.", "wp-config.php~", "/phpinfo.php", "/.aws/", "/.ssh/", "/.htpasswd"]
                .map(String::from)
                .to_vec();
        let packed = Substrings::new(&pats);
        assert!(matches!(packed, Substrings::Packed(_, Some(b'.'))), "this CPU builds the packed searcher");
        let ac = Substrings::Automaton(AhoCorasick::new(&pats).unwrap());
        let pieces = ["/", ".env", "/.git/", "wp-config.php", ".", "~", "phpinfo.php", "a", "/.ht", "passwd", "x/y"];
        let mut hits = 0;
        // Every sequence of up to four pieces: short paths (under Teddy's minimum length) and
        // long ones, matches at the start, the end and across pieces.
        let mut stack = vec![(String::new(), 0)];
        while let Some((p, depth)) = stack.pop() {
            assert_eq!(packed.is_match(&p), ac.is_match(&p), "{p:?}");
            hits += ac.is_match(&p) as usize;
            if depth < 4 {
                stack.extend(pieces.iter().map(|x| (format!("{p}{x}"), depth + 1)));
            }
        }
        assert!(hits > 1000, "{hits}");
    }

    #[test]
    fn query_values_as_the_query_is_split() {
        // The reference: split at `&`, each part at its first `=`.
        let reference = |q: &'static str, name: &str| {
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then_some(v)
            })
        };
        for q in [
            "",
            "author=3",
            "a=1&author=2",
            "author",
            "author=",
            "authority=3",
            "&author=4&author=5",
            "x&y=author",
            "=1",
            "&",
            "author=a=b",
        ] {
            for name in ["author", "a", "", "x", "y", "author=", "authority"] {
                assert_eq!(query_value(q, name), reference(q, name), "{q:?} {name:?}");
            }
        }
    }

    #[test]
    fn affix_prechecks_never_reject_a_match() {
        let pre = Affixes::new(vec!["/wp-json/wp/v2/users".into(), "/wp-content/".into(), "/x".into()], false);
        let suf = Affixes::new(vec![".sql".into(), ".bak".into(), ".sql.gz".into()], true);
        for p in [
            "/",
            "",
            "/w",
            "/x",
            "/xy",
            "/wp-content/a",
            "/wp-json/wp/v2/users/1",
            "/a.sql",
            "/b.sql.gz",
            "/c.bak",
            "/d.bak/",
            "/e.sq",
        ] {
            assert_eq!(pre.any(p), pre.list.iter().any(|a| p.starts_with(a.as_str())), "{p}");
            assert_eq!(suf.any(p), suf.list.iter().any(|a| p.ends_with(a.as_str())), "{p}");
        }
        // An affix too short for the pre-check turns it off.
        let short = Affixes::new(vec!["/".into()], false);
        assert!(short.bytes.is_none() && short.any("/anything"));
    }

    #[test]
    fn filters_match_what_their_scenarios_describe() {
        let m = |name: &str, r: &AccessLogRow| {
            let scanner = ScannerList::default().is_scanner(&r.user_agent);
            matcher(name).matches(r, &r.path.to_ascii_lowercase(), scanner)
        };
        assert!(m("wp-login-bruteforce", &row("POST", "/wp-login.php", "", 200, "x")));
        assert!(!m("wp-login-bruteforce", &row("GET", "/wp-login.php", "", 200, "x")));
        assert!(m("user-enumeration", &row("GET", "/", "author=3", 301, "x")));
        assert!(m("user-enumeration", &row("GET", "/wp-json/wp/v2/users", "", 200, "x")));
        assert!(!m("user-enumeration", &row("GET", "/", "authority=3", 200, "x")));
        assert!(m("wp-scan", &row("GET", "/wp-content/plugins/revslider/readme.txt", "", 404, "x")));
        assert!(m("wp-scan", &row("GET", "/wp-config-sample.php", "", 404, "x")));
        assert!(!m("wp-scan", &row("GET", "/wp-config-sample.php", "", 200, "x")));
        assert!(m("sensitive-file-probe", &row("GET", "/.env", "", 404, "x")));
        assert!(m("sensitive-file-probe", &row("GET", "/wp-config.php.bak", "", 404, "x")));
        assert!(m("sensitive-file-probe", &row("GET", "/backup.sql", "", 404, "x")));
        assert!(!m("sensitive-file-probe", &row("GET", "/environment-policy/", "", 200, "x")));
        assert!(m("bad-user-agent", &row("GET", "/", "", 200, "sqlmap/1.7.2#stable (https://sqlmap.org)")));
        assert!(!m("bad-user-agent", &row("GET", "/", "", 200, "Mozilla/5.0 (Windows NT 10.0)")));
        assert!(m("http-probing", &row("GET", "/login.aspx", "", 404, "Mozilla")));
        let mut bot = row("GET", "/", "", 200, "Googlebot");
        bot.is_bot = true;
        assert!(!m("aggressive-crawl", &bot));
        assert!(!m("aggressive-crawl", &row("GET", "/style.css", "", 200, "Mozilla")));
        assert!(m("aggressive-crawl", &row("GET", "/tuotteet/", "", 200, "Mozilla")));
    }
}
