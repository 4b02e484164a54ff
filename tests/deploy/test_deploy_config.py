"""deploy/config/*.toml pass `quotapilot check-config`, with the files they reference provided the
way the service provides them (credentials in $CREDENTIALS_DIRECTORY, the CA beside the config)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from deploy_helpers import DEPLOY

from quotapilot.daemon.cli import main
from quotapilot.daemon.settings import load_settings

CONFIGS = DEPLOY / "config"


def ca_bundle_pem() -> bytes:
    """A real self-signed CA certificate (PEM), made with `cryptography` as the simulator makes its
    own: check-config refuses a `ca_file` that is not a PEM CA bundle."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test site CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def installed(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The config as it would be installed: /etc/quotapilot/ and /var/lib/quotapilot/ moved under
    tmp_path, dummy secrets and CA in place, $CREDENTIALS_DIRECTORY set as systemd sets it."""
    etc, state, credentials = tmp_path / "etc", tmp_path / "state", tmp_path / "credentials"
    for directory in (etc, state, credentials):
        directory.mkdir()
    (credentials / "vms.token").write_text("not-a-real-token\n")
    (credentials / "token").write_text("not-a-real-token\n")  # demo.toml: the simulator's dir
    ca_pem = ca_bundle_pem()
    (credentials / "ca.pem").write_bytes(ca_pem)
    (etc / "vms-ca.pem").write_bytes(ca_pem)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    moves = {"/etc/quotapilot/": etc, "/var/lib/quotapilot/": state, "/tmp/quotapilot-demo/": credentials}
    text = config.read_text()
    for original, moved in moves.items():
        text = text.replace(original, f"{moved}/")
    target = etc / config.name
    target.write_text(text)
    return target


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code = main(["check-config", "--config", str(path), "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


@pytest.mark.parametrize("name", ["quotapilot.toml", "demo.toml"])
def test_example_config_is_valid(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, report = check_config(installed(CONFIGS / name, tmp_path, monkeypatch), capsys)
    assert (code, report.get("valid")) == (0, True), report


def test_a_ca_file_that_is_not_pem_exits_2_naming_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = installed(CONFIGS / "quotapilot.toml", tmp_path, monkeypatch)
    (tmp_path / "etc" / "vms-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    code, report = check_config(config, capsys)
    assert code == 2, report
    assert report["field"] == "clusters.0.ca_file"
    assert str(report["reason"]).startswith("not a PEM CA bundle")


class TestSiteExample:
    """What the COSMOS-7 example promises in its comments."""

    def settings(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
        return load_settings(installed(CONFIGS / "quotapilot.toml", tmp_path, monkeypatch))

    def test_starts_in_observe_mode(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        assert self.settings(tmp_path, monkeypatch).policy.mode == "observe"

    def test_temp_is_grown_later_than_raw(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        policy = self.settings(tmp_path, monkeypatch).policy
        temp = policy.rules_for("cosmos7-temp", "/cosmos7/temp")
        raw = policy.rules_for("cosmos7-raw", "/cosmos7/raw")
        assert temp.grow_at > raw.grow_at
        assert raw.lead_time_seconds > policy.lead_time_seconds

    def test_manages_the_three_views(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        views = self.settings(tmp_path, monkeypatch).views
        assert [v.path for v in views] == ["/cosmos7/raw", "/cosmos7/processed", "/cosmos7/temp"]

    def test_routes_name_configured_sinks(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        alerts = self.settings(tmp_path, monkeypatch).alerts
        sinks = {w.name for w in alerts.webhooks} | ({"mqtt"} if alerts.mqtt else set())
        assert {s for route in alerts.routes for s in route.sinks} <= sinks

    def test_listens_on_loopback_only(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        assert self.settings(tmp_path, monkeypatch).http.host == "127.0.0.1"
