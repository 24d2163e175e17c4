//! Per-record classification: what kind of WordPress request it is, and whether a known bot
//! sent it. The bot list (`crawlers.txt`) is data, not code: one pattern per line.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// What a request asked for, as the usage rules and the security signals need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    Page,
    Static,
    WpAdmin,
    WpLogin,
    Xmlrpc,
    WpJson,
    Feed,
    WpCron,
    Other,
}

impl RequestClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestClass::Page => "page",
            RequestClass::Static => "static",
            RequestClass::WpAdmin => "wp-admin",
            RequestClass::WpLogin => "wp-login",
            RequestClass::Xmlrpc => "xmlrpc",
            RequestClass::WpJson => "wp-json",
            RequestClass::Feed => "feed",
            RequestClass::WpCron => "wp-cron",
            RequestClass::Other => "other",
        }
    }
}

/// File extensions served as static assets (lower case).
const STATIC_EXT: &[&str] = &[
    "css", "js", "mjs", "map", "png", "jpg", "jpeg", "gif", "webp", "avif", "svg", "ico", "bmp", "tif", "tiff", "woff",
    "woff2", "ttf", "otf", "eot", "mp4", "webm", "ogg", "mp3", "wav", "m4a", "mov", "pdf", "zip", "gz", "txt", "xml",
    "json", "csv",
];

/// Classifies by path (without the query) and, for `rest_route`, the query.
pub fn request_class(method: &str, path: &str, query: &str) -> RequestClass {
    let p = path;
    if p == "/wp-login.php" || p.ends_with("/wp-login.php") {
        return RequestClass::WpLogin;
    }
    if p == "/xmlrpc.php" || p.ends_with("/xmlrpc.php") {
        return RequestClass::Xmlrpc;
    }
    if p == "/wp-cron.php" {
        return RequestClass::WpCron;
    }
    if p.starts_with("/wp-admin") {
        return RequestClass::WpAdmin;
    }
    if p.starts_with("/wp-json") || query.starts_with("rest_route=") || query.contains("&rest_route=") {
        return RequestClass::WpJson;
    }
    if p == "/feed" || p.ends_with("/feed/") || p.ends_with("/feed") || p.ends_with("/rss2/") {
        return RequestClass::Feed;
    }
    let last = p.rsplit('/').next().unwrap_or("");
    if let Some((_, ext)) = last.rsplit_once('.') {
        if ext.len() <= 5 && STATIC_EXT.iter().any(|e| e.eq_ignore_ascii_case(ext)) {
            return RequestClass::Static;
        }
    }
    match method {
        "GET" | "HEAD" | "POST" => RequestClass::Page,
        _ => RequestClass::Other,
    }
}

/// Known-bot detection over the maintained list, with a bounded per-agent cache (agents
/// repeat a lot; the cache makes the common case one hash lookup).
pub struct BotDetector {
    ac: AhoCorasick,
    names: Vec<&'static str>,
    cache: HashMap<String, Option<u16>>,
}

const CRAWLERS: &str = include_str!("crawlers.txt");
const CACHE_MAX: usize = 50_000;

impl Default for BotDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl BotDetector {
    pub fn new() -> Self {
        let (patterns, names): (Vec<&str>, Vec<&str>) = CRAWLERS
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('\t'))
            .unzip();
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(&patterns)
            .expect("crawlers.txt patterns build");
        BotDetector { ac, names, cache: HashMap::new() }
    }

    /// The bot's name, or `None` for a (presumed) human browser. Empty and `-` agents are bots:
    /// no browser sends those.
    pub fn bot_name(&mut self, user_agent: &str) -> Option<&'static str> {
        if user_agent.is_empty() || user_agent == "-" {
            return Some("no-user-agent");
        }
        if let Some(hit) = self.cache.get(user_agent) {
            return hit.map(|i| self.names[i as usize]);
        }
        // The list order is the priority: take the listed-first pattern that occurs anywhere.
        let hit = self.ac.find_overlapping_iter_min(user_agent);
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(user_agent.to_owned(), hit);
        hit.map(|i| self.names[i as usize])
    }

    pub fn list_len(&self) -> usize {
        self.names.len()
    }
}

trait MinPattern {
    fn find_overlapping_iter_min(&self, hay: &str) -> Option<u16>;
}

impl MinPattern for AhoCorasick {
    fn find_overlapping_iter_min(&self, hay: &str) -> Option<u16> {
        // LeftmostFirst gives the leftmost match; we want the highest-priority pattern anywhere.
        let mut best: Option<u16> = None;
        let mut start = 0;
        while let Some(m) = self.find(aho_corasick::Input::new(hay).range(start..)) {
            let id = m.pattern().as_usize() as u16;
            best = Some(best.map_or(id, |b| b.min(id)));
            start = m.start() + 1;
            if start >= hay.len() {
                break;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        use RequestClass::*;
        let c = |m, p, q| request_class(m, p, q);
        assert_eq!(c("POST", "/wp-login.php", ""), WpLogin);
        assert_eq!(c("POST", "/xmlrpc.php", ""), Xmlrpc);
        assert_eq!(c("POST", "/wp-cron.php", "doing_wp_cron=1"), WpCron);
        assert_eq!(c("POST", "/wp-admin/admin-ajax.php", ""), WpAdmin);
        assert_eq!(c("GET", "/wp-json/wp/v2/posts", ""), WpJson);
        assert_eq!(c("GET", "/", "rest_route=/wp/v2/users"), WpJson);
        assert_eq!(c("GET", "/category/news/feed/", ""), Feed);
        assert_eq!(c("GET", "/wp-content/themes/x/style.css", ""), Static);
        assert_eq!(c("GET", "/wp-content/uploads/a.JPG", ""), Static);
        assert_eq!(c("GET", "/robots.txt", ""), Static);
        assert_eq!(c("GET", "/blog/hello.world/", ""), Page);
        assert_eq!(c("GET", "/", ""), Page);
        assert_eq!(c("PROPFIND", "/", ""), Other);
    }

    #[test]
    fn bots_by_the_list_not_by_guesswork() {
        let mut d = BotDetector::new();
        assert!(d.list_len() > 80, "a maintained list, not three regexes");
        assert_eq!(
            d.bot_name("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
            Some("Googlebot")
        );
        assert_eq!(d.bot_name("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)"), Some("GPTBot"));
        assert_eq!(d.bot_name("WordPress/6.6.2; https://example.fi"), Some("WordPress"));
        assert_eq!(
            d.bot_name("Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)"),
            Some("UptimeRobot")
        );
        assert_eq!(
            d.bot_name("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"),
            Some("facebookexternalhit")
        );
        assert_eq!(d.bot_name("-"), Some("no-user-agent"));
        for human in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Linux; Android 14; Cubot KingKong) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36",
            "Mozilla/5.0 (X11; Linux x86_64) \"QuoteBrowser\"/1.0 Gecko/20100101",
        ] {
            assert_eq!(d.bot_name(human), None, "{human}");
        }
        // A self-described crawler that is not listed is caught by the generic markers.
        assert_eq!(d.bot_name("FooCrawler/1.0 (+https://foo.example/)"), Some("crawler"));
        // Cached answers equal fresh ones.
        assert_eq!(
            d.bot_name("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
            Some("Googlebot")
        );
    }
}
