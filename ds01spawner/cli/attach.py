"""``container attach``: a terminal in a running server, through Jupyter's terminal API.

The server's own JupyterLab terminals (terminado) carry it: ``POST /api/terminals`` makes one,
its websocket carries ``["stdin", text]`` one way and ``["stdout", text]`` the other. No Docker
access is needed, only the hub token. On a TTY the session is interactive (raw mode, window
size followed); with ``--command`` or piped input the commands run and the output is printed
until the shell exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
from urllib.parse import quote

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from .client import HubClient, HubError


async def attach(client: HubClient, server: str, commands: str | None, timeout: float) -> int:
    """Run the session; returns the exit status for the CLI (0 when the shell ended)."""
    base = client.server_url(server)  # absolute: on the user's own origin under subdomain_host
    term = client.request("POST", base + "api/terminals").json()["name"]
    ws_url = base.replace("http", "ws", 1) + f"terminals/websocket/{quote(term, safe='')}"
    request = HTTPRequest(
        ws_url,
        headers={"Authorization": client.session.headers["Authorization"]},
        connect_timeout=30,
    )
    try:
        conn = await websocket_connect(request)
    except Exception as e:
        raise HubError(f"Cannot open a terminal in '{server}' ({e}).") from e
    try:
        if commands is not None:
            return await _batch(conn, commands, timeout)
        return await _interactive(conn)
    finally:
        conn.close()
        try:
            client.request("DELETE", base + f"api/terminals/{term}")
        except HubError:
            pass  # the shell's exit may have removed it already


# terminal control sequences: CSI (colours, bracketed paste "[?2004h"), OSC (window titles),
# other two-byte escapes; a sequence cut at the end of a chunk is kept for the next one
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|\x1b[()][0-9A-Za-z]"
)
_MAX_CARRY = 256  # longer than any real control sequence
_CUT = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*|\x1b?|[()])?\Z")


def plain_text(chunk: str, carry: str = "") -> tuple[str, str]:
    """Output of a terminal as plain text for a pipe or a log: (text, carry for the next chunk).

    Control sequences are dropped, ``\\r\\n`` becomes ``\\n`` and a lone ``\\r`` is dropped."""
    text = carry + chunk
    cut = _CUT.search(text)
    carry = ""
    # A sequence cut at the chunk's end waits for the next chunk, but only a short one: an
    # escape that never ends (binary output) must not swallow, and hold, all that follows.
    if cut and cut.start() < len(text) and len(text) - cut.start() <= _MAX_CARRY:
        text, carry = text[: cut.start()], text[cut.start() :]
    text = _CONTROL.sub("", text).replace("\x1b", "").replace("\r\n", "\n").replace("\r", "")
    return text, carry


async def _batch(conn, commands: str, timeout: float) -> int:
    cols, rows = shutil.get_terminal_size((120, 40))
    await conn.write_message(json.dumps(["set_size", rows, cols]))
    text = commands if commands.endswith("\n") else commands + "\n"
    await conn.write_message(json.dumps(["stdin", text + "exit\n"]))
    out = sys.stdout.buffer
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    carry = ""
    while True:
        left = deadline - loop.time()
        if left <= 0:
            print(f"\nds01: the commands did not finish within {timeout:g} s", file=sys.stderr)
            return 124
        message = await asyncio.wait_for(conn.read_message(), left)
        if message is None:
            return 0
        kind, *args = json.loads(message)
        if kind == "stdout":
            text, carry = plain_text(args[0], carry)
            out.write(text.encode("utf-8", "replace"))
            out.flush()
        elif kind == "disconnect":
            return 0


async def _interactive(conn) -> int:  # pragma: no cover - needs a real TTY
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()

    def send_size(*_):
        cols, rows = shutil.get_terminal_size((80, 24))
        asyncio.ensure_future(conn.write_message(json.dumps(["set_size", rows, cols])))

    def on_stdin():
        data = os.read(fd, 4096)
        if data:
            asyncio.ensure_future(
                conn.write_message(json.dumps(["stdin", data.decode(errors="replace")]))
            )

    tty.setraw(fd)
    loop.add_reader(fd, on_stdin)
    loop.add_signal_handler(signal.SIGWINCH, send_size)
    send_size()
    try:
        while True:
            message = await conn.read_message()
            if message is None:
                return 0
            kind, *args = json.loads(message)
            if kind == "stdout":
                sys.stdout.buffer.write(args[0].encode("utf-8", "replace"))
                sys.stdout.buffer.flush()
            elif kind == "disconnect":
                return 0
    finally:
        loop.remove_reader(fd)
        loop.remove_signal_handler(signal.SIGWINCH)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        print()
