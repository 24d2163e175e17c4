#!/usr/bin/env python3
"""ClickHouse HTTP interface over chDB (in-process ClickHouse), for local runs and tests.

    python chdb_http.py --data-dir DIR [--host 127.0.0.1] [--port 0] [--log-file F]
                        [--tls-cert PEM --tls-key PEM] [--password-file F]

Prints exactly one line ``READY http://<host>:<port>`` (``https://`` with ``--tls-cert``) on
stdout once it is serving.
Exit codes: 0 after SIGTERM/SIGINT, 2 if the port cannot be bound, 1 on other
startup failures.

Implemented subset of the ClickHouse HTTP interface (what the Rust `clickhouse` crate
with compression off and curl users need):

* ``GET /ping``, ``GET /`` (no query)            -> 200 ``Ok.``
* ``GET|POST /`` with the query in the ``query`` URL parameter and/or the body.
  If both are present and the URL query is ``INSERT ... FORMAT X`` (or ``VALUES``),
  the body is the data; otherwise the query is ``url_query + "\\n" + body``.
  A body-only ``INSERT ... FORMAT X\\n<data>`` is split like ClickHouse does.
  GET requests run with ``readonly=2`` like ClickHouse; a ``readonly`` URL parameter can
  only make them stricter (``readonly=1``), never lift it (``readonly=0`` is refused, 164).
* ``--tls-cert``/``--tls-key``: HTTPS only (the handshake runs on the request's thread, so a
  slow or plaintext client cannot stall the others; it is logged and dropped).
* ``--password-file F``: every request but ``/ping`` must carry the password (first line of
  F) as ClickHouse accepts it: ``X-ClickHouse-Key`` header, HTTP basic auth, or the
  ``password`` URL parameter; otherwise 403 with code 516 AUTHENTICATION_FAILED. The user
  name is not checked (chDB runs every query as ``default``).
* ``database``, ``default_format`` (default TabSeparated), ``param_<name>`` (native
  chDB query parameters: ``{name:Type}``, values in ClickHouse's escaped-text form,
  exactly like clickhouse-server), ``query_id`` (echoed in X-ClickHouse-Query-Id);
  every other URL parameter is a setting, applied with ``SET name = 'value'`` on a
  connection private to the request.
* INSERT data is streamed into ``chdb Connection.send_insert`` in 1 MiB pieces
  (Content-Length or chunked request bodies); a body that ends early cancels the
  insert (nothing is committed), as the crate expects when an insert is aborted.
* Errors: ``X-ClickHouse-Exception-Code: N`` and body ``Code: N. DB::Exception: ...``;
  HTTP 400 for client errors (syntax, unknown table/column/database/setting,
  unparsable input ...), 501 for unsupported features, 500 otherwise.
* ``compress=1`` / ``decompress=1`` (ClickHouse LZ4 block framing) and compressed
  request bodies are refused with code 48 NOT_IMPLEMENTED, HTTP 501.
* Results are produced completely before the response starts (so the status code
  and X-ClickHouse-Summary are always exact); there is no mid-stream exception.

Concurrency: one chDB engine (one data path) per process. Each request gets its own
chDB connection to that path (session state such as USE/SET is per connection, so
requests cannot see each other's database or settings); chDB runs queries from
different connections in parallel. An anchor connection keeps the engine alive.
Not implemented: HTTP sessions (``session_id`` is accepted and ignored), users,
quotas, response compression.
"""

import argparse
import base64
import errno
import hmac
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

# URL parameters that are not settings (ClickHouse's own HTTP-level parameters).
RESERVED_PARAMS = frozenset({
    "query", "database", "default_format", "user", "password", "compress", "decompress",
    "query_id", "session_id", "session_timeout", "session_check", "wait_end_of_query",
    "enable_http_compression", "buffer_size", "max_result_bytes", "role", "quota_key",
    "stacktrace", "with_stacktrace", "client_protocol_version",
})

# Exception codes reported as HTTP 400 (the caller sent something wrong).
CLIENT_ERROR_CODES = frozenset({
    6,    # CANNOT_PARSE_TEXT
    10,   # NOT_FOUND_COLUMN_IN_BLOCK
    15,   # DUPLICATE_COLUMN
    16,   # NO_SUCH_COLUMN_IN_TABLE
    20,   # NUMBER_OF_COLUMNS_DOESNT_MATCH
    25,   # CANNOT_PARSE_ESCAPE_SEQUENCE
    26,   # CANNOT_PARSE_QUOTED_STRING
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    33,   # CANNOT_READ_ALL_DATA
    36,   # BAD_ARGUMENTS
    38,   # CANNOT_PARSE_DATE
    41,   # CANNOT_PARSE_DATETIME
    42,   # NUMBER_OF_ARGUMENTS_DOESNT_MATCH
    43,   # ILLEGAL_TYPE_OF_ARGUMENT
    44,   # ILLEGAL_COLUMN
    46,   # UNKNOWN_FUNCTION
    47,   # UNKNOWN_IDENTIFIER
    50,   # UNKNOWN_TYPE
    53,   # TYPE_MISMATCH
    57,   # TABLE_ALREADY_EXISTS
    60,   # UNKNOWN_TABLE
    62,   # SYNTAX_ERROR
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    73,   # UNKNOWN_FORMAT
    81,   # UNKNOWN_DATABASE
    82,   # DATABASE_ALREADY_EXISTS
    108,  # NO_DATA_TO_INSERT
    115,  # UNKNOWN_SETTING
    117,  # INCORRECT_DATA
    130,  # CANNOT_READ_ARRAY_FROM_TEXT
    164,  # READONLY
    179,  # MULTIPLE_EXPRESSIONS_FOR_ALIAS
    184,  # ILLEGAL_AGGREGATION
    215,  # NOT_AN_AGGREGATE
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    352,  # AMBIGUOUS_COLUMN_NAME
    376,  # CANNOT_PARSE_UUID
    456,  # UNKNOWN_QUERY_PARAMETER
    457,  # BAD_QUERY_PARAMETER
    467,  # CANNOT_PARSE_BOOL
    691,  # UNKNOWN_ELEMENT_OF_ENUM
})
NOT_IMPLEMENTED = 48
READONLY = 164
AUTHENTICATION_FAILED = 516
STD_EXCEPTION = 1001

READ_CHUNK = 1 << 20            # insert data is appended to chDB in pieces of this size
MAX_QUERY_BYTES = 256 << 20     # non-INSERT request bodies are read completely, up to this
MAX_INSERT_HEADER = 1 << 20     # a body-only INSERT must reveal its FORMAT within this
DRAIN_LIMIT = 8 << 30           # unread request body we discard to keep the connection

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE_RE = re.compile(r"Code: (\d+)\. ")
_UNSUPPORTED_OUTPUT = {"dataframe", "arrowtable", "datastore", "debug"}

log = logging.getLogger("chdb_http")


# --------------------------------------------------------------------------- errors

class CHError(Exception):
    """An error reported to the client ClickHouse-style."""

    def __init__(self, code, text, status=None):
        super().__init__(text)
        self.code = int(code)
        self.text = text  # starts with "Code: N. DB::Exception: "
        if status is None:
            status = 400 if self.code in CLIENT_ERROR_CODES else 500
        self.status = status

    @classmethod
    def make(cls, code, name, message, status=None):
        return cls(code, f"Code: {code}. DB::Exception: {message}. ({name})", status)

    @classmethod
    def from_exc(cls, exc):
        text = str(exc).strip()
        m = _CODE_RE.search(text)
        if m:
            return cls(int(m.group(1)), text[m.start():])
        return cls.make(STD_EXCEPTION, "STD_EXCEPTION", text.rstrip(".") or type(exc).__name__)


class ClientGone(Exception):
    """The client closed the connection or sent a malformed/truncated body."""


# --------------------------------------------------------------------------- request bodies

class Body:
    """Reads a request body: Content-Length, chunked, or none."""

    def __init__(self, rfile, headers):
        self._rfile = rfile
        te = (headers.get("Transfer-Encoding") or "").lower()
        cl = headers.get("Content-Length")
        self.chunked = "chunked" in te
        self._chunk_left = 0
        self._eof = False
        self.bytes_read = 0
        if self.chunked:
            self._left = None
        elif cl is not None:
            try:
                self._left = int(cl)
            except ValueError:
                raise CHError.make(36, "BAD_ARGUMENTS", f"Invalid Content-Length {cl!r}")
            if self._left < 0:
                raise CHError.make(36, "BAD_ARGUMENTS", f"Invalid Content-Length {cl!r}")
            self._eof = self._left == 0
        else:
            self._left = 0
            self._eof = True
        self.present = not self._eof

    @property
    def done(self):
        return self._eof

    def _readline(self):
        line = self._rfile.readline(65537)
        if not line.endswith(b"\n"):
            raise ClientGone("truncated chunked body")
        return line

    def read(self, n=READ_CHUNK):
        """Return up to n bytes (at least 1 unless the body is finished)."""
        if self._eof:
            return b""
        if not self.chunked:
            data = self._rfile.read(min(n, self._left))
            if not data:
                raise ClientGone(f"body ended {self._left} bytes before Content-Length")
            self._left -= len(data)
            if self._left == 0:
                self._eof = True
            self.bytes_read += len(data)
            return data
        while self._chunk_left == 0:
            line = self._readline()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ClientGone(f"bad chunk size line {line[:40]!r}")
            if size == 0:
                while self._readline() not in (b"\r\n", b"\n"):  # trailers
                    pass
                self._eof = True
                return b""
            self._chunk_left = size
        data = self._rfile.read(min(n, self._chunk_left))
        if not data:
            raise ClientGone("body ended inside a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and self._readline() not in (b"\r\n", b"\n"):
            raise ClientGone("missing CRLF after chunk")
        self.bytes_read += len(data)
        return data

    def read_all(self, limit):
        parts = []
        total = 0
        while True:
            data = self.read()
            if not data:
                return b"".join(parts)
            total += len(data)
            if total > limit:
                raise CHError.make(36, "BAD_ARGUMENTS",
                                   f"Request body larger than {limit} bytes")
            parts.append(data)

    def drain(self, limit=DRAIN_LIMIT):
        """Discard the rest; False if more than `limit` remained (connection must close)."""
        total = 0
        while not self._eof:
            total += len(self.read())
            if total > limit:
                return False
        return True


# --------------------------------------------------------------------------- SQL scanning

_WS = " \t\n\r\f\v"
_INCOMPLETE = "incomplete"


def _is_word_char(c):
    if c.isascii():
        return c.isalnum() or c in "_$"
    return True  # non-ASCII identifier bytes


def _tokens(s, i=0):
    """Yield (kind, start, end) with kind in word/str/qid/num/punct, or (_INCOMPLETE, i, n)
    if the text ends inside a literal or comment. Whitespace and comments are skipped."""
    n = len(s)
    while i < n:
        c = s[i]
        if c in _WS:
            i += 1
        elif c == "-" and s.startswith("--", i):
            j = s.find("\n", i)
            if j < 0:
                yield (_INCOMPLETE, i, n)
                return
            i = j + 1
        elif c == "/" and s.startswith("/*", i):
            depth, j = 1, i + 2
            while depth and j < n:
                if s.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif s.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            if depth:
                yield (_INCOMPLETE, i, n)
                return
            i = j
        elif c in "'\"`":
            j = i + 1
            while j < n:
                if s[j] == "\\":
                    j += 2
                elif s[j] == c:
                    if j + 1 < n and s[j + 1] == c:
                        j += 2
                    else:
                        break
                else:
                    j += 1
            if j >= n:
                yield (_INCOMPLETE, i, n)
                return
            yield ("str" if c == "'" else "qid", i, j + 1)
            i = j + 1
        elif c.isascii() and c.isdigit():
            j = i + 1
            while j < n and (_is_word_char(s[j]) or s[j] == "."):
                j += 1
            yield ("num", i, j)
            i = j
        elif _is_word_char(c):
            j = i + 1
            while j < n and _is_word_char(s[j]):
                j += 1
            yield ("word", i, j)
            i = j
        else:
            yield ("punct", i, i + 1)
            i += 1


class InsertPlan:
    def __init__(self, header, fmt, data_start):
        self.header = header          # "INSERT INTO t (a, b) [SETTINGS ...]"
        self.fmt = fmt                # input format name ("Values" for VALUES)
        self.data_start = data_start  # index in the scanned text where data begins


NOT_INSERT = "not-insert"   # run the text as an ordinary query
NEED_MORE = "need-more"     # the INSERT header is not complete yet


def parse_insert(s, final):
    """Classify `s` (a query, possibly followed by data; for bodies decoded as latin-1 so
    indices are byte offsets). Returns InsertPlan for INSERT ... FORMAT X / VALUES,
    NOT_INSERT, or NEED_MORE (only when not `final`)."""
    toks = _tokens(s)
    more = NOT_INSERT if final else NEED_MORE

    def nxt():
        t = next(toks, None)
        if t is None or t[0] == _INCOMPLETE:
            return None
        return t

    def word(t, *ws):
        return t is not None and t[0] == "word" and s[t[1]:t[2]].upper() in ws

    t = nxt()
    if t is None:
        return more
    if not word(t, "INSERT"):
        return NOT_INSERT
    t = nxt()
    if word(t, "INTO"):
        t = nxt()
    is_function = word(t, "FUNCTION")
    if word(t, "TABLE", "FUNCTION"):
        t = nxt()
    if t is None:
        return more
    # The target: name[.name], {param:Identifier}, or function(...).
    if t[0] == "punct" and s[t[1]] == "{":
        while t is not None and not (t[0] == "punct" and s[t[1]] == "}"):
            t = nxt()
        if t is None:
            return more
    elif t[0] in ("word", "qid"):
        pass
    else:
        return NOT_INSERT
    depth = 0
    after_dot = False
    while True:
        t = nxt()
        if t is None:
            return more
        kind, a, b = t
        if kind == "punct":
            ch = s[a]
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            after_dot = ch == "."
            continue
        if depth > 0 or kind != "word" or after_dot:  # db.values: a name, not a keyword
            after_dot = False
            continue
        w = s[a:b].upper()
        if w == "FORMAT":
            ft = nxt()
            if ft is None:
                return more
            if ft[0] not in ("word", "qid"):
                return NOT_INSERT
            fmt = s[ft[1]:ft[2]]
            if ft[0] == "qid":
                fmt = fmt[1:-1]
            j = ft[2]
            while j < len(s) and s[j] in " \t\f":
                j += 1
            if j < len(s) and s[j] == "\r":
                j += 1
            if j < len(s) and s[j] == "\n":
                j += 1
            if not final and j >= len(s):
                # The newline that separates the header from the data may follow.
                return NEED_MORE
            return InsertPlan(s[:a].rstrip(), fmt, j)
        if w == "VALUES":
            return InsertPlan(s[:a].rstrip(), "Values", b)
        if w in ("SELECT", "WITH", "FROM") or (is_function and w == "SELECT"):
            return NOT_INSERT  # INSERT ... SELECT / FROM INFILE: an ordinary query


def output_format_of(sql):
    """The format named by a top-level trailing `FORMAT X` clause, if any."""
    toks = [t for t in _tokens(sql) if t[0] != _INCOMPLETE]
    depth = 0
    for i, (kind, a, b) in enumerate(toks):
        if kind == "punct":
            if sql[a] in "([{":
                depth += 1
            elif sql[a] in ")]}":
                depth -= 1
            continue
        if depth or kind != "word" or sql[a:b].upper() != "FORMAT" or i + 1 >= len(toks):
            continue
        nk, na, nb = toks[i + 1]
        if nk not in ("word", "qid"):
            continue
        rest = toks[i + 2:]
        if not rest or sql[rest[0][1]:rest[0][2]].upper() == "SETTINGS" or sql[rest[0][1]] == ";":
            name = sql[na:nb]
            return name[1:-1] if nk == "qid" else name
    return None


def quote_string(v):
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(v):
    return "`" + v.replace("\\", "\\\\").replace("`", "\\`") + "`"


def content_type_for(fmt):
    f = (fmt or "").lower()
    if f.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        return "text/csv; charset=UTF-8"
    if f in ("json", "jsoncompact", "jsonstrings", "jsoncolumns", "jsoncompactcolumns",
             "jsoncolumnswithmetadata", "jsonobjecteachrow", "jsoncompactstrings"):
        return "application/json; charset=UTF-8"
    if f.startswith("json") or f == "ndjson":
        return "application/x-ndjson; charset=UTF-8"
    if f.startswith(("pretty", "vertical", "markdown", "template", "raw", "lineasstring")) \
            or f in ("values", "null", "prometheus", "sqlinsert"):
        return "text/plain; charset=UTF-8"
    if f == "xml":
        return "application/xml; charset=UTF-8"
    return "application/octet-stream"


def truthy(v):
    return v is not None and v.strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- engine

class Engine:
    """One chDB engine bound to one data path; a fresh connection per request."""

    def __init__(self, data_dir, max_concurrency):
        import chdb  # imported late: loading the engine takes a moment
        self._chdb = chdb
        self.dsn = "file:" + os.path.abspath(data_dir)
        self.anchor = chdb.connect(self.dsn)  # keeps the engine (and data path) alive
        tz = self.anchor.query("SELECT timezone(), version()", "TSV").bytes().decode()
        self.timezone, self.version = tz.strip().split("\t")
        self._slots = threading.BoundedSemaphore(max_concurrency)

    @contextmanager
    def connection(self, database, settings, readonly):
        with self._slots:
            conn = self._chdb.connect(self.dsn)
            try:
                try:
                    if database:
                        conn.query("USE " + quote_ident(database))
                    assigns = [f"{k} = {quote_string(v)}" for k, v in settings.items()]
                    if readonly and "readonly" not in settings:
                        assigns.append("readonly = 2")  # GET is read-only, as in ClickHouse
                    if assigns:
                        conn.query("SET " + ", ".join(assigns))
                except Exception as e:
                    raise CHError.from_exc(e) from None
                yield conn
            finally:
                conn.close()

    def close(self):
        self.anchor.close()


class QueryLog:
    """`--query-log`: one JSON line per query (database, full text, HTTP status)."""

    def __init__(self, path):
        self._f = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, database, query, status):
        line = json.dumps({"database": database, "query": query, "status": status})
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()


# --------------------------------------------------------------------------- HTTP

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chdb-http"
    disable_nagle_algorithm = True  # avoid 40 ms delayed-ACK stalls on small responses

    def version_string(self):
        return self.server_version

    # BaseHTTPRequestHandler logs the request line (with passwords in the URL): never.
    def log_message(self, fmt, *args):
        pass

    def log_error(self, fmt, *args):
        log.warning("http: " + fmt, *args)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_HEAD(self):
        self._dispatch("HEAD")

    # -- plumbing

    def _dispatch(self, method):
        srv = self.server
        srv.request_started()
        t0 = time.monotonic()
        self._status = 0
        self._qtext = ""
        self._database = ""
        self._error = ""
        self._token = ""
        self._written = None
        self._body = None
        try:
            try:
                self._body = Body(self.rfile, self.headers)
                self._route(method)
            except CHError as e:
                self._send_error(e)
        except ClientGone as e:
            self.close_connection = True
            self._status = 499
            log.warning("client went away: %s", e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            self._status = self._status or 499
        except Exception as e:  # a bug here must not kill the server
            log.exception("internal error")
            try:
                self._send_error(CHError.make(STD_EXCEPTION, "STD_EXCEPTION",
                                              f"chdb_http internal error: {e!r}", 500))
            except Exception:
                self.close_connection = True
        finally:
            srv.request_finished()
            q = " ".join(self._qtext[:200].split())
            log.info("%s %s %d %.1fms in=%d%s%s%s q=%s", method, urlsplit(self.path).path,
                     self._status, (time.monotonic() - t0) * 1000,
                     self._body.bytes_read if self._body else 0, self._error,
                     f" token={self._token}" if self._token else "",
                     f" written={self._written}" if self._written is not None else "", q)
            if srv.query_log is not None and self._qtext:
                srv.query_log.write(self._database, self._qtext, self._status)

    def _finish_body(self):
        """Consume what is left of the request body so the connection can be reused."""
        b = self._body
        if b is None:  # the request body could not even be framed
            self.close_connection = True
        elif not b.done and not b.drain():
            self.close_connection = True

    def _send(self, status, payload=b"", ctype="text/plain; charset=UTF-8", headers=()):
        self._finish_body()
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in headers:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        if self.command == "HEAD" or not payload:
            self.end_headers()
        elif len(payload) <= 64 << 10:
            # headers and a small body in one write (one TCP segment where possible)
            self._headers_buffer.append(b"\r\n")
            self._headers_buffer.append(bytes(payload))
            self.flush_headers()
        else:
            self.end_headers()
            self.wfile.write(payload)
        self.wfile.flush()

    def _send_error(self, e):
        hdrs = [("X-ClickHouse-Exception-Code", str(e.code))]
        qid = getattr(self, "_query_id", None)
        if qid:
            hdrs.append(("X-ClickHouse-Query-Id", qid))
        self._error = f" err={e.code}"
        self._send(e.status, (e.text.rstrip("\n") + "\n").encode("utf-8", "replace"),
                   headers=hdrs)

    # -- routing

    def _route(self, method):
        url = urlsplit(self.path)
        if url.path == "/ping" or url.path == "/replicas_status":
            return self._send(200, b"Ok.\n")
        if url.path != "/":
            return self._send(404, f"There is no handle {url.path}\n".encode())
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        self._authenticate(params)
        if "query" not in params and not self._body.present and method != "POST":
            return self._send(200, b"Ok.\n")
        if method == "HEAD":
            return self._send(405, b"HEAD is only supported without a query\n")
        self._run(method, params)

    def _authenticate(self, params):
        expected = self.server.password
        if expected is None:
            return
        user, given = "default", None
        auth = self.headers.get("Authorization") or ""
        if auth[:6].lower() == "basic ":
            try:
                user, _, given = base64.b64decode(auth[6:].strip()).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                given = None
        if self.headers.get("X-ClickHouse-Key") is not None:
            given = self.headers.get("X-ClickHouse-Key")
        elif "password" in params:
            given = params["password"]
        user = self.headers.get("X-ClickHouse-User") or params.get("user") or user or "default"
        if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise CHError.make(
                AUTHENTICATION_FAILED, "AUTHENTICATION_FAILED",
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name",
                403)

    def _run(self, method, params):
        self._qtext = params.get("query", "")
        self._query_id = params.get("query_id") or str(uuid.uuid4())
        if truthy(params.get("compress")) or truthy(params.get("decompress")):
            raise CHError.make(
                NOT_IMPLEMENTED, "NOT_IMPLEMENTED",
                "The local chDB endpoint does not support ClickHouse LZ4/ZSTD block framing "
                "(compress=1 / decompress=1); disable compression in the client "
                "(clickhouse crate: Compression::None)", 501)
        enc = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if enc not in ("", "identity"):
            raise CHError.make(
                NOT_IMPLEMENTED, "NOT_IMPLEMENTED",
                f"The local chDB endpoint does not support Content-Encoding: {enc}; "
                "send the body uncompressed", 501)
        database = params.get("database") or self.headers.get("X-ClickHouse-Database") or ""
        self._database = database
        default_format = (params.get("default_format") or self.headers.get("X-ClickHouse-Format")
                          or "TabSeparated")
        if default_format.lower() in _UNSUPPORTED_OUTPUT:
            raise CHError.make(73, "UNKNOWN_FORMAT", f"Unknown format {default_format}")
        qparams = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        settings = {}
        for k, v in params.items():
            if k in RESERVED_PARAMS or k.startswith("param_"):
                continue
            if not _SETTING_NAME.match(k):
                raise CHError.make(115, "UNKNOWN_SETTING", f"Invalid setting name {k!r}")
            settings[k] = v
        # Logged with the request: which retries of an insert the engine saw, and how each ended.
        self._token = settings.get("insert_deduplication_token", "")
        readonly = method == "GET"
        if readonly and "readonly" in settings:
            # GET is read-only, as in ClickHouse: readonly=1 (stricter) is fine, 0 would lift it.
            if settings["readonly"].strip() not in ("1", "2"):
                raise CHError.make(
                    READONLY, "READONLY",
                    f"Cannot modify 'readonly' setting in readonly mode (GET requests are read-only; "
                    f"readonly={settings['readonly']!r} asked for)")
        ctx = (database, settings, readonly)
        url_query = params.get("query", "")
        body = self._body

        if url_query:
            self._qtext = url_query
            plan = parse_insert(url_query, final=True) if body.present else NOT_INSERT
            if isinstance(plan, InsertPlan):
                prefix = url_query[plan.data_start:]
                prefix = prefix.encode() + b"\n" if prefix.strip() else b""
                return self._insert(ctx, plan, prefix)
            text = url_query
            if body.present:
                extra = body.read_all(MAX_QUERY_BYTES)
                if extra:
                    text = url_query + "\n" + extra.decode("utf-8", "replace")
            return self._query(ctx, text, default_format, qparams)

        # The query comes from the body: look for an INSERT header before reading it all.
        buf = b""
        plan = NEED_MORE
        while plan is NEED_MORE:
            if body.done or len(buf) > MAX_INSERT_HEADER:
                plan = parse_insert(buf.decode("latin-1"), final=True)
                break
            buf += body.read(64 << 10)
            plan = parse_insert(buf.decode("latin-1"), final=body.done)
        if isinstance(plan, InsertPlan):
            header = plan.header.encode("latin-1").decode("utf-8", "replace")
            self._qtext = header + " FORMAT " + plan.fmt
            plan.header = header
            return self._insert(ctx, plan, buf[plan.data_start:])
        rest = body.read_all(MAX_QUERY_BYTES - len(buf))
        text = (buf + rest).decode("utf-8", "replace")
        self._qtext = text
        self._query(ctx, text, default_format, qparams)

    # -- execution

    def _headers(self, fmt, summary):
        return [
            ("X-ClickHouse-Query-Id", self._query_id),
            ("X-ClickHouse-Format", fmt),
            ("X-ClickHouse-Timezone", self.server.engine.timezone),
            ("X-ClickHouse-Server-Display-Name", "chdb-local"),
            ("X-ClickHouse-Summary", json.dumps({k: str(int(v)) for k, v in summary.items()},
                                                separators=(",", ":"))),
        ]

    def _query(self, ctx, text, default_format, qparams):
        if not text.strip():
            raise CHError.make(62, "SYNTAX_ERROR", "Empty query")
        fmt = output_format_of(text) or default_format
        engine = self.server.engine
        with engine.connection(*ctx) as conn:
            try:
                if conn._conn.classify_query(text).get("statement_count", 1) > 1:
                    raise CHError.make(62, "SYNTAX_ERROR", "Multi-statements are not allowed")
            except CHError:
                raise
            except Exception:
                pass  # classification is only a guard; the engine reports real errors
            t0 = time.monotonic()
            try:
                res = conn.query(text, default_format, params=qparams)
                if res.has_error():
                    raise RuntimeError(res.error_message())
            except CHError:
                raise
            except Exception as e:
                raise CHError.from_exc(e) from None
            elapsed = time.monotonic() - t0
            view = res.get_memview().view() if res.size() else b""
            summary = {
                "read_rows": res.storage_rows_read(), "read_bytes": res.bytes_read(),
                "written_rows": res.rows_written(), "written_bytes": res.bytes_written(),
                "total_rows_to_read": res.storage_rows_read(),
                "result_rows": res.rows_read(), "result_bytes": len(view),
                "elapsed_ns": elapsed * 1e9, "memory_usage": 0,
            }
            self._send(200, view, content_type_for(fmt), self._headers(fmt, summary))
            del view, res

    def _insert(self, ctx, plan, prefix):
        body = self._body
        engine = self.server.engine
        with engine.connection(*ctx) as conn:
            t0 = time.monotonic()
            try:
                ins = conn.send_insert(plan.header, plan.fmt)
            except Exception as e:
                raise CHError.from_exc(e) from None
            try:
                if prefix:
                    ins.append(prefix)
                while True:
                    chunk = body.read(READ_CHUNK)
                    if not chunk:
                        break
                    ins.append(chunk)
                res = ins.finish()
                self._written = res.rows_written
            except ClientGone:
                _quiet_cancel(ins)  # the client aborted: commit nothing
                raise
            except Exception as e:
                _quiet_cancel(ins)
                raise CHError.from_exc(e) from None
            except BaseException:
                _quiet_cancel(ins)
                raise
            summary = {
                "read_rows": res.rows_written, "read_bytes": body.bytes_read + len(prefix),
                "written_rows": res.rows_written, "written_bytes": res.bytes_written,
                "total_rows_to_read": 0, "result_rows": res.rows_written,
                "result_bytes": res.bytes_written,
                "elapsed_ns": (time.monotonic() - t0) * 1e9, "memory_usage": 0,
            }
            self._send(200, b"", "text/plain; charset=UTF-8",
                       self._headers(plan.fmt, summary))


def _quiet_cancel(ins):
    try:
        ins.cancel()
    except Exception as e:
        log.warning("cancelling insert failed: %s", e)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, tls=None, password=None):
        super().__init__(addr, Handler)
        self.tls = tls            # ssl.SSLContext: HTTPS only
        self.password = password  # None: no authentication
        self.engine = None
        self.query_log = None     # QueryLog: --query-log only
        self._active = 0
        self._cv = threading.Condition()

    def finish_request(self, request, client_address):
        """Runs on the request's thread: the TLS handshake happens here, not in the accept loop."""
        if self.tls is None:
            return super().finish_request(request, client_address)
        request.settimeout(30)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log.warning("TLS handshake with %s:%d failed: %s", client_address[0], client_address[1], e)
            return
        try:
            conn.settimeout(None)
            super().finish_request(conn, client_address)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def request_started(self):
        with self._cv:
            self._active += 1

    def request_finished(self):
        with self._cv:
            self._active -= 1
            self._cv.notify_all()

    def wait_idle(self, timeout):
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._active > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True


# --------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True, help="chDB data path (created if missing)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123, help="0 picks a free port")
    ap.add_argument("--log-file", help="append one line per request here (default: stderr)")
    ap.add_argument("--max-concurrency", type=int, default=16,
                    help="queries executing at once; more wait (default 16)")
    ap.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM, chain first)")
    ap.add_argument("--tls-key", help="the private key of --tls-cert (PEM)")
    ap.add_argument("--password-file",
                    help="require this password (first line of the file) on every query")
    ap.add_argument("--query-log",
                    help="append every query's full text as a JSON line (database, query, status) "
                         "here: what clickhouse-server keeps in system.query_log, which chDB lacks; "
                         "for tests that check what a command sends")
    ap.add_argument("--shutdown-timeout", type=float, default=10.0,
                    help="seconds to let running requests finish on SIGTERM")
    args = ap.parse_args(argv)

    handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False

    if bool(args.tls_cert) != bool(args.tls_key):
        print("chdb_http: error: --tls-cert and --tls-key go together", file=sys.stderr, flush=True)
        return 1
    tls = password = None
    try:
        if args.tls_cert:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.minimum_version = ssl.TLSVersion.TLSv1_2
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        if args.password_file:
            with open(args.password_file, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
    except (OSError, ssl.SSLError) as e:
        print(f"chdb_http: error: TLS certificate or password file: {e}", file=sys.stderr, flush=True)
        return 1

    try:
        server = Server((args.host, args.port), tls, password)
    except OSError as e:
        what = "address already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        print(f"chdb_http: error: cannot listen on {args.host}:{args.port}: {what}",
              file=sys.stderr, flush=True)
        return 2

    server.query_log = QueryLog(args.query_log) if args.query_log else None
    try:
        os.makedirs(args.data_dir, exist_ok=True)
        server.engine = Engine(args.data_dir, args.max_concurrency)
    except Exception as e:
        print(f"chdb_http: error: cannot open chDB data dir {args.data_dir}: {e}",
              file=sys.stderr, flush=True)
        server.server_close()
        return 1

    stopping = threading.Event()

    def on_signal(signum, frame):
        if stopping.is_set():
            os._exit(1)  # second signal: give up waiting
        stopping.set()
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    host, port = server.server_address[:2]
    scheme = "https" if tls else "http"
    log.info("serving %s://%s:%d data=%s chdb=%s auth=%s", scheme, host, port,
             os.path.abspath(args.data_dir), server.engine.version,
             "password" if password is not None else "none")
    sys.stdout.write(f"READY {scheme}://{host}:{port}\n")
    sys.stdout.flush()

    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    idle = server.wait_idle(args.shutdown_timeout)
    if not idle:
        log.warning("requests still running after %.1fs; exiting anyway", args.shutdown_timeout)
        handler.flush()
        os._exit(0)
    server.engine.close()
    log.info("stopped")
    handler.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
