//! `sitelog parse`: parse access logs with a built-in or pasted format and print JSON lines.
//!
//! Every input line ends up as exactly one record (stdout) or one reject (stderr or
//! `--rejects`), and the summary's counts add up to the lines read. Over-long lines are
//! rejected without being buffered whole; a last line without a newline is parsed like any
//! other.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::ser::{Serialize, SerializeMap, Serializer};
use sitelog_ingest::format::{Escape, Extras, IpNet, LogFormat};
use sitelog_ingest::lines::{self, Line, LineReader, DEFAULT_MAX_LINE_BYTES};
use sitelog_schema::{AccessRecord, Reject, SourceId};

const AFTER_HELP: &str = "\
Formats:
  combined        apache/nginx combined: %h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\"
  common          apache common log format
  vhost_combined  apache: %v:%p %h %l %u %t \"%r\" %>s %O \"%{Referer}i\" \"%{User-Agent}i\"
  main            nginx.conf's main (combined + \"$http_x_forwarded_for\")
  json            nginx escape=json JSON lines (see the `json` built-in in the docs)
  '<string>'      a pasted nginx log_format string (has $variables; --escape applies) or
                  apache LogFormat string (has %directives), or a whole pasted
                  `log_format name '...';` / `LogFormat \"...\" name` line

Output:
  stdout  one JSON object per record, field names as in the schema's AccessRecord
          (`source.offset` is the line's byte offset), plus `extra` with the non-empty fields
          the record has no place for ($upstream_addr, %p, unknown variables)
  stderr  rejects as JSON lines {source_path, offset, line, reason, len, raw} (or to
          --rejects FILE; with --check and no --rejects only the first 10 are shown), then
          one summary line: lines, records, rejects by reason, MB/s

Exit status: 0 when every line parsed, 2 when some lines were rejected, 1 on errors.

Examples:
  sitelog parse --format combined /var/log/apache2/access.log.2.gz
  sitelog parse --log-format-file /etc/nginx/nginx.conf --name main --check access.log*
  tail -f access.log | sitelog parse --format '$remote_addr [$time_local] \"$request\" $status'";

#[derive(clap::Args, Debug)]
#[command(after_long_help = AFTER_HELP)]
pub struct ParseArgs {
    /// Log format: a built-in name (combined, common, vhost_combined, main, json) or a
    /// pasted nginx `log_format` / apache `LogFormat` string.
    #[arg(short, long, value_name = "NAME|FORMAT", required_unless_present = "log_format_file")]
    pub format: Option<String>,

    /// Read the format from an nginx configuration file's `log_format NAME ...;` directive.
    #[arg(long, value_name = "NGINX_CONF", requires = "name", conflicts_with = "format")]
    pub log_format_file: Option<PathBuf>,

    /// The `log_format` name to use from --log-format-file.
    #[arg(long, value_name = "NAME", requires = "log_format_file")]
    pub name: Option<String>,

    /// Treat the pasted --format string as an apache LogFormat (even if it holds `$`).
    #[arg(long, conflicts_with = "log_format_file")]
    pub apache: bool,

    /// nginx `escape=` mode of a pasted nginx format string.
    #[arg(long, value_name = "MODE", default_value = "default", value_parser = ["default", "json", "none"])]
    pub escape: String,

    /// Lines longer than this many bytes are rejected (and skipped without buffering them).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: usize,

    /// Parse and count only: print no records (validates a format over a large archive).
    #[arg(long)]
    pub check: bool,

    /// Write rejects as JSON lines to FILE instead of stderr.
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,

    /// A trusted proxy range (repeatable): the client is then the first untrusted address of
    /// X-Forwarded-For from the right, when the format logs it.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<IpNet>,

    /// Log files (`.gz` and multi-member gzip are decompressed); `-` or none reads stdin.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Rejects shown on stderr in `--check` mode without `--rejects`.
const CHECK_REJECTS_SHOWN: u64 = 10;

pub fn run(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let format = build_format(&args)?.with_trusted_proxies(args.trusted_proxies.clone());
    let files = if args.files.is_empty() { vec![PathBuf::from("-")] } else { args.files.clone() };

    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(256 * 1024, stdout.lock());
    let mut rejects: Box<dyn Write> = match &args.rejects {
        Some(p) => Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("creating the rejects file {}", p.display()))?,
        )),
        None => Box::new(io::stderr()),
    };
    let shown_limit = if args.check && args.rejects.is_none() { CHECK_REJECTS_SHOWN } else { u64::MAX };

    let started = Instant::now();
    let mut stats = Stats::default();
    let mut extras = Extras::new();
    let mut json = Vec::with_capacity(4096);
    'files: for path in &files {
        let name = path.display().to_string();
        let reader = if path == Path::new("-") { lines::decompressing(io::stdin()) } else { lines::open(path) }
            .with_context(|| format!("opening {name}"))?;
        let mut reader = LineReader::with_max_line_bytes(reader, args.max_line_bytes);
        while let Some(item) = reader.next_line().with_context(|| format!("reading {name}"))? {
            stats.lines += 1;
            let (line_no, offset, bytes) = match item {
                Line::Complete { line_no, offset, bytes } | Line::Partial { line_no, offset, bytes } => {
                    (line_no, offset, bytes)
                }
                Line::TooLong { line_no, offset, len, head, .. } => {
                    let reason = format!("line longer than {} bytes", args.max_line_bytes);
                    let mut r = Reject::new(&name, 0, offset, line_no, reason.clone(), head);
                    r.len = len;
                    stats.reject(reason, &r, &mut rejects, shown_limit)?;
                    continue;
                }
            };
            // `--check` prints no record, so it needs no extras and takes the fused parsers
            // (same records and errors as the plan, several times faster).
            let parsed =
                if args.check { format.parse_line(bytes) } else { format.parse_line_with_extras(bytes, &mut extras) };
            match parsed {
                Ok(mut record) => {
                    stats.records += 1;
                    if args.check {
                        continue;
                    }
                    record.source = SourceId { fingerprint: 0, offset };
                    json.clear();
                    serde_json::to_writer(&mut json, &Output { record: &record, extra: &extras })?;
                    json.push(b'\n');
                    if let Err(e) = out.write_all(&json) {
                        if e.kind() == io::ErrorKind::BrokenPipe {
                            break 'files;
                        }
                        return Err(e).context("writing to stdout");
                    }
                }
                Err(e) => {
                    let r = Reject::new(&name, 0, offset, line_no, e.to_string(), bytes);
                    stats.reject(e.reason_key(), &r, &mut rejects, shown_limit)?;
                }
            }
        }
        stats.bytes += reader.offset();
    }
    match out.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e).context("writing to stdout"),
        _ => {}
    }
    rejects.flush().context("writing rejects")?;
    eprintln!("{}", stats.summary(files.len(), started.elapsed().as_secs_f64()));
    Ok(if stats.rejects == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn build_format(args: &ParseArgs) -> anyhow::Result<LogFormat> {
    if let Some(conf) = &args.log_format_file {
        let name = args.name.as_deref().unwrap_or("main");
        let text = std::fs::read_to_string(conf).with_context(|| format!("reading {}", conf.display()))?;
        return LogFormat::from_nginx_config(&text, name).with_context(|| format!("in {}", conf.display()));
    }
    let Some(spec) = args.format.as_deref() else { bail!("give --format or --log-format-file") };
    let escape: Escape = args.escape.parse()?;
    let format = if args.apache {
        LogFormat::apache(spec)?
    } else if escape != Escape::Default && LogFormat::builtin(spec.trim()).is_none() && spec.contains('$') {
        LogFormat::nginx(spec, escape)?
    } else {
        LogFormat::resolve(spec)?
    };
    Ok(format)
}

/// A record as printed: the schema's fields, plus `extra` when the line had any.
struct Output<'r, 'a> {
    record: &'r AccessRecord<'a>,
    extra: &'r Extras,
}

impl Serialize for Output<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Flat<'r, 'a> {
            #[serde(flatten)]
            record: &'r AccessRecord<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            extra: Option<ExtraMap<'r>>,
        }
        let extra = self.extra.iter().any(|(_, v)| !v.is_empty()).then_some(ExtraMap(self.extra));
        Flat { record: self.record, extra }.serialize(s)
    }
}

struct ExtraMap<'r>(&'r Extras);

impl Serialize for ExtraMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Empty values (`-`) are left out: `%l` is empty on nearly every line.
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.0.iter().filter(|(_, v)| !v.is_empty()) {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Default)]
struct Stats {
    lines: u64,
    records: u64,
    rejects: u64,
    bytes: u64,
    by_reason: BTreeMap<String, u64>,
}

impl Stats {
    fn reject(&mut self, key: String, r: &Reject, to: &mut dyn Write, shown_limit: u64) -> anyhow::Result<()> {
        self.rejects += 1;
        *self.by_reason.entry(key).or_default() += 1;
        if self.rejects <= shown_limit {
            serde_json::to_writer(&mut *to, r)?;
            to.write_all(b"\n").context("writing rejects")?;
        } else if self.rejects == shown_limit + 1 {
            writeln!(to, "… further rejects not shown (use --rejects FILE to keep them all)")?;
        }
        Ok(())
    }

    fn summary(&self, files: usize, secs: f64) -> String {
        let mb = self.bytes as f64 / 1e6;
        let mut s = format!(
            "sitelog parse: {files} file{}, {} lines, {} records, {} rejects",
            if files == 1 { "" } else { "s" },
            self.lines,
            self.records,
            self.rejects
        );
        if !self.by_reason.is_empty() {
            let mut reasons: Vec<(&String, &u64)> = self.by_reason.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1));
            let list: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} × {r}")).collect();
            s.push_str(&format!(" ({})", list.join("; ")));
        }
        s.push_str(&format!(", {mb:.1} MB in {secs:.2} s ({:.1} MB/s)", if secs > 0.0 { mb / secs } else { 0.0 }));
        s
    }
}
