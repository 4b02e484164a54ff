"""deploy/prometheus/: the rules pass `promtool check rules` and their own unit tests, and the
example scrape config is a valid Prometheus configuration that loads them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

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


class TestPollsStale:
    """`QuotapilotPollsStale` also fires for a cluster never polled successfully since the daemon
    started (a restart during a VMS outage, a wrong token): the daemon exports its
    `quotapilot_last_successful_poll_timestamp_seconds` only after a first success, its
    `quotapilot_poll_consecutive_failures` from the first failure (daemon/http/metrics.py)."""

    def test_fires_for_a_cluster_never_polled_successfully_since_start(self, promtool: str, tmp_path: Path) -> None:
        test_file = tmp_path / "never_polled_test.yml"
        test_file.write_text(yaml.safe_dump({
            "rule_files": [str(RULES)],
            "evaluation_interval": "1m",
            "tests": [{
                "interval": "1m",
                "input_series": [
                    {"series": 'quotapilot_poll_consecutive_failures{job="quotapilot", instance="ops1:9187", '
                               'cluster="bad"}', "values": "1+1x90"},
                    {"series": 'quotapilot_last_successful_poll_timestamp_seconds{job="quotapilot", '
                               'instance="ops1:9187", cluster="good"}', "values": "0+60x90"},
                ],
                "promql_expr_test": [{
                    "expr": 'count by (cluster, severity) (ALERTS{alertname="QuotapilotPollsStale", '
                            'alertstate="firing"})',
                    "eval_time": "80m",
                    "exp_samples": [{"labels": '{cluster="bad", severity="warning"}', "value": 1},
                                    {"labels": '{cluster="bad", severity="critical"}', "value": 1}],
                }],
            }],
        }))
        result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
