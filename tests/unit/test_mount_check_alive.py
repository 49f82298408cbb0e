"""The mount check's liveness test: a server that exits while it is checked is no swap."""

import os
import subprocess
import sys

from ds01spawner.spawner.server_steps import _alive


def test_alive_is_false_for_a_zombie_and_a_reaped_process():
    assert _alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    # not reaped yet: once it has exited it is a zombie, whose mounts are gone
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert not _alive(child.pid)
    child.wait()
    assert not _alive(child.pid)
