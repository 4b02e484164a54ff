"""The scenario TOML is user input: whatever it holds, loading it raises nothing but a clean
`ScenarioError` naming the field, a scenario that loads runs, and `quotapilot simulator --scenario
FILE` exits 0 or 2, never with a traceback (hypothesis: trees mutated from the built-ins)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toml_text import to_toml

from quotapilot.daemon.simulator import BUILTIN_SCENARIOS, Engine, Faults, ScenarioError, load_scenario
from quotapilot.daemon.simulator.events import install

START = 1_767_225_600.0
BUILTINS = {name: tomllib.loads(resources.files("quotapilot.daemon.simulator")
                                .joinpath(f"scenarios/{name}.toml").read_text())
            for name in BUILTIN_SCENARIOS}
ODD_STRINGS = ["5TB", "-1TB", "0", "7d", "-3h", "1e400", "nan", "inf", "", "/", "/a/b", "a/b", "2PB",
               "linear", "exponential", "daily", "weekly", "drop", "rewrite", "clock_step", "create_quota",
               "/cosmos7/raw", "99999999999999999999EB"]
VALUES = st.recursive(
    st.one_of(st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
              st.booleans(), st.text(max_size=12), st.sampled_from(ODD_STRINGS)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["at", "action", "path", "kind", "x", "hard_limit"]),
                                            inner, max_size=3)),
    max_leaves=6)


def slots(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in the tree (the root's children and below)."""
    found = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, child in items:
        found.append((*path, key))
        found.extend(slots(child, (*path, key)))
    return found


@st.composite
def mutated_scenarios(draw: st.DrawFn) -> dict[str, Any]:
    tree = json.loads(json.dumps(BUILTINS[draw(st.sampled_from(BUILTIN_SCENARIOS))]))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        positions = slots(tree)
        where = draw(st.sampled_from(positions)) if positions else ()
        parent: Any = tree
        for key in where[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["replace", "delete", "add", "events", "faults"]))
        if op == "replace" and where:
            parent[where[-1]] = draw(VALUES)
        elif op == "delete" and where:
            del parent[where[-1]]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "at", "kind", "quota", "ingest", "deletes"]))] = draw(VALUES)
        elif op in ("events", "faults"):
            tree.setdefault(op, [])
            if isinstance(tree[op], list):
                tree[op].append(draw(st.dictionaries(
                    st.sampled_from(["at", "action", "path", "name", "new_name", "new_path", "factor", "seconds",
                                     "hard_limit", "kind", "rate", "count", "start", "end", "values", "match",
                                     "apply_after", "status", "method"]),
                    st.one_of(VALUES, st.sampled_from(["1d", "operator_patch", "rename_quota", "error",
                                                       "/cosmos7/raw", "delayed_apply"])), max_size=6)))
    return tree


def check_loads_or_names_the_field(path: Path) -> None:
    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        assert isinstance(exc.field, str) and exc.field and exc.reason
        return
    engine = Engine(scenario, seed=0, start=START)
    install(engine, Faults(0), lambda seconds: None)
    engine.advance_to(START + 2 * 86400)
    engine.summary()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(tree=mutated_scenarios())
def test_a_mutated_scenario_loads_and_runs_or_names_the_field(tmp_path: Path, tree: dict[str, Any]) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_text(to_toml(tree))
    check_loads_or_names_the_field(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200), cut=st.integers(min_value=0, max_value=3000))
def test_any_text_loads_or_names_the_field(tmp_path: Path, text: str, cut: int) -> None:
    base = resources.files("quotapilot.daemon.simulator").joinpath("scenarios/churn.toml").read_text()
    path = tmp_path / "fuzz.toml"
    path.write_text(base[:cut] + text + base[cut:], encoding="utf-8")
    check_loads_or_names_the_field(path)


def test_deep_nesting_and_bad_bytes_name_the_scenario(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[scenario]\n")
    for path in (deep, binary, tmp_path):
        try:
            load_scenario(path)
        except ScenarioError as exc:
            assert exc.field == "scenario"
        else:
            raise AssertionError(f"{path} loaded")


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=mutated_scenarios())
def test_the_simulator_command_exits_0_or_2_never_a_traceback(tmp_path: Path, tree: dict[str, Any]) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_text(to_toml(tree))
    proc = subprocess.Popen([sys.executable, "-m", "quotapilot.daemon", "simulator", "--port", "0", "--json",
                             "--scenario", str(path), "--state-dir", str(tmp_path / "state")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the JSON line when it serves; "" when it exited
    if line:
        json.loads(line)
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 2), err[-2000:]
    assert "Traceback" not in err
