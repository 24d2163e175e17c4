//! The hot path allocates nothing: parsing plain (escape-free, UTF-8) lines and reading lines
//! make no heap allocation per line. A counting global allocator proves it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use sitelog_ingest::format::{Escape, Extras, LogFormat};
use sitelog_ingest::lines::{Line, LineReader};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Counts only on the thread under test (the harness allocates on others).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

const AGENTS: [&str; 3] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
];

/// 10 000 plain lines in `fmt` (escape-free ASCII, as nearly all real lines are).
fn lines(fmt: &LogFormat) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..10_000u32 {
        let rec = sitelog_schema::AccessRecord {
            ts_micros: 1_791_629_736_000_000 + i as i64 * 1_000_000,
            tz_offset_secs: 10_800,
            host: format!("site{}.example.fi", i % 50).into(),
            client_ip: Some(if i % 7 == 0 {
                std::net::IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16])
            } else {
                std::net::IpAddr::from([203, 0, (i >> 8) as u8, i as u8])
            }),
            method: if i % 9 == 0 { "POST" } else { "GET" }.into(),
            path: format!("/blog/post-{i}/").into(),
            query: if i % 3 == 0 { "ver=6.6.2" } else { "" }.into(),
            protocol: ["HTTP/1.1", "HTTP/2.0", "HTTP/3.0"][i as usize % 3].into(),
            status: [200, 304, 404, 502][i as usize % 4],
            bytes_sent: i as u64 * 37,
            referer: if i % 2 == 0 { "https://www.google.com/" } else { "" }.into(),
            user_agent: AGENTS[i as usize % 3].into(),
            request_time_us: Some(i as u64 % 900 * 1000),
            upstream_time_us: Some(i as u64 % 800 * 1000),
            upstream_count: 1,
            cache_status: "MISS".into(),
            ..Default::default()
        };
        fmt.render(&rec, &[("$upstream_addr", "unix:/run/php/php8.3-fpm.sock")], &mut out);
        out.push(b'\n');
    }
    out
}

#[test]
fn parsing_plain_lines_does_not_allocate() {
    let custom = concat!(
        r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "#,
        r#""$http_user_agent" "$http_x_forwarded_for" $host rt=$request_time urt="$upstream_response_time" "#,
        r#"ua="$upstream_addr" cs=$upstream_cache_status"#
    );
    let mut formats: Vec<LogFormat> = LogFormat::BUILTIN_NAMES.iter().map(|n| LogFormat::builtin(n).unwrap()).collect();
    formats.push(LogFormat::nginx(custom, Escape::Default).unwrap());
    formats.push(LogFormat::builtin("main").unwrap().with_trusted_proxies(vec!["10.0.0.0/8".parse().unwrap()]));
    for fmt in &formats {
        let data = lines(fmt);
        let mut parsed = 0usize;
        let n = allocations(|| {
            for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let rec = fmt.parse_line(line).expect("generated lines parse");
                parsed += rec.path.len();
            }
        });
        assert!(parsed > 0);
        assert_eq!(n, 0, "{}: allocations while parsing 10 000 lines", fmt.source());

        // With extras: the reusable buffers grow on the first pass, then stay.
        let mut extras = Extras::new();
        let mut pass = || {
            for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                fmt.parse_line_with_extras(line, &mut extras).expect("parses");
            }
        };
        pass();
        assert_eq!(allocations(pass), 0, "{}: allocations with extras", fmt.source());
    }
}

#[test]
fn reading_lines_does_not_allocate() {
    let data = lines(&LogFormat::builtin("combined").unwrap());
    let mut reader = LineReader::new(&data[..]);
    let mut count = 0;
    let n = allocations(|| {
        while let Some(item) = reader.next_line().expect("in-memory") {
            assert!(matches!(item, Line::Complete { .. }));
            count += 1;
        }
    });
    assert_eq!(count, 10_000);
    assert_eq!(n, 0, "allocations while reading 10 000 lines");
}
