"""install-service: systemd units for serve, watch and receive; the token file; checked by systemd-analyze."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from edge_runtime import cli
from edge_runtime.errors import ServiceError
from edge_runtime.service import (ServiceConfig, install_service, read_token_file, render_unit,
                                  write_token_file)

ME = pwd.getpwuid(os.geteuid()).pw_name


def _config(tmp_path: Path, service: str, **kwargs) -> ServiceConfig:
    defaults = dict(user=ME, state_dir=tmp_path / "state dir", models_dir=tmp_path / "models",
                    token_file=tmp_path / "etc" / "token")
    if service == "watch":
        defaults["folder"] = tmp_path / "scanner drop"
    defaults.update(kwargs)
    return ServiceConfig(service=service, **defaults)


def _keys(unit: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


@pytest.mark.parametrize("service", ["serve", "watch", "receive"])
def test_unit_runs_as_the_user_restarts_and_uses_fixed_paths(tmp_path, service):
    config = _config(tmp_path, service)
    keys = _keys(render_unit(config))
    assert keys["User"] == [ME] and keys["Group"] == [ME]
    assert keys["Restart"] == ["on-failure"]
    assert keys["WantedBy"] == ["multi-user.target"]
    assert f"CXR_MODELS=\"{config.models_dir}\"" in keys["Environment"] or \
        f"CXR_MODELS={config.models_dir}" in keys["Environment"]
    exec_start = keys["ExecStart"][0]
    assert f" {service} " in exec_start
    assert f'--log "{config.state_dir / "screenings.db"}"' in exec_start
    assert keys["NoNewPrivileges"] == ["yes"] and keys["ProtectSystem"] == ["strict"]
    # The state folder is the only one written (plus the watched folder).
    assert f'"{config.state_dir}"' in keys["ReadWritePaths"]
    assert ("--token-file" in exec_start) == (service == "serve")


def test_state_under_var_lib_uses_a_state_directory():
    keys = _keys(render_unit(ServiceConfig("serve", user=ME)))
    assert keys["StateDirectory"] == ["cxr-edge"] and "ReadWritePaths" not in keys
    assert "--token-file /etc/cxr-edge/token" in keys["ExecStart"][0]
    assert "--host 0.0.0.0 --port 8080" in keys["ExecStart"][0]


def test_watch_needs_its_folder_and_may_write_there(tmp_path):
    with pytest.raises(ServiceError, match="folder"):
        ServiceConfig("watch", user=ME)
    config = _config(tmp_path, "watch")
    keys = _keys(render_unit(config))
    assert f'"{config.folder}"' in keys["ReadWritePaths"]
    assert keys["ExecStart"][0].split(" watch ")[1].startswith(f'"{config.folder}" --heatmap')


def test_receive_takes_its_own_arguments_and_no_token(tmp_path):
    config = _config(tmp_path, "receive", port=11113, extra_args=("--allow", "PACS 1", "--ae-title", "CXR_EDGE"))
    exec_start = _keys(render_unit(config))["ExecStart"][0]
    assert exec_start.endswith('--port 11113 --log "%s" --allow "PACS 1" --ae-title CXR_EDGE'
                               % (config.state_dir / "screenings.db"))


def test_percent_and_dollar_are_escaped_for_systemd(tmp_path):
    config = _config(tmp_path, "receive", extra_args=("--ae-title", "A%B$C"))
    assert '"A%%B$$C"' in render_unit(config) or "A%%B$$C" in render_unit(config)


def test_bad_settings_are_refused():
    with pytest.raises(ServiceError, match="unknown service"):
        ServiceConfig("camera")
    with pytest.raises(ServiceError, match="absolute"):
        ServiceConfig("serve", state_dir=Path("relative"))
    with pytest.raises(ServiceError, match="user"):
        ServiceConfig("serve", user="bad user")


def test_token_file_must_be_private(tmp_path):
    token = tmp_path / "token"
    token.write_text("a-long-enough-secret\n")
    token.chmod(0o644)
    with pytest.raises(ServiceError, match="chmod 600"):
        read_token_file(token)
    token.chmod(0o600)
    assert read_token_file(token) == "a-long-enough-secret"
    token.write_text("short")
    with pytest.raises(ServiceError, match="at least"):
        read_token_file(token)
    with pytest.raises(ServiceError, match="cannot read"):
        read_token_file(tmp_path / "missing")


def test_write_token_file_creates_a_private_random_token_once(tmp_path):
    path = tmp_path / "etc" / "token"
    assert write_token_file(path, ME) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_uid == os.geteuid()
    first = read_token_file(path)
    assert len(first) >= 24
    assert write_token_file(path, ME) is False and read_token_file(path) == first


def test_install_writes_unit_token_and_models(tmp_path):
    assets = Path(__file__).resolve().parent.parent / "android_assets"
    config = _config(tmp_path, "serve")
    done = install_service(config, tmp_path / "units", create_user=False, models_source=assets)
    unit = Path(done["unit"])
    assert unit.name == "cxr-edge-serve.service" and unit.read_text() == render_unit(config)
    assert done["token_created"] and stat.S_IMODE(config.token_file.stat().st_mode) == 0o600
    assert done["models_copied"] >= 6 and sorted(p.name for p in config.models_dir.glob("*.spec.json"))
    assert "sudo systemctl enable --now cxr-edge-serve.service" in done["next"]
    # Again: the token and the models are kept (a model update replaces the folder, see the README).
    again = install_service(config, tmp_path / "units", create_user=False, models_source=assets)
    assert not again["token_created"] and again["models_copied"] == 0


def test_missing_user_is_named_with_the_command_to_create_it(tmp_path):
    with pytest.raises(ServiceError, match="useradd --system"):
        install_service(_config(tmp_path, "watch", user="cxr-edge-no-such-user"), tmp_path / "u", create_user=False)


def test_cli_prints_and_writes_units(tmp_path, capsys):
    assert cli.main(["install-service", "receive", "--print", "--user", ME, "--", "--allow", "PACS1"]) == 0
    assert "receive --port 11112 --log /var/lib/cxr-edge/screenings.db --allow PACS1" in capsys.readouterr().out
    assert cli.main(["install-service", "serve", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    code = cli.main(["install-service", "watch", "--folder", str(tmp_path / "in"), "--user", ME, "--no-create-user",
                     "--state-dir", str(tmp_path / "state"), "--models-dir", str(tmp_path / "models"),
                     "--unit-dir", str(tmp_path / "units")])
    captured = capsys.readouterr()
    assert code == 0 and (tmp_path / "units" / "cxr-edge-watch.service").is_file()
    assert "systemctl enable --now cxr-edge-watch.service" in captured.out


def test_serve_refuses_a_readable_token_file(tmp_path, capsys):
    token = tmp_path / "token"
    token.write_text("a-long-enough-secret")
    token.chmod(0o640)
    assert cli.main(["serve", "--token-file", str(token), "--log", str(tmp_path / "log.db")]) == 2
    assert "readable by others" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("service", ["serve", "watch", "receive"])
def test_systemd_analyze_verify_accepts_the_units(tmp_path, service):
    config = _config(tmp_path, service)
    if config.folder:
        config.folder.mkdir()
    unit = tmp_path / config.unit_name
    unit.write_text(render_unit(config))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    # Any message (unknown key, bad value, command not executable) is a failure, not only the exit code.
    messages = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 0 and not messages, messages
