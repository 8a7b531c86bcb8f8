"""``python -m multiloop.worker SPEC [worker args]``: the process the supervisor
starts for ``--python SPEC``. See :mod:`multiloop._runtime`."""

import sys

from ._runtime import main

if __name__ == "__main__":
    sys.exit(main())
