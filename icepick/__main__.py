"""``python -m icepick``: run the command line, then end the process without Python's teardown.

After ``import torch``, Python's normal shutdown (module clean-up, torch's operator-library
finalizers and exit handlers) costs about a second of CPU in every job (docs/performance.md,
"Start-up"). Every file a command writes is closed and renamed into place before ``main``
returns, so once the logs and the standard streams are flushed there is nothing left to do:
the process ends at once with ``main``'s exit code. An exception that escapes ``main`` takes
the normal way out, traceback and all.
"""

import logging
import os
import sys

from icepick.cli import main


def _end_process(code: int) -> None:
    """Flush the logs and the standard streams, then end the process with ``code``."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written
            pass
    os._exit(code)


_end_process(main())
