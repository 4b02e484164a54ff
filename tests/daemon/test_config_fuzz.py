"""Issue 14: a property-based fuzz of the configuration. Random TOML trees mutated from the example
configs (`deploy/config/*.toml`) plus random `QUOTAPILOT_…` environment overrides:

- `check-config` exits 0 or 2, never anything else, never a traceback;
- `check-config --json` and plain `check-config` agree;
- when it exits 0, `run`'s own path accepts the same settings (no disagreement) and the daemon
  opens, starts (binds its listener) and stops cleanly, in-process (`commands.run.serve`).

Bounded for CI (`QP_CONFIG_FUZZ_EXAMPLES`, default 40). A longer run:
    QP_CONFIG_FUZZ_EXAMPLES=1000 QP_CONFIG_FUZZ_REPORT=/tmp/fuzz.json \\
        .venv/bin/pytest -q tests/daemon/test_config_fuzz.py
writes the tallies (examples, accepted, refused, run ok, tracebacks, disagreements) to the report.

File and store paths are drawn from a fixed set under a temporary directory (existing token,
empty, missing, a directory, world-writable, not PEM, ...), never from random text, so a mutation
cannot make the daemon write outside the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import os
import tempfile
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import toml_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotapilot.daemon.cli import main
from quotapilot.daemon.commands.check_config import settings_to_run
from quotapilot.daemon.commands.run import serve
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.simulator.tls import make_certificates

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "deploy" / "config").glob("*.toml"))
MAX_EXAMPLES = int(os.environ.get("QP_CONFIG_FUZZ_EXAMPLES", "40"))
REPORT = os.environ.get("QP_CONFIG_FUZZ_REPORT")
SANDBOX = Path(tempfile.mkdtemp(prefix="qp-config-fuzz-"))
TALLY: Counter[str] = Counter()

FILE_KEYS = {"token_file", "password_file", "ca_file", "write_token_file"}


# ------------------------------------------------------------------------------- the sandbox
def _sandbox_files() -> dict[str, str]:
    files = {"token": SANDBOX / "vms.token", "empty": SANDBOX / "empty", "dir": SANDBOX / "adir",
             "world_writable": SANDBOX / "ww.token", "world_readable": SANDBOX / "wr.token",
             "not_pem": SANDBOX / "not.pem", "binary": SANDBOX / "binary"}
    files["token"].write_text("t0ken\n")
    files["token"].chmod(0o600)
    files["empty"].write_text("")
    files["dir"].mkdir(exist_ok=True)
    files["world_writable"].write_text("t\n")
    files["world_writable"].chmod(0o666)
    files["world_readable"].write_text("t\n")
    files["world_readable"].chmod(0o644)
    files["not_pem"].write_text("hello\n")
    files["binary"].write_bytes(b"\xff\xfe\x00")
    paths = {name: str(path) for name, path in files.items()}
    paths["ca"] = str(make_certificates(SANDBOX / "tls").ca_file)
    paths["missing"] = str(SANDBOX / "missing")
    paths["relative"] = "vms.token"
    paths["credentials"] = "${CREDENTIALS_DIRECTORY}/vms.token"
    return paths


FILES = _sandbox_files()
GOOD_FILE = {"token_file": FILES["token"], "password_file": FILES["token"], "ca_file": FILES["ca"],
             "write_token_file": FILES["token"]}


def _example(path: Path) -> dict[str, Any]:
    """An example config made runnable here: its secret and CA files point into the sandbox, its
    store is a fresh file there, its listener is loopback on any free port."""
    data = tomllib.loads(path.read_text())

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (GOOD_FILE[k] if k in FILE_KEYS else fix(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    data = fix(data)
    data.setdefault("http", {})["listen"] = "127.0.0.1:0"
    data.setdefault("forecast", {})["workers"] = 0  # no process pool per example
    return data


BASES = [_example(p) for p in EXAMPLES]


def store_paths(workdir: Path) -> list[str]:
    (workdir / "text.db").write_text("not a database\n")
    return [str(workdir / "state.db"), str(workdir / "new" / "deeper" / "state.db"), str(workdir),
            str(workdir / "text.db"), str(workdir / "text.db" / "state.db"), ""]


# ------------------------------------------------------------------------------- TOML out
def _deep(value: Any) -> str:
    if isinstance(value, Deep):
        return "[" * value.depth + "]" * value.depth
    raise TypeError(value)


def to_toml(data: dict[str, Any]) -> str:
    return toml_text.to_toml(data, _deep)


class Deep:
    """An array nested `depth` deep (written directly: building it as lists would recurse)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def __repr__(self) -> str:
        return f"Deep({self.depth})"


# ------------------------------------------------------------------------------- mutations
INTERESTING_STRINGS = ["", " ", "1h", "0s", "1us", "7d", "1e999s", "-1h", "10TiB", "0B", "1e400TB", "lots",
                       "127.0.0.1:99999", "127.0.0.1:0", "[::1]:0", "localhost:0", ":9187", "nan", "inf",
                       "enforce", "observe", "debug", "json", "*", "/cosmos7/*", "00:00", "25:99",
                       "http://127.0.0.1:9/", "ftp://x", "mqtt", "log", "alertmanager", "slack", "x" * 300,
                       "\x00", "é", "${HOME}", "vms.example.org"]
scalars = st.one_of(
    st.sampled_from(INTERESTING_STRINGS),
    st.text(max_size=12),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**62, 2**63, 65535, 65536, 99999]),
    st.floats(),
    st.sampled_from([0.0, 1e-6, 0.001, 0.5, 1.0, 1.2, 1.5, 1e300, float("inf"), float("-inf"), float("nan")]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*prefix, i)
            yield from _paths(value, (*prefix, i))


def _plausible(draw: st.DrawFn, current: Any) -> Any:
    """A value of the same kind as `current`, often near it: most of these pass the model, so
    the run half of the property gets exercised too."""
    if isinstance(current, bool):
        return draw(st.booleans())
    if isinstance(current, int | float):
        factor = draw(st.sampled_from([0, 0.001, 0.1, 0.5, 0.9, 1.1, 2, 10, 1000, -1]))
        scaled = current * factor
        return int(scaled) if isinstance(current, int) and draw(st.booleans()) else scaled
    if isinstance(current, str):
        return draw(st.sampled_from(INTERESTING_STRINGS) | st.just(current + draw(st.sampled_from(["", "0", "s"]))))
    return draw(values)


def _value_for(draw: st.DrawFn, key: Any, store_choices: list[str], current: Any = None) -> Any:
    if key in FILE_KEYS:
        return draw(st.sampled_from(sorted(FILES.values())))
    if key == "path" and draw(st.booleans()):
        return draw(st.sampled_from(store_choices))
    if draw(st.integers(0, 40)) == 0:
        return Deep(draw(st.sampled_from([50, 1000, 5000])))
    if current is not None and draw(st.integers(0, 2)) > 0:
        return _plausible(draw, current)
    return draw(values)


@st.composite
def mutated(draw: st.DrawFn, store_choices: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    data = copy.deepcopy(draw(st.sampled_from(BASES)))
    data["store"] = {**data.get("store", {}), "path": store_choices[0]}
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3, 4]))):
        paths = list(_paths(data))
        path = draw(st.sampled_from(paths)) if paths else ("poll",)
        parent: Any = data
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        if path[:2] == ("store", "path"):
            parent[key] = draw(st.sampled_from(store_choices))
            continue
        action = draw(st.sampled_from(["set", "set", "delete", "add"]))
        if action == "delete":
            del parent[key]
        elif action == "add" and isinstance(parent[key], dict):
            parent[key][draw(st.sampled_from(["interval_seconds", "grow_at", "listen", "thresholds", "token",
                                              "write_token", "extra", "retry_backoffs_seconds", "mode"]))] = \
                _value_for(draw, key, store_choices)
        elif action == "add" and isinstance(parent[key], list):
            parent[key].append(_value_for(draw, key, store_choices))
        else:
            parent[key] = _value_for(draw, key, store_choices, parent[key])
    environment: dict[str, str] = {}
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from([
            "QUOTAPILOT_POLL__INTERVAL_SECONDS", "QUOTAPILOT_POLL__STALE_AFTER_INTERVALS", "QUOTAPILOT_HTTP__LISTEN",
            "QUOTAPILOT_HTTP__WRITE_TOKEN", "QUOTAPILOT_POLICY__GROW_AT", "QUOTAPILOT_POLICY__MODE",
            "QUOTAPILOT_CLUSTERS", "QUOTAPILOT_FORECAST__THRESHOLDS", "QUOTAPILOT_ALERTS__RETRY_BACKOFFS_SECONDS",
            "QUOTAPILOT_VAST__REQUEST_TIMEOUT_SECONDS", "QUOTAPILOT_POLICY", "QUOTAPILOT_NOPE"]))
        environment[name] = draw(st.one_of(  # (an environment value cannot hold a NUL)
            st.sampled_from([s for s in INTERESTING_STRINGS if "\x00" not in s]),
            st.sampled_from(["[{", "[0.5,", "[1.0]", "[1, 2]", "[]", "{}", '{"mode": "enforce"}', "[" * 3000,
                             '[{"name": "c", "address": "h", "token": "t"}]']),
            st.text(max_size=10).filter(lambda s: "\x00" not in s)))
    return data, environment


# ------------------------------------------------------------------------------- the property
@contextlib.contextmanager
def environment(overrides: dict[str, str]) -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("QUOTAPILOT_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(overrides)
    try:
        yield
    finally:
        for name in [k for k in os.environ if k.startswith("QUOTAPILOT_")]:
            del os.environ[name]
        os.environ.update(saved)


def check_config(config: Path, *flags: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check-config", "--config", str(config), *flags])
    return code, out.getvalue(), err.getvalue()


def run_briefly(settings_: Settings) -> int:
    """`run`'s path in-process: open the daemon, start it (HTTP bound, tasks started), stop at once."""
    return asyncio.run(serve(settings_, on_open=lambda daemon: daemon.stop(), handle_signals=False))


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if REPORT:
        Path(REPORT).write_text(json.dumps(dict(TALLY), indent=1, sort_keys=True))


@pytest.mark.timeout(120 + 2 * MAX_EXAMPLES)  # one test runs every example
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=not os.environ.get("QP_CONFIG_FUZZ_RANDOM"),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(data=st.data())
def test_check_config_and_run_agree(data: st.DataObject) -> None:
    workdir = Path(tempfile.mkdtemp(dir=SANDBOX))
    config, overrides = data.draw(mutated(store_paths(workdir)))
    path = workdir / "q.toml"
    text = to_toml(config)
    if data.draw(st.integers(0, 9)) == 0:  # now and then the text itself is broken: cut, spliced, doubled
        at = data.draw(st.integers(0, len(text)))
        text = data.draw(st.sampled_from([text[:at], text[:at] + data.draw(st.text(max_size=5)) + text[at:],
                                          text + text, text[:at] + "[" + text[at:]]))
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    TALLY["examples"] += 1
    cwd = Path.cwd()
    os.chdir(workdir)  # a relative file path resolves in the sandbox
    try:
        with environment(overrides):
            code, out, err = check_config(path, "--json")
            plain, _, plain_err = check_config(path)
            if "Traceback" in err + plain_err:
                TALLY["tracebacks"] += 1
            assert "Traceback" not in err + plain_err
            assert code in (0, 2), (code, err)
            if code != plain:
                TALLY["disagreements"] += 1
            assert code == plain
            report = json.loads(out)
            assert report["valid"] is (code == 0)
            accepted = settings_to_run(path, as_json=True)
            if (accepted is not None) != (code == 0):
                TALLY["disagreements"] += 1
            assert (accepted is not None) == (code == 0)
            if accepted is None:
                TALLY["refused"] += 1
                return
            TALLY["accepted"] += 1
            rc = run_briefly(accepted)
            if rc != 0:
                TALLY["run_failed"] += 1
            assert rc == 0
            TALLY["run_ok"] += 1
    finally:
        os.chdir(cwd)
