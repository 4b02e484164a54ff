"""`quotapilot forecast` through the CLI entry point."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from quotapilot.daemon.cli import main

T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def write_csv(path: Path, hours: int, rate: float, *, epoch: bool = False) -> tuple[float, dt.datetime]:
    used = 1e12
    lines = ["timestamp,used_bytes"]
    for k in range(hours * 2):
        t = T0 + dt.timedelta(minutes=30 * k + (7 if k % 3 == 0 else 0))  # irregular steps
        used = 1e12 + rate * (t - T0).total_seconds()
        lines.append(f"{t.timestamp() if epoch else t.isoformat()},{used:.0f}")
    path.write_text("\n".join(lines) + "\n")
    return used, t


class TestForecastCli:
    """JSON contract, table, plot, and bad input."""

    def test_json_constant_rate(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        used, last = write_csv(tmp_path / "u.csv", 30, 1e7, epoch=True)
        rc = main(["forecast", "--csv", str(tmp_path / "u.csv"), "--limit", str(int(used + 1e7 * 24 * 3600)),
                   "--horizon", "3d", "--json"])
        assert rc == 0
        out = json.loads(capsys.readouterr().out)
        assert {"model", "step_seconds", "fallback", "runway", "forecast"} <= set(out)
        assert list(out["runway"]) == ["0.75", "0.9", "1.0"]
        p50 = dt.datetime.fromisoformat(out["runway"]["1.0"]["p50"].replace("Z", "+00:00"))
        assert abs((p50 - last).total_seconds() - 24 * 3600) < 3600
        assert len(out["forecast"]) == 72
        assert all(p["p10"] <= p["p50"] <= p["p90"] for p in out["forecast"])

    @pytest.mark.parametrize("horizon", ["30m", "90m", "1d"])
    def test_nothing_is_forecast_past_the_horizon(self, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   horizon: str) -> None:
        """The forecast and its runways end at the requested horizon, not at the next hourly step:
        a limit reached 15 minutes past a 30-minute horizon is not within it."""
        used, _ = write_csv(tmp_path / "u.csv", 30, 1e7, epoch=True)
        seconds = {"30m": 1800, "90m": 5400, "1d": 86400}[horizon]
        limit = used + 1e7 * (seconds + 900)  # reached 15 minutes after the horizon
        assert main(["forecast", "--csv", str(tmp_path / "u.csv"), "--limit", str(int(limit)),
                     "--horizon", horizon, "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        t0 = dt.datetime.fromisoformat(out["t0"].replace("Z", "+00:00"))
        ends = [dt.datetime.fromisoformat(p["t"].replace("Z", "+00:00")) for p in out["forecast"]]
        assert (ends[-1] - t0).total_seconds() == pytest.approx(seconds)
        assert all((t - t0).total_seconds() <= seconds + 1e-6 for t in ends)
        assert out["runway"]["1.0"] == {"p10": None, "p50": None, "p90": None}

    def test_table_and_plot(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        used, _ = write_csv(tmp_path / "u.csv", 60, 1e7)
        rc = main(["forecast", "--csv", str(tmp_path / "u.csv"), "--limit", str(int(used * 1.5)),
                   "--horizon", "2d", "--plot", str(tmp_path / "u.png")])
        assert rc == 0
        text = capsys.readouterr().out
        assert "runway" in text and "p50" in text
        assert (tmp_path / "u.png").stat().st_size > 1000

    @pytest.mark.parametrize(("body", "line"), [
        ("timestamp,used_bytes\n2026-01-01T00:00:00Z,100\nnot-a-time,oops\n", 3),
        ("timestamp,used_bytes\n2026-01-01T00:00:00Z,100\n2026-01-01T01:00:00Z,-5\n", 3),
        ("time,bytes\n1,2\n", 1),
        ("timestamp,used_bytes\n1767225600,100\n1767229200\n", 3),
    ])
    def test_bad_csv_names_the_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    body: str, line: int) -> None:
        (tmp_path / "bad.csv").write_text(body)
        assert main(["forecast", "--csv", str(tmp_path / "bad.csv"), "--json"]) == 2
        captured = capsys.readouterr()
        assert f"line {line}" in captured.err and captured.out == ""

    @pytest.mark.parametrize(("body", "line", "problem"), [
        # epoch milliseconds (a common export): the year 57993 was a ValueError traceback, exit 1
        (b"timestamp,used_bytes\n1767225600000,100\n1767229200000,200\n1767232800000,300\n", 2, "out of range"),
        (b"timestamp,used_bytes\n1767225600,100\n-1e12,200\n", 3, "out of range"),
        (b"timestamp,used_bytes\n1e300,100\n2e300,200\n", 2, "out of range"),
        # 1e155 bytes: the forecast overflowed to NaN, a ValueError traceback at round(), exit 1
        (b"timestamp,used_bytes\n1767225600,1000000000000\n1767229200,1e155\n", 3, "used_bytes above"),
        (b"timestamp,used_bytes\n1767225600,100\n1767229200,9223372036854775808\n", 3, "used_bytes above"),
        # a Latin-1 byte: the message named neither the file nor the line
        (b"timestamp,used_bytes\n1767225600,100\n1767229200,200 \xb5\n1767232800,300\n", 3, "not UTF-8"),
    ])
    def test_unreadable_rows_name_the_file_and_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    body: bytes, line: int, problem: str) -> None:
        (tmp_path / "bad.csv").write_bytes(body)
        assert main(["forecast", "--csv", str(tmp_path / "bad.csv"), "--json"]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and "Traceback" not in captured.err
        assert f"bad.csv: line {line}: " in captured.err and problem in captured.err

    def test_utf8_byte_order_mark_is_read(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Excel's "CSV UTF-8" starts with a byte-order mark: the header was refused as
        '\\ufefftimestamp,used_bytes'. The same file with and without it gives the same report."""
        used, _ = write_csv(tmp_path / "plain.csv", 30, 1e7)
        (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "plain.csv").read_bytes())
        reports = []
        for name in ("plain.csv", "excel.csv"):
            assert main(["forecast", "--csv", str(tmp_path / name), "--limit", str(int(used * 2)), "--json"]) == 0
            reports.append(json.loads(capsys.readouterr().out))
        assert reports[0] == reports[1]
        assert reports[0]["used_bytes"] == pytest.approx(used)

    def test_a_repeated_local_time_is_read_as_real_exports_have_it(self, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
        """A series logged in local time repeats a timestamp at a daylight-saving change (NAB's
        ec2_disk_write_bytes has 2014-03-09 03:00:00 eleven times): the file is read, not refused
        (a refusal here made forecast-real fail on that trace); the samples are taken in time order."""
        used, _ = write_csv(tmp_path / "u.csv", 72, 1e7)
        lines = (tmp_path / "u.csv").read_text().splitlines()
        repeated = lines[:40] + [lines[40]] * 10 + lines[40:]
        (tmp_path / "dst.csv").write_text("\n".join(repeated) + "\n")
        assert main(["forecast", "--csv", str(tmp_path / "dst.csv"), "--limit", str(int(used * 2)), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["used_bytes"] == pytest.approx(used)

    def test_iso_basic_dates_are_dates(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`20260105` is ISO 8601's basic form of 2026-01-05; read as epoch seconds it was 1970-08-23,
        silently (a daily export was forecast half a century back)."""
        reports = []
        for name, form in (("extended.csv", "%Y-%m-%d"), ("basic.csv", "%Y%m%d")):
            rows = [f"{(T0 + dt.timedelta(days=k)).strftime(form)},{1e12 + 1e11 * k:.0f}" for k in range(20)]
            (tmp_path / name).write_text("timestamp,used_bytes\n" + "\n".join(rows) + "\n")
            assert main(["forecast", "--csv", str(tmp_path / name), "--json"]) == 0
            reports.append(json.loads(capsys.readouterr().out))
        assert reports[0] == reports[1]

    @pytest.mark.parametrize("where", ["no/such/dir/u.png", "a-file/u.png", "a-dir"])
    @pytest.mark.parametrize("as_json", [True, False])
    def test_a_plot_path_that_cannot_be_written(self, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                where: str, as_json: bool) -> None:
        """Guards `--plot` into a missing directory, under a file, or onto a directory: it was a
        FileNotFoundError traceback (exit 1) after the report was printed. Now the path is checked
        before anything runs: one line naming it, exit 2 (a bad path on the command line is bad
        usage), and nothing on stdout, so `--json` never prints an object and then fails."""
        used, _ = write_csv(tmp_path / "u.csv", 30, 1e7)
        (tmp_path / "a-file").write_text("not a directory")
        (tmp_path / "a-dir").mkdir()
        plot = tmp_path / where
        argv = ["forecast", "--csv", str(tmp_path / "u.csv"), "--limit", str(int(used * 2)), "--plot", str(plot)]
        assert main(argv + ["--json"] * as_json) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith("quotapilot forecast: --plot ") and str(plot) in captured.err
        assert len(captured.err.strip().splitlines()) == 1

    def test_missing_file_and_bad_flags(self, tmp_path: Path) -> None:
        assert main(["forecast", "--csv", str(tmp_path / "nope.csv")]) == 2
        write_csv(tmp_path / "u.csv", 5, 1e7)
        assert main(["forecast", "--csv", str(tmp_path / "u.csv"), "--thresholds", "a,b"]) == 2

    def test_too_short_says_so(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        (tmp_path / "s.csv").write_text("timestamp,used_bytes\n1767225600,1\n1767229200,2\n")
        assert main(["forecast", "--csv", str(tmp_path / "s.csv"), "--limit", "1TB", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["model"] is None and "insufficient" in out["fallback"] and out["forecast"] == []

    def test_usage_never_forecast_below_zero(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A series shrinking 1 TB a day from 1 TB: every path was about -13 TB at +14 d."""
        write_csv(tmp_path / "u.csv", 12, -1e12 / 86400)
        assert main(["forecast", "--csv", str(tmp_path / "u.csv"), "--limit", "10TB", "--json"]) == 0
        points = json.loads(capsys.readouterr().out)["forecast"]
        assert len(points) == 14 * 24
        assert all(0 <= p["p10"] <= p["p50"] <= p["p90"] for p in points)
        assert points[-1] == {"t": points[-1]["t"], "p10": 0, "p50": 0, "p90": 0}

    def test_a_ceiling_just_below_is_read(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The largest accepted usage is forecast (finite), not refused."""
        body = "timestamp,used_bytes\n" + "".join(f"{1767225600 + 3600 * k},{2**62 - 2**40 + k * 2**20}\n"
                                                  for k in range(30))
        (tmp_path / "big.csv").write_text(body)
        assert main(["forecast", "--csv", str(tmp_path / "big.csv"), "--horizon", "1d", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["forecast"] and all(0 <= p["p10"] <= p["p50"] <= p["p90"] for p in out["forecast"])

    @pytest.mark.parametrize("horizon", ["1e400d", "100000w", "20000w", "367d"])
    def test_horizon_beyond_a_year_is_refused(self, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              horizon: str) -> None:
        """1e400d was an OverflowError traceback, 100000w a 25 GiB allocation, 20000w minutes and 23 GB."""
        write_csv(tmp_path / "u.csv", 30, 1e7)
        assert main(["forecast", "--csv", str(tmp_path / "u.csv"), "--horizon", horizon, "--json"]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and "Traceback" not in captured.err
        assert "--horizon" in captured.err and "366 days" in captured.err
