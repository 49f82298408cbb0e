"""Every DS01Culler setting documents itself (help with default and example) and is in
docs/culler.md's settings table with its real default."""

import re
from pathlib import Path

import pytest

from ds01spawner.culler.service import DS01Culler

DOC = (Path(__file__).resolve().parents[2] / "docs" / "culler.md").read_text()
OWN = DS01Culler.class_own_traits(config=True)


@pytest.mark.parametrize("name", sorted(OWN))
def test_setting_help_has_default_and_example(name):
    text = OWN[name].help or ""
    assert "Default: ``" in text and "Example: ``" in text, name


@pytest.mark.parametrize("name", sorted(OWN))
def test_setting_is_in_the_docs_table_with_its_default(name):
    row = re.search(rf"^\| `{name}` \| `(.+?)` \|", DOC, re.MULTILINE)
    assert row, f"docs/culler.md has no row for {name}"
    assert row.group(1) == repr(getattr(DS01Culler(), name)).replace("'", '"'), name
