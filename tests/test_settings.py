"""Operator settings: <home>/contimg.toml read, checked, shown, and handed to the stages."""

from __future__ import annotations

import json
import re
from argparse import Namespace
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import FAST_IMAGING, T0, add_observations, contimg, write_settings
from test_cli import assert_one_line_error

from app.cli import CommandLineError, main, runner_config
from pipeline.calibration.registry import CalibrationConfig
from pipeline.home import Home
from pipeline.imaging.config import ImagingConfig
from pipeline.ingest.config import IngestConfig
from pipeline.jobs.default_stages import default_registry
from pipeline.jobs.runner import RunnerConfig
from pipeline.photometry.forced import PhotometryConfig
from pipeline.photometry.thresholds import VariabilityThresholds
from pipeline.settings import (
    Settings,
    SettingsError,
    load_settings,
    parse_settings,
    sections,
    settings_path,
    settings_toml,
)
from pipeline.store import Store

CHANGED = Settings(
    ingest=IngestConfig(group_window_s=45.0, settle_s=5.0),
    calibration=CalibrationConfig(window_h=6.0, stale_limit_h=24.0, min_snr=20.0),
    imaging=ImagingConfig(fov_deg=2.0, npix=512, weighting="uniform", niter=50,
                          do_wgridding=False, backend="cpu", catalog_path="/data/cat.csv"),
    photometry=PhotometryConfig(detect_sigma=6.5, match_radius_arcsec=30.0,
                                min_island_pixels=5),
    variability=VariabilityThresholds(eta=3.0),
    runner=RunnerConfig(workers=1, max_attempts=5))


# ------------------------------------------------------------------ reading the file
def test_no_file_means_every_default(home):
    assert not settings_path(home).exists()
    assert load_settings(home) == Settings()


def test_every_value_round_trips_through_the_file(home):
    for settings in (Settings(), CHANGED):
        settings_path(home).parent.mkdir(parents=True, exist_ok=True)
        settings_path(home).write_text(settings_toml(settings))
        assert load_settings(home) == settings


def test_a_file_changes_only_what_it_names(home):
    write_settings(home, imaging={"fov_deg": 2, "niter": 300},
                   calibration={"window_h": 6.0})
    got = load_settings(home)
    assert got.imaging == replace(ImagingConfig(), fov_deg=2.0, niter=300)
    assert isinstance(got.imaging.fov_deg, float)  # TOML's 2 is the float field's 2.0
    assert got.calibration == CalibrationConfig(window_h=6.0)
    assert (got.ingest, got.photometry, got.runner) == (
        IngestConfig(), PhotometryConfig(), RunnerConfig())


def test_sections_are_the_settings_fields():
    assert list(sections()) == ["ingest", "calibration", "imaging", "photometry",
                                "variability", "runner", "auth"]


def test_oauth_sign_in_is_configured_in_the_file(home):
    write_settings(home, auth={"mode": "oauth", "oauth_provider": "generic",
                               "oauth_key": "contimg-dashboard",
                               "oauth_secret_file": "/etc/contimg/oauth-secret",
                               "oauth_url": "https://sso.example.org/realms/ovro"})
    auth = load_settings(home).auth
    assert (auth.mode, auth.oauth_provider, auth.oauth_default_role) == (
        "oauth", "generic", "viewer")


@pytest.mark.parametrize(("auth", "problem"), [
    ({"mode": "oauth", "oauth_provider": "myspace", "oauth_key": "k",
      "oauth_secret_file": "/s"}, "auth.oauth_provider = 'myspace'"),
    ({"mode": "oauth", "oauth_provider": "github"}, "auth.oauth_key and auth.oauth_secret_file"),
    ({"mode": "oauth", "oauth_provider": "generic", "oauth_key": "k",
      "oauth_secret_file": "/s"}, "auth.oauth_url is needed"),
    ({"mode": "kerberos"}, "auth.mode = 'kerberos'"),
])
def test_bad_sign_in_settings_name_the_key(home, auth, problem):
    home.root.mkdir(parents=True, exist_ok=True)
    settings_path(home).write_text("[auth]\n" + "".join(f'{k} = "{v}"\n' for k, v in auth.items()))
    with pytest.raises(SettingsError, match=re.escape(problem)):
        load_settings(home)


BAD_FILES = [
    ("[imaging]\nnpix = 256\n[imagin]\nniter = 1\n",
     ["unknown section [imagin]", "valid sections: ingest, calibration, imaging"]),
    ("[imaging]\nn_pix = 256\n",
     ["unknown key imaging.n_pix", "valid keys of [imaging]: fov_deg, npix, cell_arcsec"]),
    ('[imaging]\nnpix = "256"\n', ["imaging.npix = '256'", "expected an integer"]),
    ("[imaging]\nniter = 10.5\n", ["imaging.niter = 10.5", "expected an integer"]),
    ("[imaging]\nniter = true\n", ["imaging.niter = True", "expected an integer"]),
    ("[calibration]\nwindow_h = \"12h\"\n", ["calibration.window_h", "expected a number"]),
    ("[imaging]\nbackend = \"cuda\"\n",
     ["imaging.backend = 'cuda'", "one of 'auto', 'cpu', 'gpu'"]),
    ("[imaging]\ndo_wgridding = 1\n", ["imaging.do_wgridding = 1", "expected true or false"]),
    ("[imaging]\nnpix = 255\n", ["[imaging]", "imaging.npix must be even", "remove the key"]),
    ("[calibration]\nwindow_h = 50.0\n",
     ["calibration.stale_limit_h must be at least window_h"]),
    ("[runner]\nworkers = 0\n", ["runner.workers must be at least 1"]),
    ("npix = 256\n", ["npix = ... is outside any section", "put it under [imaging]"]),
    ("[imaging\nnpix = 256\n", ["is not valid TOML", "line 1"]),
]


@pytest.mark.parametrize(("text", "fragments"), BAD_FILES,
                         ids=[f"bad{i}" for i in range(len(BAD_FILES))])
def test_a_bad_file_names_itself_the_key_and_the_problem(home, text, fragments):
    path = settings_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with pytest.raises(SettingsError) as err:
        load_settings(home)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message, message


def test_a_null_like_value_cannot_be_written():
    # TOML has no null, so an optional field is left out rather than set to None.
    with pytest.raises(SettingsError, match=r"imaging\.npix = \[\]: expected an integer"):
        parse_settings("[imaging]\nnpix = []\n", path=Path("x.toml"))


# ----------------------------------------------------------------- the command line
def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """`contimg ARGV` in this process (cheaper than a subprocess): (exit code, out, err)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_shows_the_defaults_without_a_file(home, capsys):
    code, out, _ = run_main(capsys, "settings", "--home", str(home.root))
    assert code == 0
    assert f"defaults (no {settings_path(home)})" in out
    assert parse_settings(out, path=Path("stdout")) == Settings()


def test_cli_shows_the_effective_settings(home, capsys):
    write_settings(home, imaging={"npix": 384, "weighting": "natural"},
                   runner={"workers": 1})
    code, out, _ = run_main(capsys, "settings", "--home", str(home.root))
    assert code == 0
    assert f"effective settings: {settings_path(home)}" in out
    assert "npix = 384" in out and "fov_deg = 3.5" in out
    assert parse_settings(out, path=Path("stdout")) == load_settings(home)
    code, out, _ = run_main(capsys, "settings", "--json", "--home", str(home.root))
    as_json = json.loads(out)
    assert as_json["file"] == str(settings_path(home))
    assert as_json["settings"]["imaging"]["npix"] == 384
    assert as_json["settings"]["imaging"]["cell_arcsec"] is None
    assert as_json["settings"]["runner"]["workers"] == 1


@pytest.mark.parametrize("command", [["settings"], ["serve", "--port", "0"]])
def test_cli_refuses_a_bad_file(home, capsys, command):
    home.ensure()
    settings_path(home).write_text("[imaging]\nnpixx = 256\n")
    code, _, err = run_main(capsys, *command, "--home", str(home.root))
    assert code == 1
    assert err.startswith(f"contimg: error: {settings_path(home)}: unknown key imaging.npixx")
    assert not home.db.exists()  # refused before the store was opened


def test_process_refuses_a_bad_file_in_one_line(home):
    home.ensure()
    settings_path(home).write_text("[imaging]\nnpix = 255\n")
    result = contimg("process", "--once", "--home", str(home.root))
    assert_one_line_error(result, str(settings_path(home)), "imaging.npix must be even")
    assert not home.db.exists()


def test_command_line_options_override_the_runner_section():
    base = RunnerConfig(workers=3, heartbeat_s=10.0, stale_after_s=300.0)
    same = runner_config(Namespace(workers=None, stale_after=None), base)
    assert same == base
    fast = runner_config(Namespace(workers=1, stale_after=4.0), base)
    assert (fast.workers, fast.stale_after_s, fast.heartbeat_s) == (1, 4.0, 2.0)
    assert fast.max_attempts == base.max_attempts
    with pytest.raises(CommandLineError, match="command line: runner.workers must be at "
                                               "least 1, got 0; change the option"):
        runner_config(Namespace(workers=0, stale_after=None), base)


# ------------------------------------------------------------- into the stages
def test_the_registry_hands_each_stage_its_config(store):
    (obs_id,) = add_observations(store, 1, state="calibrated")
    registry = default_registry(CHANGED)
    obs = store.observation(obs_id)
    assert registry.prepares["image"](store, obs, T0) == {"config": CHANGED.imaging}
    assert registry.prepares["calibrate"].keywords == {"config": CHANGED.calibration}
    assert registry.records["calibrate"].keywords == {"config": CHANGED.calibration}
    assert registry.prepares["measure"].keywords == {"config": CHANGED.photometry}
    assert registry.records["measure"].keywords == {"thresholds": CHANGED.variability}
    assert registry.tasks["ingest"].fn.__self__.config == CHANGED.ingest
    # the defaults when no settings are given, as before
    assert default_registry().prepares["image"](store, obs, T0) == {"config": ImagingConfig()}


def test_npix_from_the_file_ends_up_in_the_images_row(tmp_path):
    """A 5-minute 3C48 transit through `contimg process`: the file's npix is the image's."""
    home = Home.resolve(tmp_path / "home")
    sim = contimg("simulate", "--home", str(home.root), "--transit-of", "3C48",
                  "--minutes", "5", "--antennas", "6", "--channels-per-subband", "1",
                  "--seed", "5")
    assert sim.returncode == 0, sim.stderr
    write_settings(home, imaging={**FAST_IMAGING, "npix": 192})
    run = contimg("process", "--once", "--home", str(home.root))
    assert run.returncode == 0, run.stderr
    with Store.open(home) as store:
        (obs_id,) = store.observations().id
        image = store.image_to_measure(obs_id)
        state = store.observation(obs_id).state
    assert image is not None, run.stdout + run.stderr
    assert image["npix"] == 192
    assert state == "complete", run.stdout
