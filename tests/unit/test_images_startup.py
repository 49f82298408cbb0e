"""The hub refuses a start_timeout that an image build could never fit in."""

import pytest
from traitlets.config import Config

from ds01spawner.spawner.startup import ConfigCheckError, check_config


def test_default_start_timeout_covers_the_build():
    check_config(Config())
    from ds01spawner import DS01Spawner

    spawner = DS01Spawner(config=Config())
    assert spawner.start_timeout == spawner.image_build_timeout + spawner.http_timeout + 60
    c = Config()
    c.DS01Spawner.image_build_timeout = 1800
    assert DS01Spawner(config=c).start_timeout == 1800 + 30 + 60


def test_a_short_start_timeout_stops_the_hub_with_the_fix():
    c = Config()
    c.Spawner.start_timeout = 120
    with pytest.raises(ConfigCheckError) as e:
        check_config(c)
    msg = str(e.value)
    assert "start_timeout = 120 s" in msg and "image_build_timeout = 600 s" in msg
    assert "at least 630" in msg and "690" in msg


def test_the_most_specific_section_wins():
    c = Config()
    c.Spawner.start_timeout = 120
    c.DS01Spawner.start_timeout = 700
    check_config(c)
    c.DS01Spawner.image_build_timeout = 60
    c.DS01Spawner.start_timeout = 90
    check_config(c)
    c.DS01Spawner.http_timeout = 45
    with pytest.raises(ConfigCheckError, match="http_timeout = 45 s"):
        check_config(c)


def test_without_project_images_any_start_timeout_goes():
    c = Config()
    c.Spawner.start_timeout = 20
    c.DS01Spawner.project_images = False
    check_config(c)
