"""The ``ray-dissect`` command line. Each command validates, then hands off to the library.

Errors the user can fix print one line (``error: ...``) and exit with the code of their class
(see the README); anything else is a bug and shows a traceback. The commands live in
:mod:`.jobs` (run, resume, report), :mod:`.cluster` (submit, status, logs, stop) and
:mod:`.tools`; importing them registers them on :data:`app`, in that order.
"""

from __future__ import annotations

from ray_dissect.cli import jobs  # registered first: run, resume, report

# isort: split
from ray_dissect.cli import cluster, tools
from ray_dissect.cli.common import app

__all__ = ["app", "main"]
_COMMANDS = (jobs, cluster, tools)


def main() -> None:
    """Entry point of the ``ray-dissect`` script."""
    app(prog_name="ray-dissect")
