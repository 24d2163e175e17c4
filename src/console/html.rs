//! HTML and SVG pieces: escaping, the page layout, tables of figures and server-drawn charts.

use std::fmt::Write as _;

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Percent-encodes a path segment (hosts, addresses, ids in links).
pub fn seg(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// Decodes `%XX` in a path segment or query value (`+` is a space in queries only).
pub fn unseg(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which nav entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Now,
    Security,
    Usage,
    None,
}

/// A rendered page before the layout.
pub struct Page {
    pub title: String,
    /// The ClickHouse role the page reads with, and the user.
    pub role: String,
    pub nav: Nav,
    pub body: String,
    /// Reload every N seconds (the Now page).
    pub refresh: u32,
}

pub fn layout(p: &Page, login: &str, now: &str) -> String {
    let link = |href: &str, label: &str, n: Nav| {
        let class = if p.nav == n { " class=\"here\"" } else { "" };
        format!("<a href=\"{href}\"{class}>{label}</a>")
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · sitelog</title><link rel=\"icon\" href=\"/assets/icon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"/assets/console.css\"></head>\
         <body data-refresh=\"{refresh}\"><header><a class=\"brand\" href=\"/\">sitelog</a>{now_link}{sec}{usage}\
         <span class=\"who\">{login} · now {now}</span></header><main><h1>{title}</h1>\
         <p class=\"role\">Needs role: {role}</p>{body}</main>\
         <footer>sitelog console · server-rendered, no external requests</footer>\
         <script src=\"/assets/console.js\"></script></body></html>\n",
        title = esc(&p.title),
        refresh = p.refresh,
        now_link = link("/", "Now", Nav::Now),
        sec = link("/security", "Security", Nav::Security),
        usage = link("/usage", "Usage", Nav::Usage),
        login = esc(login),
        now = esc(now),
        role = esc(&p.role),
        body = p.body,
    )
}

/// A section with a heading.
pub fn section(title: &str, inner: &str) -> String {
    format!("<section><h2>{}</h2>{inner}</section>", esc(title))
}

/// A table: header cells (a leading `#` makes a numeric, right-aligned column) and rows of
/// already-escaped HTML cells, each row with its own attributes (e.g. `data-…`).
pub fn table(head: &[&str], rows: &[(String, Vec<String>)]) -> String {
    let mut o = String::from("<table><thead><tr>");
    let numeric: Vec<bool> = head.iter().map(|h| h.starts_with('#')).collect();
    for h in head {
        let (class, text) = match h.strip_prefix('#') {
            Some(t) => (" class=\"n\"", t),
            None => ("", *h),
        };
        let _ = write!(o, "<th{class}>{}</th>", esc(text));
    }
    o.push_str("</tr></thead><tbody>");
    for (attrs, cells) in rows {
        let _ = write!(o, "<tr{attrs}>");
        for (i, c) in cells.iter().enumerate() {
            let class = if numeric.get(i).copied().unwrap_or(false) { " class=\"n\"" } else { "" };
            let _ = write!(o, "<td{class}>{c}</td>");
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
    o
}

/// `1234567` → `1 234 567`.
pub fn num(n: u64) -> String {
    let s = n.to_string();
    let mut o = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && i % 3 == s.len() % 3 {
            o.push('\u{202f}');
        }
        o.push(c);
    }
    o
}

pub fn pct(r: f64) -> String {
    format!("{:.2} %", r * 100.0)
}

/// One line of a chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    /// (unix seconds, value)
    pub points: Vec<(i64, f64)>,
}

/// A line chart over `[from, to)` (unix seconds), y from 0 to the series' maximum; `fmt`
/// formats the y axis' top value; `marks` are vertical lines (e.g. an incident's opening).
pub fn line_chart(
    label: &str,
    from: i64,
    to: i64,
    series: &[Series],
    fmt: &dyn Fn(f64) -> String,
    marks: &[(i64, &str)],
) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 200.0, 56.0, 10.0, 10.0, 24.0);
    let span = (to - from).max(1) as f64;
    let max = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0_f64, f64::max);
    let mut ymax = if max > 0.0 { max * 1.1 } else { 1.0 };
    if label.contains("ratio") {
        // Ratios end at 100 %.
        ymax = ymax.min(1.0);
    }
    let x = |t: i64| left + (t - from) as f64 / span * (w - left - right);
    let y = |v: f64| top + (1.0 - v / ymax) * (h - top - bottom);
    let mut o = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(label)
    );
    let _ = write!(
        o,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#dfe3ea\"/>",
        w - left - right,
        h - top - bottom
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = ymax * frac;
        let _ =
            write!(o, "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>", left - 4.0, y(v) + 4.0, esc(&fmt(v)));
    }
    let tfmt = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0).map(|d| d.format("%m-%d %H:%M").to_string()).unwrap_or_default()
    };
    let _ = write!(o, "<text x=\"{left}\" y=\"{}\">{} UTC</text>", h - 6.0, tfmt(from));
    let _ = write!(o, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} UTC</text>", w - right, h - 6.0, tfmt(to));
    for (t, name) in marks {
        if (from..=to).contains(t) {
            let _ = write!(
                o,
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{top}\" y2=\"{1}\" stroke=\"#b9770e\" stroke-dasharray=\"4 3\"><title>{2}</title></line>",
                x(*t),
                h - bottom,
                esc(name)
            );
        }
    }
    for s in series {
        if s.points.is_empty() {
            continue;
        }
        let pts: Vec<String> = s.points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
        let _ = write!(
            o,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
            s.color,
            pts.join(" "),
            esc(s.name)
        );
    }
    o.push_str("</svg><div class=\"legend\">");
    for s in series {
        let _ = write!(o, "<span><i style=\"background:{}\"></i>{}</span>", s.color, esc(s.name));
    }
    o.push_str("</div>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_encodes() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(seg("2001:db8::1"), "2001:db8::1");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
        assert_eq!(unseg("a%20b%2Fc"), "a b/c");
        assert_eq!(unseg("100%"), "100%");
        assert_eq!(num(1234567), "1\u{202f}234\u{202f}567");
    }

    #[test]
    fn charts_are_svg_with_every_series() {
        let s = [Series { name: "req/min", color: "#2455a4", points: vec![(0, 1.0), (60, 3.0)] }];
        let svg = line_chart("x", 0, 120, &s, &|v| format!("{v:.0}"), &[(60, "opened")]);
        assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains("req/min"));
    }
}
