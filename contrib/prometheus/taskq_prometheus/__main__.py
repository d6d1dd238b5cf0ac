"""``python -m taskq_prometheus``: see :func:`taskq_prometheus.main`."""

import sys

from taskq_prometheus._cli import main

sys.exit(main())
