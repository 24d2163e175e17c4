"""Tests for chdb_http.py against a real chDB engine (no mocks).

Run: /root/.cache/sitelog/chdb-venv-26.9.0/bin/python -m pytest -q deploy/local/test_chdb_http.py
"""

import base64
import http.client
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chdb_http.py")


# --------------------------------------------------------------------------- helpers

class Srv:
    def __init__(self, data_dir, log_file=None, port=0, extra=()):
        cmd = [sys.executable, SERVER, "--data-dir", str(data_dir), "--host", "127.0.0.1",
               "--port", str(port), *extra]
        if log_file:
            cmd += ["--log-file", str(log_file)]
        # stderr goes to a file: a pipe nobody reads would fill up and block the server
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith(("READY http://127.0.0.1:", "READY https://127.0.0.1:")):
            self.proc.kill()
            self.proc.wait()
            self.stderr.seek(0)
            raise RuntimeError(f"no READY line: {line!r} {self.stderr.read()!r}")
        self.url = line.split()[1]
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self, sig=signal.SIGTERM, timeout=20):
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def req(base, query=None, body=None, method=None, headers=None, context=None, **params):
    """Returns (status, headers, body bytes); never raises on HTTP errors."""
    if query is not None:
        params["query"] = query
    url = base + "/"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    if isinstance(body, str):
        body = body.encode()
    r = urllib.request.Request(url, data=body, method=method or ("POST" if body is not None else "GET"),
                               headers=headers or {})
    try:
        with urllib.request.urlopen(r, timeout=60, context=context) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def ok(base, query=None, body=None, **kw):
    status, hdrs, data = req(base, query, body, **kw)
    assert status == 200, (status, data)
    return data


def chunked_post(port, path, chunks, headers=None):
    """POST with Transfer-Encoding: chunked, one HTTP chunk per element of `chunks`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, body=iter(chunks), headers=headers or {}, encode_chunked=True)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def rb_string(s):
    b = s.encode() if isinstance(s, str) else s
    return varint(len(b)) + b


def read_varint(buf, pos):
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def read_rb_string(buf, pos):
    n, pos = read_varint(buf, pos)
    return buf[pos:pos + n].decode(), pos + n


def rbwnat_header(buf):
    """Parse the RowBinaryWithNamesAndTypes header: (names, types, offset of first row)."""
    n, pos = read_varint(buf, 0)
    names, types = [], []
    for _ in range(n):
        s, pos = read_rb_string(buf, pos)
        names.append(s)
    for _ in range(n):
        s, pos = read_rb_string(buf, pos)
        types.append(s)
    return names, types, pos


# --------------------------------------------------------------------------- pure functions

sys.path.insert(0, os.path.dirname(SERVER))
import chdb_http  # noqa: E402  (does not load chDB at import time)


@pytest.mark.parametrize("text,header,fmt,data", [
    ("INSERT INTO t FORMAT RowBinary\n\x00\n", "INSERT INTO t", "RowBinary", "\x00\n"),
    ("insert into `a b`(`x`,`y`) format CSV 1,2", "insert into `a b`(`x`,`y`)", "CSV", "1,2"),
    ("INSERT INTO format FORMAT CSV\r\n 1", "INSERT INTO format", "CSV", " 1"),
    ("INSERT INTO db.values (a) SETTINGS s = 'FORMAT x' FORMAT TSV\n1",
     "INSERT INTO db.values (a) SETTINGS s = 'FORMAT x'", "TSV", "1"),
    ("/* c */ INSERT INTO t -- FORMAT no\n VALUES (1)", "/* c */ INSERT INTO t -- FORMAT no", "Values", " (1)"),
    ("INSERT INTO TABLE FUNCTION file('f', 'CSV') FORMAT CSV\n", "INSERT INTO TABLE FUNCTION file('f', 'CSV')",
     "CSV", ""),
])
def test_parse_insert_splits_header_and_data(text, header, fmt, data):
    plan = chdb_http.parse_insert(text, final=True)
    assert (plan.header, plan.fmt, text[plan.data_start:]) == (header, fmt, data)


def test_parse_insert_other_cases():
    P = chdb_http.parse_insert
    assert P("SELECT 1", final=False) is chdb_http.NOT_INSERT
    assert P("INSERT INTO t SELECT 1", final=True) is chdb_http.NOT_INSERT
    assert P("INSERT INTO t FORM", final=False) is chdb_http.NEED_MORE
    assert P("INSERT INTO t FORMAT RowBinary", final=False) is chdb_http.NEED_MORE
    assert P("INSERT INTO t SETTINGS a = 'unterminated", final=False) is chdb_http.NEED_MORE
    assert P("INSERT INTO t FORMAT RowBinary", final=True).fmt == "RowBinary"
    assert chdb_http.output_format_of("SELECT format('{}', 1) FORMAT JSON SETTINGS a=1") == "JSON"
    assert chdb_http.output_format_of("SELECT 1 AS format") is None
    assert chdb_http.output_format_of(r"SELECT '\\', 'it''s' FORMAT CSV;") == "CSV"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("chdb")
    s = Srv(d / "data", log_file=d / "requests.log")
    s.log_file = d / "requests.log"
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def url(server):
    return server.url


# --------------------------------------------------------------------------- basic protocol

def test_ping_and_root(url):
    for path in ("/ping", "/"):
        with urllib.request.urlopen(url + path) as r:
            assert r.status == 200
            assert r.read() == b"Ok.\n"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "/no/such/path")
    assert e.value.code == 404


def test_select_default_format_json_each_row(url):
    status, hdrs, body = req(url, "SELECT number AS n, toString(number) AS s FROM numbers(3)",
                             default_format="JSONEachRow")
    assert status == 200
    assert [json.loads(l) for l in body.splitlines()] == [
        {"n": 0, "s": "0"}, {"n": 1, "s": "1"}, {"n": 2, "s": "2"}]
    assert hdrs["X-ClickHouse-Format"] == "JSONEachRow"
    assert "ndjson" in hdrs["Content-Type"]
    summary = json.loads(hdrs["X-ClickHouse-Summary"])
    for key in ("read_rows", "read_bytes", "written_rows", "written_bytes", "total_rows_to_read",
                "result_rows", "result_bytes", "elapsed_ns", "memory_usage"):
        assert isinstance(summary[key], str) and summary[key].isdigit(), key
    assert summary["result_rows"] == "3"
    assert hdrs["X-ClickHouse-Query-Id"]


def test_default_format_is_tab_separated_and_format_clause_wins(url):
    status, hdrs, body = req(url, "SELECT 1, 'a b'")
    assert (status, body) == (200, b"1\ta b\n")
    assert hdrs["X-ClickHouse-Format"] == "TabSeparated"
    status, hdrs, body = req(url, "SELECT 1 AS x FORMAT JSONEachRow", default_format="CSV")
    assert (status, body) == (200, b'{"x":1}\n')
    assert hdrs["X-ClickHouse-Format"] == "JSONEachRow"


def test_query_in_body(url):
    assert ok(url, body="SELECT 40 + 2") == b"42\n"
    assert ok(url, body="SELECT 'x' FORMAT CSV") == b'"x"\n'
    # URL query + body form one query (ClickHouse semantics)
    assert ok(url, "SELECT 1,", body="2") == b"1\t2\n"


def test_insert_split_between_url_and_body(url):
    ok(url, body="CREATE TABLE split_t (a UInt32, b String) ENGINE = MergeTree ORDER BY a")
    ok(url, "INSERT INTO split_t FORMAT JSONEachRow", body='{"a":1,"b":"x"}\n{"a":2,"b":"y"}\n')
    # whole INSERT in the body, data after the FORMAT line
    ok(url, body='INSERT INTO split_t (b, a) FORMAT JSONEachRow\n{"a":3,"b":"z"}\n')
    ok(url, body="INSERT INTO split_t FORMAT TabSeparated\n4\tw\n")
    ok(url, "INSERT INTO split_t FORMAT CSV", body="5,v\n")
    ok(url, "INSERT INTO split_t VALUES", body="(6, 'u'), (7, 'it''s')")
    ok(url, body="INSERT INTO split_t SELECT 8, 't'")
    status, hdrs, _ = req(url, "INSERT INTO split_t SETTINGS max_threads = 1 FORMAT CSV", body="9,s\n")
    assert status == 200
    assert json.loads(hdrs["X-ClickHouse-Summary"])["written_rows"] == "1"
    assert ok(url, "SELECT a, b FROM split_t ORDER BY a FORMAT CSV") == (
        b'1,"x"\n2,"y"\n3,"z"\n4,"w"\n5,"v"\n6,"u"\n7,"it\'s"\n8,"t"\n9,"s"\n')


def test_param_substitution(url):
    value = "it's a \"quote\" \\ back"
    escaped = value.replace("\\", "\\\\")  # param values use ClickHouse escaped-text syntax
    status, _, body = req(
        url, "SELECT {s:String} AS s, {n:UInt32} + 1 AS n, {t:DateTime('UTC')} AS t, "
             "toTypeName({n:UInt32}) AS tn FORMAT JSONEachRow",
        param_s=escaped, param_n="41", param_t="2024-05-06 07:08:09")
    assert status == 200, body
    assert json.loads(body) == {"s": value, "n": 42, "t": "2024-05-06 07:08:09", "tn": "UInt32"}
    # also for a query in the body, and the param cannot inject SQL
    ok(url, body="CREATE TABLE params_t (name String, n UInt32) ENGINE = MergeTree ORDER BY n")
    ok(url, body="INSERT INTO params_t VALUES ('a', 1), ('b''; DROP TABLE params_t; --', 2)")
    body = ok(url, body="SELECT n FROM params_t WHERE name = {name:String}",
              param_name="b'; DROP TABLE params_t; --")
    assert body == b"2\n"
    status, hdrs, body = req(url, "SELECT {missing:String}")
    assert status == 400 and hdrs["X-ClickHouse-Exception-Code"] == "456"


def test_settings_as_url_params(url):
    assert ok(url, "SELECT getSetting('max_threads')", max_threads="3") == b"3\n"
    assert ok(url, "SELECT getSetting('max_threads')", max_threads="5") == b"5\n"
    # settings do not leak into the next request
    assert ok(url, "SELECT getSetting('max_threads')") != b"5\n"
    assert ok(url, "SELECT getSetting('insert_deduplication_token')",
              insert_deduplication_token="a'b\\c") == b"a\\'b\\\\c\n"
    # credentials and crate-specific parameters are accepted, not treated as settings
    assert ok(url, "SELECT 1", user="default", password="secret-pw", query_id="q-1",
              wait_end_of_query="1", session_id="s", role="r") == b"1\n"
    status, hdrs, body = req(url, "SELECT 1", no_such_setting_xyz="1")
    assert status == 400 and hdrs["X-ClickHouse-Exception-Code"] == "115"


def test_database_param_and_isolation_under_concurrency(url):
    ok(url, body="CREATE DATABASE db_a")
    ok(url, body="CREATE DATABASE db_b")
    for db in ("db_a", "db_b"):
        ok(url, body="CREATE TABLE t (x String) ENGINE = MergeTree ORDER BY x", database=db)
        ok(url, "INSERT INTO t FORMAT CSV", body=f"{db}\n", database=db)
    errors = []

    def worker(i):
        try:
            for j in range(8):
                db = ("db_a", "db_b")[(i + j) % 2]
                threads = str(1 + (i + j) % 4)
                got = ok(url, "SELECT x, currentDatabase(), getSetting('max_threads') FROM t",
                         database=db, max_threads=threads)
                assert got == f"{db}\t{db}\t{threads}\n".encode(), got
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]
    status, hdrs, _ = req(url, "SELECT 1", database="no_such_db")
    assert status == 400 and hdrs["X-ClickHouse-Exception-Code"] == "81"


# --------------------------------------------------------------------------- RowBinary

ROWS = [
    (1, "alpha", 1700000000, 1.5, None, [1, 2, 3]),
    (2**63 + 5, "", 0, -0.25, -7, []),
    (42, "ünïcødé \t\n'\"", 2000000000, 1e300, 2**31 - 1, [65535]),
]


def encode_rowbinary(rows):
    out = bytearray()
    for id_, name, ts, v, n, arr in rows:
        out += struct.pack("<Q", id_)
        out += rb_string(name)
        out += struct.pack("<I", ts)
        out += struct.pack("<d", v)
        out += b"\x01" if n is None else b"\x00" + struct.pack("<i", n)
        out += varint(len(arr)) + b"".join(struct.pack("<H", x) for x in arr)
    return bytes(out)


def test_rowbinary_insert_and_read_back_exactly(url, server):
    ok(url, body="CREATE TABLE rb_t (id UInt64, name String, ts DateTime('UTC'), v Float64, "
                 "n Nullable(Int32), arr Array(UInt16)) ENGINE = MergeTree ORDER BY id")
    data = encode_rowbinary(ROWS)
    status, hdrs, _ = req(url, "INSERT INTO rb_t (id, name, ts, v, n, arr) FORMAT RowBinary",
                          body=data)
    assert status == 200
    assert json.loads(hdrs["X-ClickHouse-Summary"])["written_rows"] == "3"
    expected = encode_rowbinary(sorted(ROWS))
    assert ok(url, "SELECT id, name, ts, v, n, arr FROM rb_t ORDER BY id FORMAT RowBinary") == expected
    # the crate's fetch: RowBinaryWithNamesAndTypes via default_format
    status, hdrs, body = req(url, "SELECT id, name, ts, v, n, arr FROM rb_t ORDER BY id",
                             default_format="RowBinaryWithNamesAndTypes")
    assert status == 200 and hdrs["X-ClickHouse-Format"] == "RowBinaryWithNamesAndTypes"
    assert hdrs["Content-Type"] == "application/octet-stream"
    names, types, pos = rbwnat_header(body)
    assert names == ["id", "name", "ts", "v", "n", "arr"]
    assert types == ["UInt64", "String", "DateTime('UTC')", "Float64", "Nullable(Int32)",
                     "Array(UInt16)"]
    assert body[pos:] == expected
    # an empty result: 200, header-only for RBWNAT, empty for row formats
    status, _, body = req(url, "SELECT id FROM rb_t WHERE id = 0",
                          default_format="RowBinaryWithNamesAndTypes")
    assert status == 200 and rbwnat_header(body)[2] == len(body)
    assert ok(url, "SELECT id FROM rb_t WHERE id = 0 FORMAT RowBinary") == b""
    assert ok(url, "SELECT id FROM rb_t WHERE id = 0 FORMAT JSONEachRow") == b""


def test_chunked_insert_with_odd_chunk_boundaries(url, server):
    ok(url, body="CREATE TABLE chunk_t (id UInt64, name String, ts DateTime('UTC'), v Float64, "
                 "n Nullable(Int32), arr Array(UInt16)) ENGINE = MergeTree ORDER BY id")
    rows = [(i, f"row-{i}" * (i % 5), 1700000000 + i, i / 3, i if i % 2 else None,
             list(range(i % 4))) for i in range(1000)]
    data = encode_rowbinary(rows)
    pieces = [data[i:i + 777] for i in range(0, len(data), 777)]  # boundaries split values
    q = urllib.parse.urlencode({"query": "INSERT INTO chunk_t FORMAT RowBinary"})
    status, hdrs, body = chunked_post(server.port, "/?" + q, pieces)
    assert status == 200, body
    assert ok(url, "SELECT * FROM chunk_t ORDER BY id FORMAT RowBinary") == data
    # the whole INSERT in a chunked body, header split across chunks
    text = b"INSERT INTO chunk_t FOR" + b"MAT RowBinary\n" + encode_rowbinary([(5000, "z", 0, 0.0, 1, [])])
    status, _, body = chunked_post(server.port, "/", [text[:10], text[10:30], text[30:]])
    assert status == 200, body
    assert ok(url, "SELECT name FROM chunk_t WHERE id = 5000") == b"z\n"


def test_truncated_chunked_insert_commits_nothing(url, server):
    ok(url, body="CREATE TABLE trunc_t (a UInt32) ENGINE = MergeTree ORDER BY a")
    q = urllib.parse.urlencode({"query": "INSERT INTO trunc_t FORMAT TabSeparated"})
    s = socket.create_connection(("127.0.0.1", server.port))
    payload = b"1\n2\n3\n"
    s.sendall((f"POST /?{q} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               f"{len(payload):x}\r\n").encode() + payload + b"\r\n")
    time.sleep(0.3)
    s.close()  # no terminating 0-chunk: the client aborted the insert
    time.sleep(0.5)
    assert ok(url, "SELECT count() FROM trunc_t") == b"0\n"


def test_describe_with_rbwnat_default_format(url):
    ok(url, body="CREATE TABLE desc_t (id UInt64, msg String, d Date DEFAULT today()) "
                 "ENGINE = MergeTree ORDER BY id")
    status, hdrs, body = req(url, body="DESCRIBE TABLE desc_t",
                             default_format="RowBinaryWithNamesAndTypes")
    assert status == 200
    names, types, pos = rbwnat_header(body)
    assert names[:3] == ["name", "type", "default_type"]
    assert all(t == "String" for t in types)
    rows = []
    while pos < len(body):
        row = []
        for _ in names:
            s, pos = read_rb_string(body, pos)
            row.append(s)
        rows.append(row)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("id", "UInt64", ""), ("msg", "String", ""), ("d", "Date", "DEFAULT")]


# --------------------------------------------------------------------------- deduplication

def test_insert_deduplication_token(url):
    ok(url, body="CREATE TABLE dd_src (k UInt32, v UInt64) ENGINE = MergeTree ORDER BY k "
                 "SETTINGS non_replicated_deduplication_window = 1000")
    ok(url, body="CREATE TABLE dd_agg (k UInt32, s UInt64) ENGINE = SummingMergeTree ORDER BY k "
                 "SETTINGS non_replicated_deduplication_window = 1000")
    ok(url, body="CREATE MATERIALIZED VIEW dd_mv TO dd_agg AS "
                 "SELECT k, sum(v) AS s FROM dd_src GROUP BY k")
    data = struct.pack("<IQ", 1, 10) + struct.pack("<IQ", 2, 5)

    def insert(token):
        ok(url, "INSERT INTO dd_src FORMAT RowBinary", body=data, insert_deduplication_token=token,
           deduplicate_blocks_in_dependent_materialized_views="1")

    def state():
        return (ok(url, "SELECT count(), sum(v) FROM dd_src"),
                ok(url, "SELECT k, sum(s) FROM dd_agg GROUP BY k ORDER BY k FORMAT CSV"))

    insert("batch-1")
    assert state() == (b"2\t15\n", b"1,10\n2,5\n")
    insert("batch-1")  # a retry of the same batch: deduplicated in the table and the MV target
    assert state() == (b"2\t15\n", b"1,10\n2,5\n")
    insert("batch-2")  # a different batch with identical rows is kept
    assert state() == (b"4\t30\n", b"1,20\n2,10\n")
    # chunked bodies too (how the crate sends)
    ok(url, body="CREATE TABLE dd_plain (k UInt32, v UInt64) ENGINE = MergeTree ORDER BY k "
                 "SETTINGS non_replicated_deduplication_window = 1000")
    for token in ("t1", "t1", "t2"):
        q = urllib.parse.urlencode({"query": "INSERT INTO dd_plain FORMAT RowBinary",
                                    "insert_deduplication_token": token})
        port = int(url.rsplit(":", 1)[1])
        assert chunked_post(port, "/?" + q, [data[:5], data[5:]])[0] == 200
    assert ok(url, "SELECT count() FROM dd_plain") == b"4\n"


# --------------------------------------------------------------------------- errors

def test_error_codes(url, server):
    status, hdrs, body = req(url, "SELEC 1")
    assert status == 400
    assert hdrs["X-ClickHouse-Exception-Code"] == "62"
    assert body.startswith(b"Code: 62. DB::Exception: Syntax error")
    status, hdrs, body = req(url, body="SELECT * FROM no_such_table_xyz")
    assert status == 400
    assert hdrs["X-ClickHouse-Exception-Code"] == "60"
    assert body.startswith(b"Code: 60. DB::Exception: ") and b"no_such_table_xyz" in body
    status, hdrs, body = req(url, body="SELECT 1; SELECT 2")
    assert status == 400 and hdrs["X-ClickHouse-Exception-Code"] == "62"
    status, hdrs, body = req(url, body="")
    assert status == 400 and b"Empty query" in body
    # GET is read-only, like clickhouse-server, and a URL setting cannot lift that
    status, hdrs, _ = req(url, "CREATE TABLE get_t (a UInt8) ENGINE = Memory", method="GET")
    assert status == 400 and hdrs["X-ClickHouse-Exception-Code"] == "164"
    for value in ("0", " 0", "false"):
        status, hdrs, body = req(url, "CREATE TABLE get_t (a UInt8) ENGINE = Memory", method="GET",
                                 readonly=value)
        assert status == 400 and hdrs["X-ClickHouse-Exception-Code"] == "164", (value, body)
    assert ok(url, "SELECT count() FROM system.tables WHERE name = 'get_t'") == b"0\n"
    assert ok(url, "SELECT 1", method="GET", readonly="1") == b"1\n"  # stricter is fine
    status, hdrs, _ = req(url, "SET max_threads = 1", method="GET", readonly="1")
    assert status == 400 and hdrs["X-ClickHouse-Exception-Code"] == "164"
    # non-client errors are 500
    status, hdrs, body = req(url, "SELECT throwIf(1, 'boom')")
    assert status == 500 and hdrs["X-ClickHouse-Exception-Code"] == "395" and b"boom" in body


def test_insert_errors_keep_connection_usable(url, server):
    ok(url, body="CREATE TABLE err_t (a UInt32) ENGINE = MergeTree ORDER BY a")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        def post(query, body):
            conn.request("POST", "/?" + urllib.parse.urlencode({"query": query}), body=body)
            r = conn.getresponse()
            return r.status, r.getheader("X-ClickHouse-Exception-Code"), r.read()

        st, code, body = post("INSERT INTO no_such_tbl FORMAT TabSeparated", b"1\n" * 100000)
        assert (st, code) == (400, "60"), body
        st, code, body = post("INSERT INTO err_t FORMAT TabSeparated", b"1\n2\nnot-a-number\n3\n")
        assert st == 400 and code in ("6", "27", "72"), body
        st, code, body = post("SELECT count() FROM err_t", b"")  # same keep-alive connection
        assert (st, body) == (200, b"0\n")  # the failed insert committed nothing
    finally:
        conn.close()


def test_compression_is_refused_clearly(url):
    for p in ({"compress": "1"}, {"decompress": "1"}):
        status, hdrs, body = req(url, "SELECT 1", **p)
        assert status == 501
        assert hdrs["X-ClickHouse-Exception-Code"] == "48"
        assert b"does not support ClickHouse LZ4" in body and b"disable compression" in body
    status, hdrs, body = req(url, "INSERT INTO x FORMAT RowBinary", body=b"\x00" * 1000,
                             headers={"Content-Encoding": "gzip"})
    assert status == 501 and hdrs["X-ClickHouse-Exception-Code"] == "48"
    assert ok(url, "SELECT 1", compress="0") == b"1\n"


def test_ddl_and_other_statements(url):
    ok(url, body="CREATE TABLE ddl_t (a UInt32) ENGINE = MergeTree ORDER BY a")
    ok(url, body="ALTER TABLE ddl_t ADD COLUMN b String DEFAULT 'x'")
    ok(url, body="INSERT INTO ddl_t (a) VALUES (1)")
    ok(url, body="OPTIMIZE TABLE ddl_t FINAL")
    ok(url, body="SYSTEM FLUSH LOGS")
    assert b"GRANT" in ok(url, body="SHOW GRANTS")
    assert ok(url, body="EXPLAIN SELECT 1")
    assert ok(url, body="SELECT a, b FROM ddl_t") == b"1\tx\n"


def test_large_insert_over_10mb(url, server):
    ok(url, body="CREATE TABLE big_t (id UInt64, payload String) ENGINE = MergeTree ORDER BY id")
    n = 60_000
    payload = "p" * 200
    data = b"".join(struct.pack("<Q", i) + rb_string(payload) for i in range(n))
    assert len(data) > 12_000_000
    q = urllib.parse.urlencode({"query": "INSERT INTO big_t FORMAT RowBinary"})
    t0 = time.monotonic()
    status, hdrs, body = chunked_post(server.port, "/?" + q,
                                      (data[i:i + 256 * 1024] for i in range(0, len(data), 256 * 1024)))
    assert status == 200, body
    status, _, body = req(url, "INSERT INTO big_t FORMAT RowBinary", body=data)  # Content-Length
    assert status == 200, body
    assert time.monotonic() - t0 < 30
    assert ok(url, "SELECT count(), sum(id), sum(length(payload)) FROM big_t") == (
        f"{2 * n}\t{n * (n - 1)}\t{2 * n * 200}\n".encode())


def test_request_log_has_no_password(url, server):
    ok(url, "SELECT 'log-marker-1'", password="hunter2-secret",
       headers={"X-ClickHouse-Key": "hunter3-secret", "X-ClickHouse-User": "default"})
    time.sleep(0.2)
    text = server.log_file.read_text()
    line = [l for l in text.splitlines() if "log-marker-1" in l]
    assert line and " GET / 200 " in line[0] and "ms" in line[0]
    assert "hunter2" not in text and "hunter3" not in text


# --------------------------------------------------------------------------- TLS and password

def make_cert(d, name, ca=None):
    """A throwaway certificate for 127.0.0.1 (self-signed CA when `ca` is None)."""
    key, crt = d / f"{name}.key", d / f"{name}.pem"
    if ca is None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(crt)],
                       check=True, capture_output=True)
        return crt, key
    csr = d / f"{name}.csr"
    ext = d / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                    "-keyout", str(key), "-out", str(csr)], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
                    "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt)],
                   check=True, capture_output=True)
    return crt, key


def test_https_and_password(tmp_path):
    ca = make_cert(tmp_path, "ca")
    crt, key = make_cert(tmp_path, "server", ca)
    pw = tmp_path / "password"
    pw.write_text("s3cret-pw\n")
    s = Srv(tmp_path / "data", log_file=tmp_path / "requests.log",
            extra=["--tls-cert", str(crt), "--tls-key", str(key), "--password-file", str(pw)])
    try:
        assert s.url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(ca[0]))
        # /ping needs no password, as in ClickHouse
        with urllib.request.urlopen(s.url + "/ping", context=trusted) as r:
            assert r.read() == b"Ok.\n"
        # every way the clickhouse crate and curl send credentials
        auth = base64.b64encode(b"default:s3cret-pw").decode()
        for kw in ({"headers": {"X-ClickHouse-User": "default", "X-ClickHouse-Key": "s3cret-pw"}},
                   {"headers": {"Authorization": "Basic " + auth}},
                   {"password": "s3cret-pw", "user": "default"}):
            assert ok(s.url, "SELECT 1", context=trusted, **kw) == b"1\n"
        # wrong or missing password: 403, code 516
        for kw in ({"headers": {"X-ClickHouse-Key": "wrong"}}, {}):
            status, hdrs, body = req(s.url, "SELECT 1", context=trusted, **kw)
            assert status == 403 and hdrs["X-ClickHouse-Exception-Code"] == "516", body
            assert b"Authentication failed" in body
        # an untrusted certificate is refused by the client
        with pytest.raises(urllib.error.URLError) as e:
            req(s.url, "SELECT 1", context=ssl.create_default_context())
        assert "CERTIFICATE_VERIFY_FAILED" in str(e.value)
        # plaintext against the TLS port: no answer, and the server keeps serving
        with pytest.raises((http.client.HTTPException, ConnectionError, urllib.error.URLError)):
            req(s.url.replace("https://", "http://"), "SELECT 1")
        assert ok(s.url, "SELECT 2", context=trusted, headers={"X-ClickHouse-Key": "s3cret-pw"}) == b"2\n"
        time.sleep(0.2)
        text = (tmp_path / "requests.log").read_text()
        assert "TLS handshake" in text and "s3cret" not in text
    finally:
        assert s.stop() == 0


# --------------------------------------------------------------------------- process lifecycle

def test_persistence_across_restart_and_clean_signals(tmp_path):
    data = tmp_path / "persist"
    s = Srv(data)
    try:
        ok(s.url, body="CREATE TABLE keep_t (a UInt32, b String) ENGINE = MergeTree ORDER BY a")
        ok(s.url, "INSERT INTO keep_t FORMAT JSONEachRow", body='{"a":7,"b":"kept"}\n')
    finally:
        assert s.stop(signal.SIGTERM) == 0
    s = Srv(data)
    try:
        assert ok(s.url, "SELECT a, b FROM keep_t") == b"7\tkept\n"
    finally:
        assert s.stop(signal.SIGINT) == 0


def test_busy_port_exits_2(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    port = sock.getsockname()[1]
    try:
        p = subprocess.run([sys.executable, SERVER, "--data-dir", str(tmp_path / "d"),
                            "--host", "127.0.0.1", "--port", str(port)],
                           capture_output=True, text=True, timeout=60)
    finally:
        sock.close()
    assert p.returncode == 2
    assert p.stdout == ""
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and str(port) in err[0] and "in use" in err[0]
