"""The project's logger. Nothing is configured on import; scripts call `setup_logging()` in `main()`."""

import logging
import sys

__all__ = ["LOGGER", "setup_logging", "colorstr"]

LOGGER = logging.getLogger("yolo")


class _StdoutHandler(logging.StreamHandler):
    """Writes to sys.stdout as it is at each message (a redirect, a test's capture), not as it was at set-up,
    which may since have been closed."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(verbose: bool = True, rank: int = -1) -> logging.Logger:
    """Send the project's messages to stdout as plain lines; only rank -1/0 speaks at INFO. Idempotent."""
    if not LOGGER.handlers:
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(handler)
        LOGGER.propagate = False
    LOGGER.setLevel(logging.INFO if verbose and rank in (-1, 0) else logging.WARNING)
    return LOGGER


_COLORS = {
    "black": "\033[30m", "red": "\033[31m", "green": "\033[32m", "yellow": "\033[33m", "blue": "\033[34m",
    "magenta": "\033[35m", "cyan": "\033[36m", "white": "\033[37m", "bold": "\033[1m", "underline": "\033[4m",
    "end": "\033[0m",
}


def colorstr(*parts: str) -> str:
    """`colorstr('blue', 'bold', 'text')` as YOLOv5 prints section prefixes; plain text when stdout is not a tty."""
    *styles, text = parts if len(parts) > 1 else ("blue", "bold", parts[0])
    if not sys.stdout.isatty():
        return text
    return "".join(_COLORS[s] for s in styles) + text + _COLORS["end"]
