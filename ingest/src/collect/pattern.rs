//! Path patterns of a source: glob syntax plus one `{site}` capture.
//!
//! `*`, `?` and `[a-z]` match within one path segment, `**` matches any number of segments,
//! and `{site}` matches like `*` while capturing the site host, as in
//! `/var/log/sites/{site}/access.log`. Hand-written because the glob crates do not capture,
//! and the same matcher also recognises rotated names (`access.log.1`, `access.log-20250101.gz`)
//! for `--backfill`.

use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("pattern must be an absolute path")]
    NotAbsolute,
    #[error("at most one {{site}} per pattern")]
    TwoSites,
    #[error("unclosed '[' in pattern")]
    UnclosedClass,
    #[error("'**' must be a whole path segment")]
    BadDoubleStar,
    #[error("pattern is not valid UTF-8")]
    NotUtf8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(String),
    Star,
    Quest,
    Class { negated: bool, ranges: Vec<(char, char)> },
    Site,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    AnyDepth,
    Parts(Vec<Tok>),
}

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    raw: String,
    segs: Vec<Seg>,
}

/// What a path matched: the `{site}` capture, if the pattern has one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathMatch {
    pub site: Option<String>,
}

const MAX_DEPTH: usize = 24;

impl PathPattern {
    pub fn parse(raw: &str) -> Result<Self, PatternError> {
        if !raw.starts_with('/') {
            return Err(PatternError::NotAbsolute);
        }
        let mut segs = Vec::new();
        let mut sites = 0;
        for part in raw.split('/').filter(|p| !p.is_empty()) {
            if part == "**" {
                segs.push(Seg::AnyDepth);
                continue;
            }
            if part.contains("**") {
                return Err(PatternError::BadDoubleStar);
            }
            let toks = parse_segment(part)?;
            sites += toks.iter().filter(|t| matches!(t, Tok::Site)).count();
            segs.push(Seg::Parts(toks));
        }
        if sites > 1 {
            return Err(PatternError::TwoSites);
        }
        Ok(PathPattern { raw: raw.to_owned(), segs })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn has_site(&self) -> bool {
        self.segs.iter().any(|s| matches!(s, Seg::Parts(t) if t.contains(&Tok::Site)))
    }

    /// Full match of `path` against the pattern.
    pub fn matches(&self, path: &Path) -> Option<PathMatch> {
        self.match_path(path, false)
    }

    /// Like [`matches`](Self::matches), but the last segment may carry a rotation suffix that
    /// starts with `.`, `-` or `_` (`access.log.2.gz` matches `…/access.log`).
    pub fn matches_rotated(&self, path: &Path) -> Option<PathMatch> {
        self.match_path(path, true)
    }

    fn match_path(&self, path: &Path, rotated: bool) -> Option<PathMatch> {
        let s = path.to_str()?;
        if !s.starts_with('/') {
            return None;
        }
        let comps: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
        let mut site = None;
        if match_segs(&self.segs, &comps, rotated, &mut site) {
            Some(PathMatch { site })
        } else {
            None
        }
    }

    /// The longest directory prefix without wildcards: where discovery starts and what
    /// inotify watches.
    pub fn root(&self) -> PathBuf {
        let mut root = PathBuf::from("/");
        for seg in &self.segs[..self.segs.len().saturating_sub(1)] {
            match seg {
                Seg::Parts(t) if t.len() == 1 => match &t[0] {
                    Tok::Lit(l) => root.push(l),
                    _ => break,
                },
                _ => break,
            }
        }
        root
    }

    /// Existing regular files matching the pattern (symlinks followed, except while
    /// descending `**`, so a link loop cannot trap the walk).
    pub fn discover(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let root = PathBuf::from("/");
        walk(&self.segs, &root, 0, &mut out);
        out.sort();
        out.dedup();
        out
    }
}

fn parse_segment(part: &str) -> Result<Vec<Tok>, PatternError> {
    let mut toks = Vec::new();
    let mut lit = String::new();
    let mut rest = part;
    let flush = |lit: &mut String, toks: &mut Vec<Tok>| {
        if !lit.is_empty() {
            toks.push(Tok::Lit(std::mem::take(lit)));
        }
    };
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("{site}") {
            flush(&mut lit, &mut toks);
            toks.push(Tok::Site);
            rest = after;
            continue;
        }
        rest = &rest[c.len_utf8()..];
        match c {
            '*' => {
                flush(&mut lit, &mut toks);
                toks.push(Tok::Star);
            }
            '?' => {
                flush(&mut lit, &mut toks);
                toks.push(Tok::Quest);
            }
            '[' => {
                flush(&mut lit, &mut toks);
                let (tok, after) = parse_class(rest)?;
                toks.push(tok);
                rest = after;
            }
            c => lit.push(c),
        }
    }
    flush(&mut lit, &mut toks);
    Ok(toks)
}

/// Parses a character class after its `[`; returns the token and the text after the `]`.
fn parse_class(s: &str) -> Result<(Tok, &str), PatternError> {
    let mut negated = false;
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut i = 0;
    if matches!(chars.first(), Some((_, '!' | '^'))) {
        negated = true;
        i = 1;
    }
    let mut ranges = Vec::new();
    let first = i;
    while i < chars.len() {
        let (at, c) = chars[i];
        if c == ']' && i > first {
            let after = &s[at + 1..];
            return Ok((Tok::Class { negated, ranges }, after));
        }
        if i + 2 < chars.len() && chars[i + 1].1 == '-' && chars[i + 2].1 != ']' {
            ranges.push((c, chars[i + 2].1));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    Err(PatternError::UnclosedClass)
}

fn match_segs(segs: &[Seg], comps: &[&str], rotated: bool, site: &mut Option<String>) -> bool {
    let Some((first, rest)) = segs.split_first() else {
        return comps.is_empty();
    };
    match first {
        Seg::AnyDepth => (0..=comps.len()).any(|skip| match_segs(rest, &comps[skip..], rotated, site)),
        Seg::Parts(toks) => {
            let Some((c, crest)) = comps.split_first() else {
                return false;
            };
            let last = rest.is_empty();
            let mut cap = None;
            if match_toks(toks, c, rotated && last, &mut cap) && match_segs(rest, crest, rotated, site) {
                if cap.is_some() {
                    *site = cap;
                }
                true
            } else {
                false
            }
        }
    }
}

/// Backtracking match of one segment. With `suffix_ok`, text left over after the tokens is
/// accepted when it starts with a rotation separator.
fn match_toks(toks: &[Tok], s: &str, suffix_ok: bool, cap: &mut Option<String>) -> bool {
    let Some((t, rest)) = toks.split_first() else {
        return s.is_empty() || (suffix_ok && s.starts_with(['.', '-', '_']));
    };
    match t {
        Tok::Lit(l) => s.strip_prefix(l.as_str()).is_some_and(|r| match_toks(rest, r, suffix_ok, cap)),
        Tok::Quest => {
            let mut it = s.chars();
            it.next().is_some() && match_toks(rest, it.as_str(), suffix_ok, cap)
        }
        Tok::Class { negated, ranges } => {
            let mut it = s.chars();
            match it.next() {
                Some(c) => {
                    let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                    inside != *negated && match_toks(rest, it.as_str(), suffix_ok, cap)
                }
                None => false,
            }
        }
        Tok::Star | Tok::Site => {
            let is_site = matches!(t, Tok::Site);
            // Prefer the shortest match so a rotation suffix is not swallowed by the capture.
            for (i, _) in s.char_indices().chain(std::iter::once((s.len(), ' '))) {
                let head = &s[..i];
                if is_site && (head.is_empty() || head.starts_with('.')) {
                    continue;
                }
                if match_toks(rest, &s[i..], suffix_ok, cap) {
                    if is_site {
                        *cap = Some(head.to_owned());
                    }
                    return true;
                }
            }
            false
        }
    }
}

fn walk(segs: &[Seg], dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Some((first, rest)) = segs.split_first() else {
        return;
    };
    match first {
        Seg::AnyDepth => {
            if rest.is_empty() {
                collect_all(dir, depth, out);
                return;
            }
            walk(rest, dir, depth, out);
            let Ok(rd) = fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(segs, &e.path(), depth + 1, out);
                }
            }
        }
        Seg::Parts(toks) => {
            if let [Tok::Lit(l)] = toks.as_slice() {
                // A literal segment needs no directory listing.
                visit(rest, &dir.join(l), depth, out);
                return;
            }
            let Ok(rd) = fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                if match_toks(toks, name, false, &mut None) {
                    visit(rest, &e.path(), depth, out);
                }
            }
        }
    }
}

fn visit(rest: &[Seg], path: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(md) = fs::metadata(path) else { return };
    if rest.is_empty() {
        if md.is_file() {
            out.push(path.to_path_buf());
        }
    } else if md.is_dir() {
        walk(rest, path, depth + 1, out);
    }
}

fn collect_all(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            collect_all(&e.path(), depth + 1, out);
        } else if t.is_file() || (t.is_symlink() && fs::metadata(e.path()).is_ok_and(|m| m.is_file())) {
            out.push(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathPattern {
        PathPattern::parse(s).unwrap()
    }

    #[test]
    fn captures_the_site() {
        let pat = p("/var/log/sites/{site}/access.log");
        assert!(pat.has_site());
        let m = pat.matches(Path::new("/var/log/sites/shop.example.fi/access.log")).unwrap();
        assert_eq!(m.site.as_deref(), Some("shop.example.fi"));
        assert!(pat.matches(Path::new("/var/log/sites/a/b/access.log")).is_none());
        assert!(pat.matches(Path::new("/var/log/sites/a/access.log.1")).is_none());
        let m = pat.matches_rotated(Path::new("/var/log/sites/a.fi/access.log.2.gz")).unwrap();
        assert_eq!(m.site.as_deref(), Some("a.fi"));
        assert!(pat.matches_rotated(Path::new("/var/log/sites/a.fi/access.logx")).is_none());
    }

    #[test]
    fn site_within_a_file_name() {
        let pat = p("/var/log/nginx/{site}.access.log");
        let m = pat.matches(Path::new("/var/log/nginx/blog.example.com.access.log")).unwrap();
        assert_eq!(m.site.as_deref(), Some("blog.example.com"));
        let m = pat.matches_rotated(Path::new("/var/log/nginx/blog.example.com.access.log-20250101.gz")).unwrap();
        assert_eq!(m.site.as_deref(), Some("blog.example.com"));
    }

    #[test]
    fn wildcards_classes_and_double_star() {
        let pat = p("/srv/**/logs/*.log");
        assert!(pat.matches(Path::new("/srv/logs/a.log")).is_some());
        assert!(pat.matches(Path::new("/srv/x/y/logs/b.log")).is_some());
        assert!(pat.matches(Path::new("/srv/x/y/logs/b.txt")).is_none());
        let pat = p("/l/access[0-9]?.log");
        assert!(pat.matches(Path::new("/l/access1a.log")).is_some());
        assert!(pat.matches(Path::new("/l/accessxa.log")).is_none());
        let pat = p("/l/[!a]*");
        assert!(pat.matches(Path::new("/l/b")).is_some());
        assert!(pat.matches(Path::new("/l/a")).is_none());
    }

    #[test]
    fn bad_patterns() {
        assert_eq!(PathPattern::parse("rel/*.log"), Err(PatternError::NotAbsolute));
        assert_eq!(PathPattern::parse("/{site}/{site}.log"), Err(PatternError::TwoSites));
        assert_eq!(PathPattern::parse("/a/[ab"), Err(PatternError::UnclosedClass));
        assert_eq!(PathPattern::parse("/a/x**"), Err(PatternError::BadDoubleStar));
    }

    #[test]
    fn root_and_discovery() {
        let dir = std::env::temp_dir().join(format!("sitelog-pattern-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for site in ["a.fi", "b.fi"] {
            fs::create_dir_all(dir.join(site)).unwrap();
            fs::write(dir.join(site).join("access.log"), "x\n").unwrap();
            fs::write(dir.join(site).join("access.log.1"), "x\n").unwrap();
        }
        let pat = p(&format!("{}/{{site}}/access.log", dir.display()));
        assert_eq!(pat.root(), dir);
        let found = pat.discover();
        assert_eq!(found, vec![dir.join("a.fi/access.log"), dir.join("b.fi/access.log")]);
        let all = p(&format!("{}/**", dir.display())).discover();
        assert_eq!(all.len(), 4);
        fs::remove_dir_all(&dir).unwrap();
    }
}
