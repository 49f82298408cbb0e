"""What the CLI prints: tables that fit a terminal, JSON for scripts, colour only on a TTY."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence

COLOURS = {"red": "31", "green": "32", "yellow": "33", "dim": "2", "bold": "1"}


class Out:
    def __init__(self, stream=None, as_json: bool = False, colour: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.as_json = as_json
        self.colour = self.stream.isatty() if colour is None else colour

    def paint(self, text: str, colour: str) -> str:
        return f"\033[{COLOURS[colour]}m{text}\033[0m" if self.colour else text

    def line(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def json(self, value) -> None:
        print(json.dumps(value, indent=2, default=str), file=self.stream, flush=True)

    def table(
        self, headers: Sequence[str], rows: Sequence[Sequence[object]], cut: bool = True
    ) -> None:
        """Columns as wide as their widest cell; the last column is cut to the terminal unless
        ``cut`` is False (a URL cut short is no use: the terminal wraps it instead)."""
        cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
        width = shutil.get_terminal_size((100, 20)).columns
        for n, row in enumerate(cells):
            text = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            if cut and len(text) > width:
                text = text[: width - 1] + "…"
            self.line(self.paint(text, "bold") if n == 0 else text)

    def progress(self, percent: int, message: str) -> None:
        """One line per event when piped; a redrawn bar on a terminal."""
        if not self.colour:
            self.line(f"[{percent:3d}%] {message}")
            return
        width = 24
        done = int(width * percent / 100)
        bar = "#" * done + "-" * (width - done)
        cols = shutil.get_terminal_size((100, 20)).columns
        text = f"\r[{bar}] {percent:3d}% {message}"[: cols - 1]
        print(text.ljust(cols - 1), end="", file=self.stream, flush=True)
        if percent >= 100:
            print(file=self.stream, flush=True)


def gpus(x: float) -> str:
    """GPU-equivalents for people: at most 2 decimals (0.2857 -> "0.29", 2.0 -> "2")."""
    text = f"{float(x):.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text
