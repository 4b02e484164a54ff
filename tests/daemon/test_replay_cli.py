"""`quotapilot replay --csv`: files in, one JSON object (or a table) out, plots on disk."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from quotapilot.daemon.cli import main
from quotapilot.daemon.commands.replay import replay_settings_for

TIB = 2**40
T0 = 1_767_225_600.0


def write_trace(path: Path, *, days: float = 4, tib_per_day: float = 20, start_tib: float = 10,
                hard_tib: float | None = None) -> None:
    lines = ["timestamp,used_bytes" + (",hard_limit_bytes" if hard_tib is not None else "")]
    level = start_tib * TIB
    for i in range(int(days * 24)):
        t = T0 + i * 3600
        row = f"{t:.0f},{int(level)}" + (f",{int(hard_tib * TIB)}" if hard_tib is not None else "")
        lines.append(row)
        level += tib_per_day * TIB / 24 * (1 + 0.5 * math.sin(2 * math.pi * i / 24))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "quotapilot.toml"
    path.write_text("[policy]\nmode = \"observe\"\n")
    return path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(list(argv)) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    parsed: dict[str, object] = json.loads(out)
    return parsed


class TestCsv:
    def test_json_has_totals_and_targets(self, tmp_path: Path, config: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
        traces = tmp_path / "traces"
        traces.mkdir()
        write_trace(traces / "raw.csv", hard_tib=15)
        write_trace(traces / "processed.csv", tib_per_day=5)
        report = run_json(capsys, "replay", "--config", str(config), "--csv", str(traces), "--json")
        assert {"quotapilot", "reactive", "targets", "recorded"} <= set(report)
        targets = report["targets"]
        assert isinstance(targets, dict)
        assert {"raw", "processed"} == set(targets)
        for name in ("raw", "processed"):
            for policy in ("quotapilot", "reactive"):
                assert {"write_failures", "growth_actions", "bytes_added", "mean_utilization",
                        "peak_utilization"} <= set(targets[name][policy])
        # processed has no limit column: it starts at 1.25 x its first usage (10 TiB)
        assert "recorded" not in targets["processed"]
        assert targets["raw"]["recorded"]["near_misses"] > 0  # 15 TiB fixed while usage passes it
        totals = report["quotapilot"]
        assert isinstance(totals, dict)
        assert totals["growth_actions"] == sum(targets[n]["quotapilot"]["growth_actions"] for n in targets)

    def test_initial_limit_flag(self, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        write_trace(tmp_path / "q.csv", days=2, tib_per_day=0.01)
        report = run_json(capsys, "replay", "--config", str(config), "--csv", str(tmp_path),
                          "--initial-limit", "100TiB", "--json")
        assert report["targets"]["q"]["quotapilot"]["final_hard_limit_bytes"] == 100 * TIB  # type: ignore[index]

    def test_since_clips_the_window(self, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        write_trace(tmp_path / "q.csv", days=4)
        report = run_json(capsys, "replay", "--config", str(config), "--csv", str(tmp_path),
                          "--since", "1d", "--json")
        assert report["targets"]["q"]["samples"] == 25  # type: ignore[index]

    def test_policy_file_is_layered_over_the_config(self, tmp_path: Path, config: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
        traces = tmp_path / "traces"
        traces.mkdir()
        write_trace(traces / "q.csv")
        base = run_json(capsys, "replay", "--config", str(config), "--csv", str(traces), "--json")
        policy = tmp_path / "policy.toml"
        policy.write_text("[policy]\nmin_growth_bytes = \"40TiB\"\nstep_bytes = \"40TiB\"\n")
        tuned = run_json(capsys, "replay", "--config", str(config), "--csv", str(traces),
                         "--policy-file", str(policy), "--json")
        growths = tuned["targets"]["q"]["growths"]  # type: ignore[index]
        assert growths and all(g["new_hard_bytes"] - g["old_hard_bytes"] >= 40 * TIB for g in growths)
        assert base["quotapilot"] != tuned["quotapilot"]

    def test_text_table_and_plots(self, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        traces = tmp_path / "traces"
        traces.mkdir()
        write_trace(traces / "raw.csv", hard_tib=15)
        plots = tmp_path / "plots"
        assert main(["replay", "--config", str(config), "--csv", str(traces), "--plot", str(plots)]) == 0
        captured = capsys.readouterr()
        assert "raw" in captured.out and "reactive" in captured.out and "quotapilot" in captured.out
        png = plots / "raw.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(png) in captured.err


class TestEmptyLimitCells:
    """An empty hard_limit_bytes cell is the limit of the row before (none known yet before the
    first value); one such cell dropped every limit of the file, as if the column were absent."""

    def test_an_empty_cell_keeps_the_previous_limit(self, tmp_path: Path, config: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
        for name in ("full", "gaps"):
            (tmp_path / name).mkdir()
            write_trace(tmp_path / name / "raw.csv", days=2, hard_tib=15)
        path = tmp_path / "gaps" / "raw.csv"
        lines = path.read_text().splitlines()
        path.write_text("\n".join(line.rsplit(",", 1)[0] + "," if 5 <= i <= 20 else line
                                  for i, line in enumerate(lines)) + "\n")
        full, gaps = (run_json(capsys, "replay", "--config", str(config), "--csv", str(tmp_path / name), "--json")
                      for name in ("full", "gaps"))
        assert full == gaps
        assert gaps["targets"]["raw"]["recorded"]  # type: ignore[index]

    @pytest.mark.parametrize(("flags", "start_tib"), [((), 100), (("--initial-limit", "200TiB"), 200)])
    def test_the_replay_starts_from_the_first_limit_known(self, tmp_path: Path, config: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          flags: tuple[str, ...], start_tib: int) -> None:
        """Before the first value no limit is known: `--initial-limit` sets the start, else the first
        recorded limit does (not 1.25 x the first usage, as without the column)."""
        write_trace(tmp_path / "q.csv", days=2, tib_per_day=0.01, hard_tib=100)
        lines = (tmp_path / "q.csv").read_text().splitlines()
        (tmp_path / "q.csv").write_text("\n".join(line.rsplit(",", 1)[0] + "," if 1 <= i <= 3 else line
                                                  for i, line in enumerate(lines)) + "\n")
        report = run_json(capsys, "replay", "--config", str(config), "--csv", str(tmp_path), *flags, "--json")
        target = report["targets"]["q"]  # type: ignore[index]
        assert target["quotapilot"]["final_hard_limit_bytes"] == start_tib * TIB
        assert "recorded" not in target  # the limits as they were are not known for every sample


class TestUnlimitedQuota:
    def test_a_zero_hard_limit_is_no_limit(self, tmp_path: Path, config: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
        """VAST's hard limit 0 is "no hard limit" (as the importer reads it): a sample under it is
        no write failure. Here the quota had none for a day, then one set below its usage."""
        rows = [(T0 + i * 3600, 10 * TIB + i * TIB // 10, 0 if i < 24 else 12 * TIB) for i in range(48)]
        (tmp_path / "q.csv").write_text("timestamp,used_bytes,hard_limit_bytes\n"
                                        + "".join(f"{t:.0f},{u},{h}\n" for t, u, h in rows))
        report = run_json(capsys, "replay", "--config", str(config), "--csv", str(tmp_path), "--json")
        recorded = report["targets"]["q"]["recorded"]  # type: ignore[index]
        over = [t for t, u, h in rows if h > 0 and u > h]
        assert over
        assert (len(over), over[0]) == (recorded["write_failures"], recorded["first_write_failure_at"])
        assert recorded["near_misses"] == sum(1 for _, u, h in rows if h > 0 and u >= 0.95 * h)
        assert report["recorded"]["write_failures"] == len(over)  # type: ignore[index]


class TestBadInput:
    @pytest.mark.parametrize(("content", "problem"), [
        ("time,used\n1,2\n", "line 1: header"),
        ("timestamp,used_bytes\n1,2\n2,abc\n", "line 3: used_bytes is not a number"),
        ("timestamp,used_bytes,hard_limit_bytes\n1,2,9\n2,3,\n3,4,9 TB\n", "line 4: hard_limit_bytes is not a number"),
        ("timestamp,used_bytes\n1,2\n1,3\n", "need at least 2 samples"),  # one moment read twice: one sample
        ("timestamp,used_bytes\n1,2\n3,3\n2,4\n", "line 4: timestamps must increase"),
        ("timestamp,used_bytes\n1,2\n", "need at least 2 samples"),
        ("timestamp,used_bytes\nyesterday,2\n2,3\n", "line 2: not an ISO 8601"),
    ])
    def test_exit_2_naming_file_and_line(self, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str],
                                         content: str, problem: str) -> None:
        (tmp_path / "bad.csv").write_text(content)
        assert main(["replay", "--config", str(config), "--csv", str(tmp_path), "--json"]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert "bad.csv" in captured.err and problem in captured.err

    @pytest.mark.parametrize(("content", "problem"), [
        (b"timestamp,used_bytes\n1,2\n2,3 \xff\n", "line 3: not UTF-8"),  # named neither file nor line
        (b"timestamp,used_bytes\n1767225600000,2\n1767229200000,3\n", "line 2: epoch seconds out of range"),
    ])
    def test_bytes_and_times_name_file_and_line(self, tmp_path: Path, config: Path,
                                                capsys: pytest.CaptureFixture[str], content: bytes,
                                                problem: str) -> None:
        (tmp_path / "bad.csv").write_bytes(content)
        assert main(["replay", "--config", str(config), "--csv", str(tmp_path), "--json"]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert "bad.csv" in captured.err and problem in captured.err

    def test_utf8_byte_order_mark_is_read(self, tmp_path: Path, config: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
        """Excel's "CSV UTF-8" starts with a byte-order mark: the header was refused as
        '\\ufefftimestamp,used_bytes'. The same trace with and without it replays alike."""
        for name, mark in (("plain", b""), ("excel", b"\xef\xbb\xbf")):
            (tmp_path / name).mkdir()
            write_trace(tmp_path / name / "raw.csv", days=2, hard_tib=15)
            path = tmp_path / name / "raw.csv"
            path.write_bytes(mark + path.read_bytes())
        plain, excel = (run_json(capsys, "replay", "--config", str(config), "--csv", str(tmp_path / name), "--json")
                        for name in ("plain", "excel"))
        assert plain == excel
        assert plain["targets"]["raw"]["recorded"]  # type: ignore[index]  # the limit column was read

    def test_a_repeated_timestamp_takes_the_later_row(self, tmp_path: Path, config: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
        """A series logged in local time repeats a timestamp at the spring daylight-saving change
        (NAB's ec2_disk_write_bytes: 2014-03-09 03:00:00 eleven times): it was refused ("timestamps
        must increase"); the later reading of one moment is taken, as `forecast --csv` does. The
        same trace with the repeats replays like the one without them."""
        for name in ("plain", "repeats"):
            (tmp_path / name).mkdir()
            write_trace(tmp_path / name / "raw.csv", days=2, hard_tib=15)
        path = tmp_path / "repeats" / "raw.csv"
        lines = path.read_text().splitlines()
        path.write_text("\n".join(lines[:30] + [lines[30]] * 10 + lines[30:]) + "\n")
        plain, repeats = (run_json(capsys, "replay", "--config", str(config), "--csv", str(tmp_path / name), "--json")
                          for name in ("plain", "repeats"))
        assert plain == repeats

    @pytest.mark.parametrize("where", ["a-file", "a-file/plots"])
    @pytest.mark.parametrize("as_json", [True, False])
    def test_a_plot_dir_that_cannot_be_made(self, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str],
                                            where: str, as_json: bool) -> None:
        """Guards `--plot DIR` where DIR is a file (or under one): FileExistsError from mkdir was
        a traceback (exit 1) after the replay ran. Now the directory is checked before anything
        runs: one line naming it, exit 2 (bad usage), nothing on stdout."""
        traces = tmp_path / "traces"
        traces.mkdir()
        write_trace(traces / "q.csv", days=1)
        (tmp_path / "a-file").write_text("I am a file")
        plots = tmp_path / where
        argv = ["replay", "--config", str(config), "--csv", str(traces), "--plot", str(plots)]
        assert main(argv + ["--json"] * as_json) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith("quotapilot replay: --plot ") and str(plots) in captured.err
        assert len(captured.err.strip().splitlines()) == 1

    def test_a_plot_dir_is_made_with_its_parents(self, tmp_path: Path, config: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
        """The check does not refuse what works: a directory that does not exist yet is made."""
        write_trace(tmp_path / "q.csv", days=1)
        plots = tmp_path / "new" / "plots"
        run_json(capsys, "replay", "--config", str(config), "--csv", str(tmp_path), "--plot", str(plots), "--json")
        assert (plots / "q.png").stat().st_size > 1000

    def test_empty_dir_and_bad_policy(self, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        empty = tmp_path / "empty"
        empty.mkdir()
        assert main(["replay", "--config", str(config), "--csv", str(empty)]) == 2
        assert "no *.csv files" in capsys.readouterr().err
        write_trace(tmp_path / "q.csv", days=1)
        policy = tmp_path / "policy.toml"
        policy.write_text("[policy]\ngrow_at = 0.5\n")  # below target_utilization: invalid
        assert main(["replay", "--config", str(config), "--csv", str(tmp_path), "--policy-file", str(policy)]) == 2
        assert "policy.target_utilization" in capsys.readouterr().err


class TestDemoByPath:
    async def test_demo_json_has_by_path_that_adds_up(self) -> None:
        from quotapilot.daemon.commands.demo import DemoOptions, run_demo

        report = await run_demo(DemoOptions(days=1.5))
        by_path = report["by_path"]
        assert set(by_path) == set(report["final_hard_limits"])
        for figures in by_path.values():
            assert {"write_failures", "growth_actions", "bytes_added", "mean_utilization",
                    "peak_utilization"} <= set(figures)
        assert sum(f["write_failures"] for f in by_path.values()) == report["write_failures"]
        assert sum(f["growth_actions"] for f in by_path.values()) >= 1
        assert sum(f["bytes_added"] for f in by_path.values()) == report["bytes_added"]


class TestReplayLinesUpWithTheDemo:
    async def test_cosmos7_ground_truth_replayed_like_the_demo_ran_it(self) -> None:
        """The demo (simulator + the whole daemon over HTTPS) and a replay of the scenario's
        ground truth (limits lifted) agree view by view: the same growths, the same utilization."""
        from quotapilot.daemon.clock import VirtualClock
        from quotapilot.daemon.commands.demo import DEMO_POLICY, DemoOptions, run_demo
        from quotapilot.daemon.history.trace import scenario_trace
        from quotapilot.daemon.settings import load_settings
        from quotapilot.forecasting.replay import TargetTrace, combined_summary, replay_target

        days = 3.0
        demo = await run_demo(DemoOptions(days=days))
        settings = load_settings(None, policy=dict(DEMO_POLICY), forecast={"workers": 0})
        traces = scenario_trace("cosmos7", start=VirtualClock().now(), days=days, interval_seconds=900.0)
        replays = {}
        for trace in traces:
            replays[trace.path] = replay_target(
                TargetTrace(trace.name, trace.times, trace.used_bytes,
                            initial_hard_limit_bytes=trace.initial_hard_limit_bytes,
                            initial_soft_limit_bytes=trace.initial_soft_limit_bytes, path=trace.path),
                replay_settings_for(settings, TargetTrace(trace.name, [0, 1], [1, 1], path=trace.path)))
        assert set(replays) == set(demo["by_path"])
        for path, replay in replays.items():
            shown = demo["by_path"][path]
            assert (replay.quotapilot.write_failures, shown["write_failures"]) == (0, 0)
            assert replay.quotapilot.growth_actions == pytest.approx(shown["growth_actions"], rel=0.1), path
            assert replay.quotapilot.mean_utilization == pytest.approx(shown["mean_utilization"], rel=0.1), path
        totals = combined_summary([r.quotapilot for r in replays.values()])
        assert totals["growth_actions"] >= 3  # something to agree on: raw and processed each grew
        assert totals["growth_actions"] == pytest.approx(demo["growth_actions"], rel=0.1)
        assert totals["mean_utilization"] == pytest.approx(demo["mean_utilization"], rel=0.1)


class TestPrometheusFlags:
    def test_replay_prometheus_needs_history_url(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["replay", "--config", str(config), "--prometheus"]) == 2
        assert "history.prometheus_url: required with --prometheus" in capsys.readouterr().err

    def test_import_history_needs_history_url(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        config = tmp_path / "run.toml"
        config.write_text('[[clusters]]\nname = "c"\naddress = "vms.invalid"\ntoken = "t"\n')
        assert main(["import-history", "--config", str(config)]) == 2
        assert "history.prometheus_url: required by import-history" in capsys.readouterr().err
        config.write_text(config.read_text() + '[history]\nprometheus_url = "http://127.0.0.1:1"\n')
        assert main(["import-history", "--config", str(config), "--since", "soon"]) == 2
        assert "--since" in capsys.readouterr().err
