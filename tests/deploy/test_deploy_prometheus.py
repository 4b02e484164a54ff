"""deploy/prometheus/: the rules pass `promtool check rules` and their own unit tests, and the
example scrape config is a valid Prometheus configuration that loads them."""

from __future__ import annotations

import re
import subprocess

import yaml
from deploy_helpers import DEPLOY

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "quotapilot_rules.yml"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=PROMETHEUS)


class TestPromtool:
    def test_check_rules(self, promtool: str) -> None:
        result = run(promtool, "check", "rules", RULES.name)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_rule_unit_tests(self, promtool: str) -> None:
        result = run(promtool, "test", "rules", "quotapilot_rules_test.yml")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout

    def test_example_scrape_config(self, promtool: str) -> None:
        result = run(promtool, "check", "config", "prometheus.yml")
        assert result.returncode == 0, result.stdout + result.stderr


class TestRules:
    def alerts(self) -> list[dict[str, object]]:
        groups = yaml.safe_load(RULES.read_text())["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def test_every_alert_has_severity_and_words(self) -> None:
        for rule in self.alerts():
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]  # type: ignore[index]
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]  # type: ignore[arg-type]

    def test_every_alert_is_unit_tested(self) -> None:
        tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "quotapilot_rules_test.yml").read_text()))
        assert {str(rule["alert"]) for rule in self.alerts()} == tested

    def test_rules_match_the_scrape_job(self) -> None:
        job = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"][0]["job_name"]
        assert 'job="quotapilot"' in RULES.read_text()
        assert job == "quotapilot"
