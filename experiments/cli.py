"""The command-line parser the experiment scripts share: bad input exits with code 2 and one printable line."""

from __future__ import annotations

import argparse


def one_line(text: str) -> str:
    """``text`` with line breaks, control characters and unpaired surrogates escaped, so an error
    message quoting user input stays one printable line on any terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def description(doc: str) -> str:
    """The first paragraph of a script's docstring on one line: its ``--help`` summary, whole sentences
    even where the paragraph wraps over several lines."""
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``one_line`` of the message) and exit code 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


CPU_DEVICES_HELP = ("split this machine's CPU into K jax devices, so the runs train on K cores at once (without an "
                    "accelerator; the runs are split over them as over GPUs). Default: jax's, one device")


def add_cpu_devices(p: argparse.ArgumentParser) -> None:
    """The ``--cpu-devices K`` option (applied with :func:`jmarl.devices.use_cpu_devices` before jax starts)."""
    p.add_argument("--cpu-devices", type=int, default=None, metavar="K", help=CPU_DEVICES_HELP)
