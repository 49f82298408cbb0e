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
