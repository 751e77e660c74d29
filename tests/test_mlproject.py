"""The MLproject agrees with the declared settings: every parameter of every entry point is passed
to the flag of a declared setting with the same name, type and default, and every setting of the
main job is a parameter of `main`; the deliberate differences are listed below with their reasons.

The flag a parameter reaches is found by parsing it with the entry point's real parser, so the
command line of the MLproject is checked too (a parameter passed to the wrong flag fails).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from qvae.cli import EvaluateOptions, GenerateOptions
from qvae.cli import build_parser as qvae_parser
from qvae.config import PRESET_FIELDS, PRESETS, Config, JobOptions
from qvae.settings import declared_defaults, rule_of
from tuning.cli import build_parser as tuning_parser
from tuning.space import SearchSpace
from tuning.study import TRIAL_DEFAULTS, StudySettings

MLPROJECT = yaml.safe_load((Path(__file__).resolve().parents[1] / "MLproject").read_text())
ENTRY_POINTS = MLPROJECT["entry_points"]

PROTOCOL = ("the seed's full evaluation protocol; the declared default 0 skips this costly score "
            "(a quick `qvae run`, `qvae evaluate`, a tuning trial)")
CHAMPION = "the CLI's --model is required; the entry point defaults to the registered champion"
DELIBERATE = {  # (entry point, parameter): (its MLproject default, why it differs from the declaration)
    ("main", "nll_samples"): (1000, PROTOCOL),
    ("main", "probe_epochs"): (100, PROTOCOL),
    ("evaluate", "nll_samples"): (1000, PROTOCOL),
    ("evaluate", "probe_epochs"): (100, PROTOCOL),
    ("evaluate", "model_uri"): ("models:/qvae-mnist@champion", CHAMPION),
    ("evaluate", "output"): ("scores.json", "an entry point keeps its result in a file; the CLI writes one only "
                             "when given --output"),
    ("generate", "model_uri"): ("models:/qvae-mnist@champion", CHAMPION),
}
# a preset supplies these unless -P gives them: the MLproject passes "" (= not given) by default
FROM_PRESET = {(entry, name) for entry in ("main", "tune") for name in PRESET_FIELDS}
NOT_IN_MAIN = {  # settings of the main job that are deliberately no parameter of `main`
    "input_dim": "fixed by MNIST (28 x 28 pixels), not a choice of the experiment",
    "progress": "a terminal's choice (--no-progress), not part of the experiment",
    "extra_tags": "set by the tuning package for its trials, not a flag",
}

# entry point -> (its parser, the argv before the flags, {dest prefix: (declaring class, default overrides)})
PARSERS: dict[str, tuple[Callable[[], Any], list[str], dict[str, tuple[type, dict[str, Any]]]]] = {
    "main": (qvae_parser, ["run"], {"cfg_": (Config, {}), "job_": (JobOptions, {})}),
    "tune": (tuning_parser, [], {"cfg_": (Config, {}), "job_": (JobOptions, TRIAL_DEFAULTS),
                                 "study_": (StudySettings, {}), "space_": (SearchSpace, {})}),
    "evaluate": (qvae_parser, ["evaluate", "--model", "base"], {"ev_": (EvaluateOptions, {})}),
    "generate": (qvae_parser, ["generate", "--model", "base"], {"gen_": (GenerateOptions, {})}),
}
MLPROJECT_TYPES = {int: "int", float: "float", str: "string", bool: "string"}  # a bool parameter: "true" / "false"
# a setting of one number or a list (gamma: 0.5, "0.5,1.0,..." or "@file") is a string parameter
LISTS = {f"cfg_{name}" for name in declared_defaults(Config) if rule_of(Config, name).kind == "floats"}


@lru_cache(maxsize=None)
def parser_of(make_parser: Callable[[], Any]) -> Any:
    return make_parser()


def flags_of(command: str) -> dict[str, str]:
    """Parameter -> the flag its `{placeholder}` follows in the entry point's command."""
    return {param: flag for flag, param in re.findall(r"(--[a-z0-9-]+) \{(\w+)\}", command)}


def declaration(entry: str, param: str, value: str | None = None) -> tuple[str, Any]:
    """(setting name, its declared default) of the flag the MLproject passes `param` to (given
    `value`, by default the parameter's MLproject default)."""
    return _declaration(entry, param, value)[1:]


def mlproject_type(entry: str, param: str) -> str:
    """The MLproject type of the setting `param` reaches: by its declared default's type, string for a list."""
    dest, _, default = _declaration(entry, param, None)
    return "string" if dest in LISTS else MLPROJECT_TYPES[type(default)]


def _declaration(entry: str, param: str, value: str | None) -> tuple[str, str, Any]:
    """(the flag's dest, the setting's name, its declared default)."""
    make_parser, head, prefixes = PARSERS[entry]
    flag = flags_of(ENTRY_POINTS[entry]["command"])[param]
    parser = parser_of(make_parser)
    if value is None:
        value = str(ENTRY_POINTS[entry]["parameters"][param].get("default", ""))
    base, given = vars(parser.parse_args(head)), vars(parser.parse_args([*head, flag, value]))
    (dest,) = [k for k in given if given[k] != base[k]]
    prefix = next(p for p in prefixes if dest.startswith(p))
    cls, overrides = prefixes[prefix]
    name = dest[len(prefix):]
    return dest, name, {**declared_defaults(cls), **overrides}[name]


CASES = [(entry, param) for entry, spec in ENTRY_POINTS.items() for param in spec["parameters"]
         if param != "preset" and (entry, param) not in FROM_PRESET]


@pytest.mark.parametrize("entry", ["main", "tune"])
def test_preset_parameters_leave_their_fields_to_the_preset_unless_given(entry):
    params = ENTRY_POINTS[entry]["parameters"]
    assert params["preset"] == {"type": "string", "default": "seed"}
    flags = flags_of(ENTRY_POINTS[entry]["command"])
    assert flags["preset"] == "--preset"
    make_parser, head, _ = PARSERS[entry]
    parser = parser_of(make_parser)
    for name in PRESET_FIELDS:
        if entry == "tune" and name in ("kl_beta", "dist_beta"):
            assert name not in params  # the study searches it
            continue
        assert params[name] == {"type": "string", "default": ""}, (entry, name)
        declared = declared_defaults(Config)[name]
        assert declaration(entry, name, str(declared)) == (name, declared)  # a value given reaches its setting
        not_given = vars(parser.parse_args([*head, flags[name], ""]))
        assert not_given[f"cfg_{name}"] is None  # "" leaves it to the preset
    for preset in PRESETS:
        assert vars(parser.parse_args([*head, "--preset", preset]))["preset"] == preset


@pytest.mark.parametrize("entry,param", CASES, ids=[f"{e}.{p}" for e, p in CASES])
def test_each_parameter_is_a_declared_setting_with_its_default_and_type(entry, param):
    spec = ENTRY_POINTS[entry]["parameters"][param]
    assert param in flags_of(ENTRY_POINTS[entry]["command"]), f"{entry}.{param} is not passed by the command"
    name, default = declaration(entry, param)
    assert spec["type"] == mlproject_type(entry, param), (entry, param, spec["type"], type(default))
    if isinstance(default, bool):
        default = str(default).lower()
    if (entry, param) in DELIBERATE:
        expected, _ = DELIBERATE[(entry, param)]
        assert spec["default"] == expected != default, f"{entry}.{param}: listed as deliberate but not different"
    else:
        declared = f"{entry}.{param}: MLproject {spec.get('default')!r}, declared {default!r}"
        assert spec.get("default") == default, declared
        assert param == name, f"{entry}.{param} reaches the setting {name}: a parameter keeps its setting's name"


def test_every_setting_of_the_main_job_is_a_parameter_of_main():
    main = {declaration("main", param)[0] for param in ENTRY_POINTS["main"]["parameters"]
            if param != "preset" and ("main", param) not in FROM_PRESET} | set(PRESET_FIELDS)
    declared = set(declared_defaults(Config)) | set(declared_defaults(JobOptions))
    assert declared - main - set(NOT_IN_MAIN) == set()
    assert set(NOT_IN_MAIN) <= declared and not set(NOT_IN_MAIN) & main  # the list holds no stale entries


def test_the_deliberate_differences_are_all_still_in_the_mlproject():
    for entry, param in DELIBERATE:
        assert param in ENTRY_POINTS[entry]["parameters"], (entry, param)
