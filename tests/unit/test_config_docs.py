"""docs/configuration.md follows DS01Spawner's traits, and every DS01 setting documents itself."""

import ast
import importlib.util
import re
from pathlib import Path

import pytest
from traitlets.config import Config

from ds01spawner import DS01Spawner

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gen_config_docs.py"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_config_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
OWN = gen.own_config_traits()


def test_configuration_reference_is_up_to_date():
    problem = gen.check()
    assert problem is None, problem


def test_the_reference_lists_every_own_setting_and_changed_default():
    text = gen.render()
    for name in [*OWN, *gen.changed_defaults()]:
        assert f"`{name}`" in text, name
    assert set(gen.changed_defaults()) >= {
        "image",
        "network_name",
        "cmd",
        "notebook_dir",
        "remove",
        "pull_policy",
        "prefix",
    }


def test_check_reports_a_stale_or_missing_file(tmp_path):
    stale = tmp_path / "configuration.md"
    assert "does not exist" in gen.check(stale)
    stale.write_text("# old\n", encoding="utf-8")
    assert "out of date" in gen.check(stale)
    stale.write_text(gen.render(), encoding="utf-8")
    assert gen.check(stale) is None


@pytest.mark.parametrize("name", sorted(OWN))
def test_own_setting_help_has_default_and_example(name):
    help_text = OWN[name].help or ""
    assert "Default" in help_text, f"DS01Spawner.{name}: help text has no 'Default'"
    assert "Example" in help_text, f"DS01Spawner.{name}: help text has no 'Example'"


@pytest.mark.parametrize("name", sorted(OWN))
def test_documented_default_is_the_real_default(name):
    """The ``Default: ``...``` in a help text agrees with the trait's actual default."""
    match = re.search(r"Default: ``(.+?)``", OWN[name].help or "")
    assert match, f"DS01Spawner.{name}: no 'Default: ``value``' in its help text"
    written = match.group(1)
    actual = getattr(DS01Spawner(config=Config()), name)
    try:
        documented = ast.literal_eval(written)
    except (ValueError, SyntaxError):
        documented = written  # a bare path such as /home/{username}
    if type(OWN[name]).__name__ == "ByteSpecification":  # "512M" means 536870912
        documented = OWN[name].validate(None, documented)
    assert documented == actual, f"DS01Spawner.{name}: help says {written}, default is {actual!r}"
