"""The one configuration layer: every configuration validates itself from its field declarations, round-trips
through JSON, refuses unknown keys, keeps old files' hashes, and every field is an option of its command."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmckd.cli.main import cli
from mmckd.config_fields import Config, ConfigError, option
from mmckd.extract.config import ExtractConfig
from mmckd.feature_file import config_hash
from mmckd.model.config import FitConfig
from mmckd.model.presets import preset, preset_about, preset_names
from mmckd.model.synthetic import write_synthetic_features

CONFIGS = (FitConfig, ExtractConfig)
LEAVES = [(cls, path, spec) for cls in CONFIGS for path, spec in cls.walk()]
LEAF_IDS = [f"{cls.__name__}.{'.'.join(path)}" for cls, path, _ in LEAVES]


def _nested(path: tuple[str, ...], value) -> dict:
    out: dict = {path[-1]: value}
    for part in reversed(path[:-1]):
        out = {part: out}
    return out


@pytest.mark.parametrize("cls", CONFIGS)
def test_defaults_round_trip_through_json(cls):
    c = cls()
    assert cls.from_dict(json.loads(json.dumps(c.to_dict()))) == c


@pytest.mark.parametrize(("cls", "path", "spec"), LEAVES, ids=LEAF_IDS)
def test_every_field_is_documented_and_refuses_a_wrong_type(cls, path, spec):
    assert spec.help, f"{path} has no help"
    wrong = 1.5 if spec.kind is not float else "x"
    if spec.sequence:
        wrong = "not a list"
    with pytest.raises(ConfigError, match=path[-1]):
        cls.from_dict(_nested(path, wrong))


@pytest.mark.parametrize(
    ("cls", "path", "spec"),
    [(c, p, s) for c, p, s in LEAVES if s.low is not None or s.choices is not None],
    ids=[i for i, (_, _, s) in zip(LEAF_IDS, LEAVES, strict=True) if s.low is not None or s.choices is not None],
)
def test_values_out_of_bounds_or_choices_are_refused_naming_the_option(cls, path, spec):
    if spec.choices is not None:
        bad = "no-such-choice" if spec.kind is str else -999
    else:
        bad = spec.low if spec.low_open else spec.low - 1
        bad = int(bad) if spec.kind is int else float(bad)
    value = [bad] if spec.sequence else bad
    with pytest.raises(ConfigError, match=path[-1]):
        cls.from_dict(_nested(path, value))


def test_unknown_keys_and_cross_field_rules_are_refused():
    with pytest.raises(ConfigError, match="unknown option.*'epoch'"):
        FitConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="vision: .*unknown option.*'fsp'"):
        ExtractConfig.from_dict({"vision": {"fsp": 3}})
    with pytest.raises(ConfigError, match="f0_min"):
        ExtractConfig.from_dict({"audio": {"f0_min": 500.0}})
    with pytest.raises(ConfigError, match="multiple of hop_ms"):
        ExtractConfig.from_dict({"audio": {"frame_rate": 16.0}})
    with pytest.raises(ConfigError, match="multiple of heads"):
        FitConfig.from_dict({"model": {"d_model": 30, "heads": 4}})
    with pytest.raises(ConfigError, match="twice"):
        FitConfig(mode="online", compare=("online",))


@dataclass(frozen=True)
class _Grown(Config):
    old: int = option(1, "A field files always had.")
    new: float = option(2.0, "A field added later; files without it were made as with 0.", absent=0.0)


def test_a_field_added_later_keeps_old_files_json_and_hash():
    old_file = {"old": 1}
    c = _Grown.from_dict(old_file)
    assert c.new == 0.0  # what the old file was made with, not today's default
    assert c.to_dict() == old_file and config_hash(c.to_dict()) == config_hash(old_file)
    assert _Grown().to_dict() == {"old": 1, "new": 2.0}  # a new file records the new value


def test_todays_extractor_defaults_hash_as_the_embedded_model_was_trained():
    meta = json.loads((Path(__file__).parents[1] / "mmckd" / "default_model" / "bundle.json").read_text())
    stored = meta["extractor_config"]
    assert ExtractConfig.from_dict(stored).to_dict() == stored
    assert config_hash(stored) == meta["extractor_config_hash"]


@pytest.mark.parametrize("name", preset_names())
def test_presets_are_valid_and_say_what_they_are_for(name):
    assert preset_about(name)
    config = FitConfig().merged(preset(name))
    assert config != FitConfig()
    assert set(preset(name)) <= {s.name for s in FitConfig.specs()}


def _options_of(help_text: str) -> set[str]:
    return {w.rstrip(",") for w in help_text.split() if w.startswith("--")}


def test_fit_and_extract_offer_every_field_and_config():
    runner = CliRunner()
    fit_help = _options_of(runner.invoke(cli, ["fit", "--help"], terminal_width=200).output)
    extract_help = _options_of(runner.invoke(cli, ["extract", "--help"], terminal_width=200).output)
    assert {"--config", "--preset"} <= fit_help and "--config" in extract_help
    for path, _ in FitConfig.walk():
        assert "--" + path[-1].replace("_", "-") in fit_help, path
    for path, _ in ExtractConfig.walk():
        assert "--" + "-".join(path).replace("_", "-") in extract_help, path
    # the names scripts already use are kept
    assert {"--lambda", "--loss", "--seeds", "--d-model"} <= fit_help
    assert {"--fps", "--max-side", "--max-tokens", "--asr", "--text-model", "--audio-frame-rate"} <= extract_help


def test_bad_config_file_is_one_line_naming_it(tmp_path):
    features = write_synthetic_features(tmp_path / "f.h5", n=20, seed=1)
    bad = tmp_path / "bad.json"
    for text, reason in (("{not json", "not JSON"), ('{"epoch": 3}', "epoch"), ('{"model": {"heads": 0}}', "heads")):
        bad.write_text(text)
        r = CliRunner().invoke(cli, ["fit", str(features), "-o", str(tmp_path / "run"), "--config", str(bad)])
        assert r.exit_code == 2, r.output
        lines = [ln for ln in r.output.splitlines() if ln.startswith("mmckd fit: error:")]
        assert len(lines) == 1 and str(bad) in lines[0] and reason in lines[0], r.output
    assert not (tmp_path / "run").exists()
    bad.write_text('{"vision": {"fps": 0}}')
    r = CliRunner().invoke(cli, ["extract", str(tmp_path), "-o", str(tmp_path / "x.h5"), "--config", str(bad)])
    assert r.exit_code == 2 and str(bad) in r.output and "fps" in r.output
    assert not (tmp_path / "x.h5").exists()


TINY = ["--d-model", "16", "--heads", "2", "--proj-dim", "8", "--max-audio", "12", "--max-vision", "12"]


@pytest.mark.slow
def test_preset_then_config_file_then_options_and_a_run_reproduced_from_its_run_json(tmp_path):
    features = write_synthetic_features(tmp_path / "f.h5", n=40, seed=7)
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"patience": 3, "lr": 0.002, "model": {"d_model": 32}}))
    common = ["--epochs", "1", "--threads", "1", "--no-progress", "--missing-rates", "0,0.5", *TINY[2:]]
    a = tmp_path / "a"
    args = ["fit", str(features), "-o", str(a), "--preset", "small-data", "--config", str(conf), "--seeds", "2"]
    r = CliRunner().invoke(cli, [*args, *common, "--d-model", "16"])
    assert r.exit_code == 0, r.output
    stored = json.loads((a / "run.json").read_text())["fit_config"]
    assert stored["seeds"] == [2]  # option over the preset's 1,2,3
    assert stored["patience"] == 3 and stored["lr"] == 0.002  # the file over the preset and the defaults
    assert stored["model"]["d_model"] == 16  # option over the file
    assert stored["model"]["cross_layers"] == 0 and stored["epochs"] == 1
    b = tmp_path / "b"
    r = CliRunner().invoke(cli, ["fit", str(features), "-o", str(b), "--config", str(a / "run.json"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads((b / "run.json").read_text())["fit_config"] == stored
    # the bundle records the architecture id; one from another architecture is refused on load
    meta_path = b / "model" / "bundle.json"
    meta = json.loads(meta_path.read_text())
    assert meta["model_config"]["architecture"] == FitConfig().model.architecture
    meta["model_config"]["architecture"] = "mmckd/99"
    meta_path.write_text(json.dumps(meta))
    from mmckd.model.bundle import BundleError, load_bundle

    with pytest.raises(BundleError, match="architecture 'mmckd/99'"):
        load_bundle(b)
    del meta["model_config"]["architecture"]  # written before ids existed: mmckd/1, loads
    meta_path.write_text(json.dumps(meta))
    assert load_bundle(b).model_config.architecture == "mmckd/1"


@pytest.mark.slow
def test_extract_config_from_a_feature_file_reproduces_its_settings(tmp_path):
    from mmckd.feature_file import FeatureFile
    from mmckd.testing.clips import make_clip

    clips = tmp_path / "clips"
    make_clip(clips / "a.mp4", text="This was a good film.", seconds=2.0)
    first = tmp_path / "first.h5"
    args = ["--workers", "1", "--no-progress"]
    r = CliRunner().invoke(cli, ["extract", str(clips), "-o", str(first), "--fps", "5", "--audio-n-mels", "20", *args])
    assert r.exit_code == 0, r.output
    stored = FeatureFile(first).config
    assert stored["vision"]["fps"] == 5.0 and stored["audio"]["n_mels"] == 20
    second = tmp_path / "second.h5"
    r = CliRunner().invoke(cli, ["extract", str(clips), "-o", str(second), "--config", str(first), *args])
    assert r.exit_code == 0, r.output
    assert FeatureFile(second).config == stored and FeatureFile(second).config_hash == FeatureFile(first).config_hash
