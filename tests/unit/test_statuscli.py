"""`zerohop status`: exact output from a fixture document, and the command against small local HTTP servers
(a fake admin server, a dead port, servers that are not zerohop)."""

from __future__ import annotations

import datetime
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from extproc.app import cli, statuscli
from tests.helpers import free_port

NOW = datetime.datetime(2026, 3, 4, 12, 0, 0, tzinfo=datetime.UTC)

DOCUMENT: dict[str, Any] = {
    "provider": {
        "provider": "kubernetes",
        "identity": "zerohop-7d9c-abcde",
        "leader": True,
        "leaseHolder": "zerohop-7d9c-abcde",
        "informers": [],
        "scalePatches": 0,
    },
    "version": "0.1.0",
    "targets": [
        {
            "name": "shop/checkout",
            "routable": True,
            "replicas": {"desired": 3, "ready": 2},
            "inFlight": 12,
            "held": 0,
            "requests": 1520,
            "rate": 41.25,
            "coldStarts": 4,
            "lastColdStart": "2026-03-04T11:57:00.250Z",
            "lastColdStartSeconds": 0.612,
            "coldForSeconds": None,
        },
        {
            "name": "shop/reports",
            "routable": False,
            "replicas": None,
            "inFlight": 2,
            "held": 2,
            "requests": 2,
            "rate": 0.333,
            "coldStarts": 1,
            "lastColdStart": "2026-03-04T11:59:55.000Z",
            "lastColdStartSeconds": None,
            "coldForSeconds": 5.0,
        },
        {
            "name": "default/idle",
            "routable": False,
            "replicas": {"desired": 0, "ready": 0},
            "inFlight": 0,
            "held": 0,
            "requests": 0,
            "rate": 0.0,
            "coldStarts": 0,
            "lastColdStart": None,
            "lastColdStartSeconds": None,
            "coldForSeconds": None,
        },
    ],
    "heldTotal": 2,
    "draining": False,
    "extProc": {"streams": 1530, "unmatched": 7, "errors": 0},
    "peers": {"replica": "10.0.0.5:9092", "peers": [{"address": "a"}, {"address": "b"}], "answered": 1},
}

EXPECTED = """\
TARGET          REPLICAS   ROUTABLE   IN-FLIGHT   RATE    HELD   COLD STARTS   LAST COLD START   TOOK
shop/checkout   2/3        yes        12          41.25   0      4             2m ago            612ms
shop/reports    -          no         2           0.333   2      1             5s ago            -
default/idle    0/0        no         0           0       0      0             -                 -

held 2; ext_proc streams 1530, unmatched 7; provider kubernetes, leader zerohop-7d9c-abcde (this replica); \
peers 1/2 answered
"""


def test_render_prints_one_row_per_target_and_a_footer() -> None:
    assert statuscli.render(DOCUMENT, NOW) == EXPECTED


def test_footer_names_another_leader_the_local_provider_and_draining() -> None:
    follower = {**DOCUMENT["provider"], "leader": False, "leaseHolder": "zerohop-7d9c-fghij"}
    assert "provider kubernetes, leader zerohop-7d9c-fghij;" in statuscli.footer({**DOCUMENT, "provider": follower})
    local = {"provider": {"provider": "local"}, "targets": [], "heldTotal": 0, "draining": True, "extProc": {}}
    assert statuscli.render(local, NOW) == (
        "no targets\n\nDRAINING; held 0; ext_proc streams 0, unmatched 0; provider local\n"
    )


def test_config_problems_are_listed_with_file_document_and_since() -> None:
    provider = {
        "provider": "local",
        "reload": {
            "success": False,
            "lastSuccess": "2026-03-04T11:50:00+00:00",
            "error": {
                "message": "/etc/z.yaml:3:1: not valid YAML: found unclosed",
                "since": "2026-03-04T11:58:00+00:00",
            },
        },
        "problems": [
            {
                "file": "/etc/z.yaml",
                "document": 2,
                "kind": "HTTPScaledObject",
                "name": "b",
                "message": "spec.host: unknown field; did you mean hosts?; keeping its last good version",
                "severity": "error",
                "since": "2026-03-04T11:57:00+00:00",
            },
            {
                "file": "/etc/z.yaml",
                "document": None,
                "kind": "HTTPScaledObject",
                "name": "default/a",
                "message": "replicas.max 100 exceeds the 2 port(s)",
                "severity": "warning",
                "since": "2026-03-04T11:00:00+00:00",
            },
        ],
    }
    document = {"provider": provider, "targets": [], "heldTotal": 0, "extProc": {}}
    assert statuscli.render(document, NOW) == (
        "no targets\n\n"
        "! config reload failed, the previous config stays: /etc/z.yaml:3:1: not valid YAML: found unclosed "
        "(since 2m ago; last applied 10m ago)\n"
        "! /etc/z.yaml: document 2 (HTTPScaledObject b): spec.host: unknown field; did you mean hosts?; "
        "keeping its last good version (since 3m ago)\n"
        "~ /etc/z.yaml: (HTTPScaledObject default/a): replicas.max 100 exceeds the 2 port(s) (since 1h ago)\n"
        "\nheld 0; ext_proc streams 0, unmatched 0; provider local\n"
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.0004, "0ms"), (0.612, "612ms"), (4.25, "4.2s"), (59.94, "59.9s"), (125.7, "2m05s")]
)
def test_took(seconds: float, text: str) -> None:
    assert statuscli.took(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(-3, "0s ago"), (59.9, "59s ago"), (60, "1m ago"), (7199, "1h ago"), (172800, "2d ago")]
)
def test_ago(seconds: float, text: str) -> None:
    assert statuscli.ago(seconds) == text


@pytest.mark.parametrize(("value", "text"), [(None, "-"), (0.0, "0"), (2.5, "2.5"), (12.0, "12"), (0.3334, "0.333")])
def test_number(value: float | None, text: str) -> None:
    assert statuscli.number(value) == text


def test_admin_url_comes_from_the_flag_then_the_environment_then_the_default() -> None:
    env = {statuscli.ADMIN_URL_ENV: "http://zerohop.internal:9091/"}
    assert statuscli.admin_url("127.0.0.1:9999", env) == "http://127.0.0.1:9999"
    assert statuscli.admin_url(None, env) == "http://zerohop.internal:9091"
    assert statuscli.admin_url(None, {}) == "http://127.0.0.1:9091"
    assert statuscli.admin_url("https://gw.example/zerohop/status", {}) == "https://gw.example/zerohop"


# --- the command against local servers ----------------------------------------------------------------------


class FakeAdmin(BaseHTTPRequestHandler):
    """`/status`: the fixture; `/flaky/status`: the fixture once, then 503; others: what zerohop never answers."""

    flaky_calls = 0

    def do_GET(self) -> None:
        if self.path == "/flaky/status":
            FakeAdmin.flaky_calls += 1
            if FakeAdmin.flaky_calls > 1:
                self._send(503, "text/plain", b"overloaded")
                return
        if self.path in ("/status", "/flaky/status"):
            self._send(200, "application/json", json.dumps(DOCUMENT).encode())
        elif self.path == "/html/status":
            self._send(200, "text/html", b"<html>a login page</html>")
        elif self.path == "/other/status":
            self._send(200, "application/json", b'{"status": "ok"}')
        else:
            self._send(404, "text/plain", b"not found")

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(statuscli, "_now", lambda: NOW)
    monkeypatch.delenv(statuscli.ADMIN_URL_ENV, raising=False)
    FakeAdmin.flaky_calls = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAdmin)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["status", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_status_prints_the_table(admin: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--admin", admin) == (0, EXPECTED, "")


def test_status_reads_the_url_from_the_environment(
    admin: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(statuscli.ADMIN_URL_ENV, admin.removeprefix("http://"))
    assert run(capsys) == (0, EXPECTED, "")


def test_json_prints_the_raw_document(admin: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--admin", admin, "--json")
    assert code == 0
    assert json.loads(out) == DOCUMENT


def test_a_dead_admin_url_is_an_error_line_then_where_to_look_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = run(capsys, "--admin", url)
    assert (code, out) == (1, "")
    first, *hint = err.splitlines()
    assert first == f"zerohop status: cannot reach {url}/status: Connection refused"
    hint_text = " ".join(line.strip() for line in hint)
    for needle in (
        "The URL came from --admin.",
        "`zerohop serve` listens for admin on --admin-address ($ZEROHOP_ADMIN_ADDRESS), 127.0.0.1:9091 by default",
        "--admin PORT",
        "$ZEROHOP_ADMIN_URL",
        "kubectl -n zerohop-system port-forward deploy/zerohop 9091:9091",
    ):
        assert needle in hint_text, hint_text


def test_where_to_look_names_where_the_url_came_from() -> None:
    assert "came from $ZEROHOP_ADMIN_URL." in statuscli.where_to_look(None, {"ZEROHOP_ADMIN_URL": ":1"})
    assert "came from the default (no --admin, no $ZEROHOP_ADMIN_URL)." in statuscli.where_to_look(None, {})


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/nothing", "answered HTTP 404 Not Found"),
        ("/html", "did not answer JSON"),
        ("/other", "has no list of targets"),
    ],
)
def test_a_url_that_is_not_zerohop_is_one_error_line_and_exit_1(
    admin: str, capsys: pytest.CaptureFixture[str], path: str, reason: str
) -> None:
    expected = f"zerohop status: {admin}{path}/status {reason}: not a zerohop admin URL?\n"
    assert run(capsys, "--admin", admin + path) == (1, "", expected)


def test_help_explains_the_admin_url(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--admin PORT|URL", "--watch [SECONDS]", "--json", "$ZEROHOP_ADMIN_URL", "http://127.0.0.1:9091"):
        assert needle in text


def test_watch_rejects_a_non_positive_interval(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "--watch", "0"])
    assert exited.value.code == 2
    assert "must be more than 0 seconds" in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def watch(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], screens: int, out: io.StringIO
) -> tuple[int, list[float], str]:
    """Run `zerohop status --watch ...` until its `screens`-th sleep, which stands for Ctrl-C."""
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == screens:
            raise KeyboardInterrupt

    monkeypatch.setattr(statuscli.time, "sleep", sleep)
    err = io.StringIO()
    code = statuscli.main(cli.parser().parse_args(["status", *argv]), out, err)
    return code, sleeps, err.getvalue()


def test_watch_prints_successive_tables_without_escape_codes_when_not_a_terminal(
    admin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    code, sleeps, _ = watch(monkeypatch, ["--admin", admin, "--watch"], 2, out)
    assert (code, sleeps) == (0, [2.0, 2.0])
    local = NOW.astimezone().strftime("%H:%M:%S")
    screen = f"zerohop 0.1.0 at {admin}, every 2s, {local}\n\n{EXPECTED}\n"
    assert out.getvalue() == screen * 2


def test_watch_redraws_a_terminal_in_place_and_keeps_stale_data_when_the_server_fails(
    admin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = Terminal()
    code, sleeps, _ = watch(monkeypatch, ["--admin", admin + "/flaky", "--watch", "0.5"], 2, out)
    assert (code, sleeps) == (0, [0.5, 0.5])
    first, second = out.getvalue().split("\x1b[H\x1b[J")[1:]
    local = NOW.astimezone().strftime("%H:%M:%S")
    assert first == f"zerohop 0.1.0 at {admin}/flaky, every 0.5s, {local}\n\n{EXPECTED}"
    stale = f"! {admin}/flaky/status answered HTTP 503 Service Unavailable; "
    assert second == first.replace("\n\n", f"\n{stale}showing data from {local}\n\n", 1)


def test_watch_with_json_off_a_terminal_prints_json_lines(admin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    code, _, err = watch(monkeypatch, ["--admin", admin + "/flaky", "--watch", "--json"], 3, out)
    assert code == 0
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [DOCUMENT]
    assert err.count("answered HTTP 503") == 2


def test_watch_fails_at_once_when_the_first_read_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, sleeps, err = watch(monkeypatch, ["--admin", url, "--watch"], 1, io.StringIO())
    assert (code, sleeps) == (1, [])
    assert err.startswith(f"zerohop status: cannot reach {url}/status: Connection refused\n  The URL came from")


def test_a_bare_port_means_the_local_admin_server(admin: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert statuscli.admin_url("9091", {}) == "http://127.0.0.1:9091"
    assert statuscli.admin_url(":9091", {}) == "http://127.0.0.1:9091"
    code, out, _ = run(capsys, "--admin", admin.rsplit(":", 1)[1], "--json")
    assert code == 0
    assert json.loads(out) == DOCUMENT
