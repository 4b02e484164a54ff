"""Byte sizes and durations as humans write them."""

from __future__ import annotations

import pytest

from quotapilot.daemon.units import format_bytes, format_duration, format_limit, parse_bytes, parse_duration


class TestParse:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [(1024, 1024), ("1TiB", 2**40), ("1.5 TB", 1_500_000_000_000), ("500tb", 500 * 10**12), ("7", 7)],
    )
    def test_bytes(self, text: object, expected: int) -> None:
        assert expected == parse_bytes(text)

    @pytest.mark.parametrize(
        ("text", "expected"), [(90, 90.0), ("15m", 900.0), ("24h", 86400.0), ("7d", 604800.0), ("2w", 1209600.0)]
    )
    def test_durations(self, text: object, expected: float) -> None:
        assert expected == parse_duration(text)

    @pytest.mark.parametrize("bad", ["lots", "1XB", True, None, [], "1.2.3TB"])
    def test_bad_bytes(self, bad: object) -> None:
        with pytest.raises(ValueError):
            parse_bytes(bad)

    @pytest.mark.parametrize("bad", ["soon", "5y", False, None])
    def test_bad_durations(self, bad: object) -> None:
        with pytest.raises(ValueError):
            parse_duration(bad)


class TestFormat:
    def test_bytes(self) -> None:
        assert format_bytes(1.5 * 2**40) == "1.5 TiB"
        assert format_bytes(512) == "512 B"

    def test_limits_by_dimension(self) -> None:
        """A byte limit in binary units, an inode limit as the count of files it is."""
        assert format_limit(1.5 * 2**40, "bytes") == "1.5 TiB"
        assert format_limit(2_000_000, "inodes") == "2,000,000 files"

    def test_durations(self) -> None:
        assert format_duration(None) == "never"
        assert format_duration(3 * 86400 + 4 * 3600) == "3d 4h"
        assert format_duration(45 * 60) == "45m"
        assert format_duration(30) == "30s"   # (was "0m": a reason said "data is 0m old")
        assert format_duration(-1) == "now"
