"""One typed configuration: a TOML file plus ``KIOSK_*`` environment overrides.

Where it comes from, in order (later wins): built-in defaults, the TOML file named by
``--config`` or ``KIOSK_CONFIG`` (``/etc/kiosk/kiosk.toml`` on an installed kiosk), then
environment variables. ``KIOSK_DATA_DIR`` sets ``data_dir``; ``KIOSK_<FIELD>`` sets a top-level
field and ``KIOSK_<SECTION>_<FIELD>`` a field of a section, e.g. ``KIOSK_SYNC_URL`` or
``KIOSK_WEB_PORT``.

Validation happens once at start-up, with ``extra="forbid"``: a typo in the file or an unknown
``KIOSK_*`` variable is an error that names the key, never a silent default.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kiosk.errors import ConfigError

ENV_PREFIX = "KIOSK_"
# Environment variables that are not configuration fields.
ENV_NOT_FIELDS = frozenset({"KIOSK_CONFIG"})
BUNDLED_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
# The bundled model the kiosk runs unless told otherwise: tuned on digital films and on
# photographs of them (models/cxr-pneumonia-effl0-photo.md); the digital-only
# cxr-pneumonia-effl0 stays installable beside it.
DEFAULT_MODEL = "cxr-pneumonia-effl0-photo"
# 16 real films (CC BY 4.0, attribution beside them) for the simulator camera of the demo
DEMO_FILMS_DIR = Path(__file__).resolve().parent.parent / "demo" / "films"
# The developers' training images beside the repository (read-only; absent on a kiosk)
KERMANY_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "kermany-train"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CameraConfig(Section):
    backend: Literal["simulator", "folder", "opencv", "picamera2"] = "simulator"
    # opencv: a device index ("0") or a device/video path; picamera2: camera number.
    device: str = "0"
    # folder backend: photos to replay. simulator: optional folder of digital X-rays to place.
    folder: Path | None = None
    # Full-resolution still size (width, height); None = the camera's native maximum.
    resolution: tuple[int, int] | None = None
    # Exposure bracket around the film exposure, in EV; [] or [0] = single exposure.
    bracket_evs: list[float] = Field(default_factory=lambda: [-1.0, 0.0, 1.0])
    # Simulator demo: seconds between films placed on the virtual lightbox (0 = never).
    demo_cycle_s: float = Field(default=25.0, ge=0)
    # Width of the small preview frames used for detection and the live page.
    preview_width: int = Field(default=480, ge=64, le=1920)
    # picamera2: run an autofocus cycle before each still (Camera Module 3).
    autofocus_before_still: bool = True
    # folder backend: seconds per image (None = next image per still) and looping.
    replay_interval_s: float | None = Field(default=None, gt=0)
    replay_loop: bool = True
    # simulator: seed of the simulated rig and films.
    simulator_seed: int = 0


class CaptureConfig(Section):
    # Analyse films automatically when a placement is stable.
    auto: bool = True
    # Preview frames per second read by the detector.
    preview_fps: float = Field(default=4.0, gt=0, le=30)
    # Seconds the scene must be still before the still is taken.
    stable_s: float = Field(default=1.5, ge=0)
    # Reconnect back-off after a camera error: first and longest delay.
    retry_initial_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)


class RectifyConfig(Section):
    method: Literal["auto", "classical", "learned", "combined"] = "auto"


class WebConfig(Section):
    host: str = "127.0.0.1"
    # 0 = any free port (tests); the chosen port is logged.
    port: int = Field(default=8080, ge=0, le=65535)
    # Sign the kiosk's own screen (requests from 127.0.0.1) in as staff automatically.
    local_autologin: bool = False
    # Cookies only over HTTPS (set when a TLS reverse proxy is in front).
    secure_cookies: bool = False
    # Host names browsers may use to reach the kiosk, besides the ones always allowed:
    # localhost, this machine's host name, <host name>.local and any IP address. A request
    # with another Host header is refused (DNS rebinding). "*" switches the check off.
    allowed_hosts: list[str] = Field(default_factory=list)


class SyncConfig(Section):
    url: str | None = None
    token: str | None = None
    batch_size: int = Field(default=50, ge=1, le=1000)
    timeout_s: float = Field(default=10.0, gt=0)
    include_thumbnail: bool = False


class RetentionConfig(Section):
    # Rectified film images older than this are deleted; results are kept. 0 = keep forever.
    image_days: int = Field(default=90, ge=0)


class StorageConfig(Section):
    # Below this much free disk, images are no longer stored (results still are).
    min_free_mb: int = Field(default=500, ge=0)
    # Below this, nothing new is written and the kiosk reports a problem.
    critical_free_mb: int = Field(default=50, ge=0)
    store_images: bool = True


class HubConfig(Section):
    # The supervisor's hub database: sqlite:///PATH or postgresql://USER@HOST/DB.
    # None = SQLite hub.db in data_dir (`kiosk hub serve --database-url` overrides).
    database_url: str | None = None


class KioskConfig(Section):
    device_id: str = Field(default_factory=lambda: socket.gethostname() or "kiosk")
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".local/share/lightbox-kiosk")
    models_dir: Path = BUNDLED_MODELS_DIR
    # Model id: models_dir/<model>.json, unless a model was installed with `kiosk model install`.
    model: str = DEFAULT_MODEL
    threads: int = Field(default=2, ge=1, le=16)
    # Reject images whose model features are far from the training X-rays ("not a chest
    # X-ray"). Switch off only to look at synthetic films (the demo does) or while
    # investigating false rejections on a new film type.
    ood_gate: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    camera: CameraConfig = Field(default_factory=CameraConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    rectify: RectifyConfig = Field(default_factory=RectifyConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    hub: HubConfig = Field(default_factory=HubConfig)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "kiosk.db"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def rig_dir(self) -> Path:
        """Where the rig reference (the empty lightbox at this camera's exposure) lives."""
        return self.data_dir / "rig"


SECTIONS = {
    name
    for name, field in KioskConfig.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, Section)
}


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """Turn KIOSK_* variables into a nested dict; unknown names are an error."""
    out: dict[str, Any] = {}
    top_fields = set(KioskConfig.model_fields) - SECTIONS
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_FIELDS:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key in top_fields:
            out[key] = value
            continue
        section, _, field = key.partition("_")
        section_cls = KioskConfig.model_fields.get(section)
        if (
            section in SECTIONS
            and section_cls is not None
            and isinstance(section_cls.annotation, type)
            and field in section_cls.annotation.model_fields
        ):
            target = section_cls.annotation.model_fields[field].annotation
            parsed: Any = value
            if "list" in str(target) or "tuple" in str(target):
                parsed = [v.strip() for v in value.split(",") if v.strip()]
            out.setdefault(section, {})[field] = parsed
            continue
        raise ConfigError(
            f"unknown environment variable {name}",
            "remove it, or use KIOSK_<FIELD> / KIOSK_<SECTION>_<FIELD> with a real field name",
        )
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> KioskConfig:
    """Build the configuration from the file (if any) and the environment.

    Raises :class:`ConfigError` naming the file, key and problem. It does not create the data
    directory or touch anything on disk except reading the file.
    """
    env = os.environ if env is None else env
    if path is None and env.get("KIOSK_CONFIG"):
        path = Path(env["KIOSK_CONFIG"])
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError as exc:
            raise ConfigError(
                f"config file {path} does not exist",
                "create it from systemd/kiosk.toml.example or unset KIOSK_CONFIG",
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
    data = _merge(data, _env_overrides(env))
    try:
        return KioskConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key '{key}'")
            else:
                problems.append(f"'{key}': {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(
            f"invalid configuration in {source}: " + "; ".join(problems),
            "fix or remove the named keys (see systemd/kiosk.toml.example)",
        ) from exc
