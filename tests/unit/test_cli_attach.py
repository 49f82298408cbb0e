"""``container attach -c`` prints plain text: no terminal control codes (issue 15 item 9)."""

import pytest

from ds01spawner.cli.attach import plain_text

BASH = (
    "\x1b[?2004h\x1b]0;alice@box: ~\x07\x1b[01;32malice@box\x1b[00m:~$ whoami\r\n"
    "\x1b[?2004l\ralice\r\n"
)


def test_bash_output_becomes_plain_text():
    assert plain_text(BASH) == ("alice@box:~$ whoami\nalice\n", "")


@pytest.mark.parametrize("cut", range(1, len(BASH)))
def test_a_sequence_cut_between_chunks_is_still_removed(cut):
    first, carry = plain_text(BASH[:cut])
    second, carry = plain_text(BASH[cut:], carry)
    assert first + second == "alice@box:~$ whoami\nalice\n" and carry == ""


def test_an_escape_that_never_ends_does_not_swallow_the_output():
    """Found in review: one unfinished ESC ] (binary output) made every later chunk wait in the
    carry, re-searched each time, and thrown away at the end."""
    text, carry = plain_text("hello \x1b]0;")
    assert (text, carry) == ("hello ", "\x1b]0;")  # control: a short cut sequence waits
    shown = [text]
    for _ in range(100):
        text, carry = plain_text("x" * 3000, carry)
        shown.append(text)
        assert len(carry) <= 256
    assert "".join(shown).count("x") >= 100 * 3000 - 256
