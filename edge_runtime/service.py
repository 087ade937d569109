"""systemd units that start ``cxr-edge serve``, ``watch`` or ``receive`` at boot, as an unprivileged user."""

from __future__ import annotations

import dataclasses
import os
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from .errors import ServiceError
from .model_files import find_models_dir
from .receive import DEFAULT_PORT as DICOM_PORT
from .web.config import DEFAULT_PORT as WEB_PORT
from .web.config import MIN_TOKEN_LENGTH

try:  # POSIX only: the CLI reads this module's defaults on every system, installing needs Linux
    import grp
    import pwd
except ImportError:  # pragma: no cover - Windows
    grp = pwd = None

#: The services a unit can start. ``receive`` (the DICOM node) is a ``cxr-edge`` command of its own.
SERVICES = ("serve", "watch", "receive")
DEFAULT_USER = "cxr-edge"
#: Fixed places: the screening log and heatmaps (writable by the service), the models (read-only to
#: it, replaced as a whole folder to update), the web token (readable only by the service's user).
DEFAULT_STATE_DIR = Path("/var/lib/cxr-edge")
DEFAULT_MODELS_DIR = Path("/opt/cxr-edge/models")
DEFAULT_TOKEN_FILE = Path("/etc/cxr-edge/token")
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
#: Groups that give access to the Pi camera, added to the unit when they exist on this machine.
CAMERA_GROUPS = ("video", "render")


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """What one unit starts and where its files live.

    Attributes:
        service: ``serve``, ``watch`` or ``receive``.
        user: Unprivileged account the service runs as.
        state_dir: Screening log (``screenings.db``) and heatmaps; writable by the service.
        models_dir: Models folder (``$CXR_MODELS``); read-only to the service.
        token_file: File holding the web token (``serve`` only); readable only by ``user``.
        folder: Folder to watch (``watch`` only).
        host: Address ``serve`` listens on.
        port: TCP port of ``serve`` (default 8080) or ``receive`` (default 11112).
        extra_args: More arguments for the command (e.g. ``--allow PACS`` for ``receive``).
        executable: The command that runs ``cxr-edge`` (default: the one of this environment).
    """

    service: str
    user: str = DEFAULT_USER
    state_dir: Path = DEFAULT_STATE_DIR
    models_dir: Path = DEFAULT_MODELS_DIR
    token_file: Path = DEFAULT_TOKEN_FILE
    folder: Path | None = None
    host: str = "0.0.0.0"
    port: int | None = None
    extra_args: tuple[str, ...] = ()
    executable: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.service not in SERVICES:
            raise ServiceError(f"unknown service {self.service!r}; choose one of {', '.join(SERVICES)}")
        if self.service == "watch" and self.folder is None:
            raise ServiceError("the watch service needs the folder to watch (--folder DIR)")
        for name in ("state_dir", "models_dir", "token_file") + (("folder",) if self.folder else ()):
            if not Path(getattr(self, name)).is_absolute():
                raise ServiceError(f"{name.replace('_', '-')} must be an absolute path, got {getattr(self, name)}")
        if any(c in self.user for c in " \t\n:/") or not self.user:
            raise ServiceError(f"not a valid user name: {self.user!r}")

    @property
    def unit_name(self) -> str:
        return f"cxr-edge-{self.service}.service"

    @property
    def log_path(self) -> Path:
        return Path(self.state_dir) / "screenings.db"


def default_executable() -> tuple[str, ...]:
    """``cxr-edge`` of the running environment (a venv's ``bin/cxr-edge``), else ``python -m``."""
    script = Path(sys.executable).with_name("cxr-edge")
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),)
    return (sys.executable, "-m", "edge_runtime.cli")


def _quote(arg: str) -> str:
    """Quote one ExecStart argument for systemd (which also expands ``%`` and ``$``)."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and all(c.isalnum() or c in "-_./:=,+@" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command_line(config: ServiceConfig) -> list[str]:
    """The ``cxr-edge ...`` argument list the unit runs."""
    args = list(config.executable or default_executable()) + [config.service]
    if config.service == "serve":
        args += ["--host", config.host, "--port", str(config.port or WEB_PORT), "--token-file", str(config.token_file),
                 "--log", str(config.log_path)]
    elif config.service == "watch":
        args += [str(config.folder), "--heatmap", str(Path(config.state_dir) / "heatmaps"), "--log",
                 str(config.log_path)]
    else:  # receive: the DICOM Storage SCP (issue 11); its own options go in extra_args
        args += ["--port", str(config.port or DICOM_PORT), "--log", str(config.log_path)]
    return args + list(config.extra_args)


def render_unit(config: ServiceConfig) -> str:
    """The text of the systemd unit for ``config``."""
    executable = (config.executable or default_executable())[0]
    state = Path(config.state_dir)
    under_home = any(str(Path(p)).startswith(("/home/", "/root/")) for p in (executable, config.models_dir))
    what = {"serve": "clinic web page and JSON API", "watch": f"scanner folder watcher ({config.folder})",
            "receive": "DICOM storage node"}[config.service]
    lines = [
        "# Written by `cxr-edge install-service`; re-run it to change this unit rather than editing it.",
        "[Unit]",
        f"Description=cxr-edge {what} (chest X-ray screening aid; not a diagnosis)",
    ]
    if config.service == "watch":
        lines += [f"RequiresMountsFor={_quote(str(config.folder))}", "After=local-fs.target"]
    else:
        lines += ["Wants=network-online.target", "After=network-online.target"]
    lines += [
        # Restart on failure, but not in a tight loop for ever (a broken model file would).
        "StartLimitIntervalSec=300",
        "StartLimitBurst=10",
        "",
        "[Service]",
        "Type=simple",
        f"User={config.user}",
        f"Group={config.user}",
    ]
    groups = [g for g in CAMERA_GROUPS if _group_exists(g)] if config.service == "serve" else []
    if groups:
        lines.append("SupplementaryGroups=" + " ".join(groups))
    lines += [
        f"Environment=CXR_MODELS={_quote(str(config.models_dir))}",
        f"Environment=CXR_LOG={_quote(str(config.log_path))}",
        "Environment=PYTHONUNBUFFERED=1",
        "ExecStart=" + " ".join(_quote(a) for a in command_line(config)),
        "Restart=on-failure",
        "RestartSec=5",
        "TimeoutStopSec=30",
        "UMask=0027",
        # The service writes only its state folder (and the watched folder); the rest is read-only to it.
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ProtectHome={'read-only' if under_home else 'yes'}",
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
    ]
    if str(state).startswith("/var/lib/") and len(state.parts) > 3:
        lines += [f"StateDirectory={state.relative_to('/var/lib')}", "StateDirectoryMode=0750"]
    else:
        lines.append(f"ReadWritePaths={_quote(str(state))}")
    if config.service == "watch":
        lines.append(f"ReadWritePaths={_quote(str(config.folder))}")  # notes and moves beside the files
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def _group_exists(name: str) -> bool:
    if grp is None:
        return False
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def read_token_file(path: str | Path) -> str:
    """The token in ``path``, refused unless only its owner may read it.

    Raises:
        ServiceError: the file is missing, readable by group or others, or the token is too short.
    """
    path = Path(path)
    try:
        info = path.stat()
        token = path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise ServiceError(f"cannot read the token file {path}: {err.strerror or err}") from err
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ServiceError(f"token file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                           f"run: chmod 600 {shlex.quote(str(path))}")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ServiceError(f"token file {path} holds {len(token)} characters; write at least {MIN_TOKEN_LENGTH}")
    return token


def write_token_file(path: Path, user: str) -> bool:
    """Create ``path`` with a random token, mode 0600 and owned by ``user``; keep an existing one
    (checked). Returns True when a new token was written."""
    if path.exists():
        owner = pwd.getpwuid(path.stat().st_uid).pw_name
        if owner != user:
            raise ServiceError(f"token file {path} belongs to {owner}, not {user}: run: chown {user}: {path}")
        read_token_file(path)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(24) + "\n")
    _chown(path, user)
    return True


def _chown(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    if os.geteuid() == 0:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    elif entry.pw_uid != os.geteuid():
        raise ServiceError(f"{path} must belong to {user}; run as root (sudo) to give it to that user")


def ensure_user(user: str, state_dir: Path, create: bool) -> bool:
    """Make sure the service's account exists; returns True when it was created.

    Raises:
        ServiceError: it does not exist and cannot be created here.
    """
    try:
        pwd.getpwnam(user)
        return False
    except KeyError:
        pass
    # sudo's PATH has /usr/sbin; a plain root shell or a service manager may not.
    useradd = shutil.which("useradd", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    command = [useradd or "useradd", "--system", "--user-group", "--home-dir", str(state_dir), "--no-create-home",
               "--shell", "/usr/sbin/nologin", user]
    if not create or os.geteuid() != 0 or useradd is None:
        raise ServiceError(f"user {user!r} does not exist; create it with: sudo {shlex.join(['useradd'] + command[1:])} "
                           "(or run install-service with sudo)")
    subprocess.run(command, check=True)
    return True


def copy_models(source: Path, target: Path) -> int:
    """Copy the shipped models (``*.tflite`` and their spec, labels and cards) into ``target`` when
    it holds none yet; returns the number of files copied (0 when ``target`` already has models)."""
    if target.is_dir() and any(target.glob("*.spec.json")):
        return 0
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(source.iterdir()):
        if path.is_file() and (path.suffix == ".tflite" or path.name.endswith((".spec.json", "_labels.txt"))
                               or path.name.startswith("MODEL_CARD")):
            shutil.copy2(path, target / path.name)
            os.chmod(target / path.name, 0o644)
            count += 1
    return count


def install_service(config: ServiceConfig, unit_dir: Path = DEFAULT_UNIT_DIR, *, create_user: bool = True,
                    models_source: Path | None = None) -> dict:
    """Write the unit (and the token file, the models folder) for ``config``.

    Args:
        config: What to start.
        unit_dir: Folder the unit file is written to.
        create_user: Create ``config.user`` as a system account when it is missing (needs root).
        models_source: Models to copy into ``config.models_dir`` when it has none (default: the shipped ones).

    Returns:
        ``unit`` (path), ``user_created``, ``token_created``, ``models_copied`` and the ``next`` commands.

    Raises:
        ServiceError: the user is missing, or the token file is unsafe, or this is not a POSIX system.
    """
    if pwd is None:
        raise ServiceError("install-service writes systemd units: run it on the Linux machine that serves")
    user_created = ensure_user(config.user, Path(config.state_dir), create_user)
    token_created = write_token_file(Path(config.token_file), config.user) if config.service == "serve" else False
    copied = copy_models(models_source or find_models_dir(), Path(config.models_dir))
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit = unit_dir / config.unit_name
    temporary = unit.with_name(unit.name + ".tmp")
    temporary.write_text(render_unit(config), encoding="utf-8")
    os.chmod(temporary, 0o644)
    os.replace(temporary, unit)  # never a half-written unit
    return {"unit": str(unit), "user_created": user_created, "token_created": token_created,
            "models_copied": copied,
            "next": ["sudo systemctl daemon-reload", f"sudo systemctl enable --now {config.unit_name}",
                     f"journalctl -u {config.unit_name} -f"]}


def parse_extra(extra: Sequence[str]) -> tuple[str, ...]:
    """Arguments after ``--``, passed to the command unchanged."""
    return tuple(a for a in extra if a != "--")
