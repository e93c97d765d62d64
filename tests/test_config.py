from __future__ import annotations

from pathlib import Path

import pytest

from kiosk.config import load_config
from kiosk.errors import ConfigError


def test_defaults_and_data_dir_from_env(tmp_path: Path) -> None:
    config = load_config(env={"KIOSK_DATA_DIR": str(tmp_path)})
    assert config.data_dir == tmp_path
    assert config.db_path == tmp_path / "kiosk.db"
    assert config.camera.backend == "simulator"
    assert config.web.port == 8080


def test_toml_file_and_section_env_override(tmp_path: Path) -> None:
    path = tmp_path / "kiosk.toml"
    path.write_text('device_id = "ward-3"\n[web]\nport = 9000\n[sync]\nurl = "http://a"\n')
    config = load_config(path, env={"KIOSK_SYNC_URL": "http://hub:8000", "KIOSK_WEB_PORT": "9100"})
    assert config.device_id == "ward-3"
    assert config.sync.url == "http://hub:8000"
    assert config.web.port == 9100


def test_config_env_var_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "k.toml"
    path.write_text("threads = 3\n")
    assert load_config(env={"KIOSK_CONFIG": str(path)}).threads == 3


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "kiosk.toml"
    path.write_text("[web]\nprot = 9000\n")
    with pytest.raises(ConfigError, match=r"unknown key 'web\.prot'"):
        load_config(path, env={})


def test_bad_value_is_an_error_naming_key_and_value(tmp_path: Path) -> None:
    path = tmp_path / "kiosk.toml"
    path.write_text("[web]\nport = 70000\n")
    with pytest.raises(ConfigError, match=r"'web\.port'.*70000"):
        load_config(path, env={})


def test_unknown_environment_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="KIOSK_SYNC_URLL"):
        load_config(env={"KIOSK_SYNC_URLL": "x"})


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", env={})


def test_list_field_from_env() -> None:
    config = load_config(env={"KIOSK_CAMERA_BRACKET_EVS": "-2, 0, 2"})
    assert config.camera.bracket_evs == [-2.0, 0.0, 2.0]
