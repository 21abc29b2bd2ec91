"""The remembered backend (``napari_ovsam.backend_settings``): where the file is, what it keeps, and that a
damaged file gives the defaults with a warning (no Qt)."""

from __future__ import annotations

import json
import stat
import sys
import warnings

import pytest

from napari_ovsam.backend_settings import (
    CONFIG_DIR_ENV,
    DEFAULT_URL,
    FILENAME,
    LOCAL,
    REMOTE,
    TOKEN_ENV,
    BackendSettings,
    config_dir,
    load_settings,
    save_settings,
    settings_path,
)


@pytest.fixture
def env(tmp_path):
    """An environment whose config folder is a temporary one (and with no token)."""
    return {CONFIG_DIR_ENV: str(tmp_path / "config")}


def test_nothing_remembered_gives_the_defaults(env):
    assert not settings_path(env).exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for a first run
        settings = load_settings(env)
    assert settings == BackendSettings(backend=LOCAL, url=DEFAULT_URL, token="", remember_token=False)


def test_the_folder_comes_from_the_environment_else_the_user_config_dir(env, tmp_path):
    assert config_dir(env) == tmp_path / "config" and settings_path(env).name == FILENAME
    default = config_dir({})
    assert default.name == "napari-ovsam" and default != tmp_path / "config"


def test_remote_choice_is_remembered_without_the_token(env):
    path = save_settings(BackendSettings(REMOTE, "http://gpu-box:8765", "s3cret", remember_token=False), env)
    assert path == settings_path(env)
    assert "s3cret" not in path.read_text() and "token" not in json.loads(path.read_text())
    assert load_settings(env) == BackendSettings(REMOTE, "http://gpu-box:8765", "", False)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_a_remembered_token_is_kept_in_a_file_only_its_owner_reads(env):
    path = save_settings(BackendSettings(REMOTE, "http://gpu-box:8765", "s3cret", remember_token=True), env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["token"] == "s3cret"
    assert load_settings(env) == BackendSettings(REMOTE, "http://gpu-box:8765", "s3cret", True)
    save_settings(BackendSettings(REMOTE, "http://gpu-box:8765", "s3cret", remember_token=False), env)
    assert "s3cret" not in path.read_text()  # unticking "remember" forgets it
    assert sorted(p.name for p in path.parent.iterdir()) == [FILENAME]  # no temporary file left


def test_the_token_comes_from_the_environment_unless_one_is_remembered(env):
    env = {**env, TOKEN_ENV: "from-env"}
    assert load_settings(env).token == "from-env"
    save_settings(BackendSettings(REMOTE, DEFAULT_URL, "kept", remember_token=True), env)
    assert load_settings(env).token == "kept"
    settings_path(env).write_text(json.dumps({"backend": REMOTE, "token": "stray", "remember_token": False}))
    assert load_settings(env).token == "from-env"  # a token the user did not ask to keep is not used


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe\x00garbage",
        b'["remote"]',
        b'{"backend": "cloud"}',
        b'{"backend": "remote", "url": 8765}',
        b'{"remember_token": "yes"}',
    ],
)
def test_a_damaged_file_gives_the_defaults_with_a_warning(env, content):
    path = settings_path(env)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.warns(UserWarning, match="cannot be read.*using the defaults"):
        settings = load_settings(env)
    assert settings == BackendSettings()


def test_unknown_keys_of_a_newer_version_are_ignored(env):
    path = settings_path(env)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"backend": REMOTE, "url": "http://h:1", "theme": "dark"}))
    assert load_settings(env) == BackendSettings(REMOTE, "http://h:1")


def test_an_unreadable_folder_gives_the_defaults_with_a_warning(env):
    settings_path(env).mkdir(parents=True)  # a folder where the file should be: reading it fails
    with pytest.warns(UserWarning, match="cannot be read"):
        assert load_settings(env) == BackendSettings()


def test_settings_check_their_values():
    with pytest.raises(ValueError, match="backend must be one of local, remote"):
        BackendSettings(backend="cloud")
    with pytest.raises(ValueError, match="'remember_token' must be a bool"):
        BackendSettings(remember_token=1)  # type: ignore[arg-type]
