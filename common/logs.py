"""Send the project's log records to Ray Serve's replica log files.

Ray Serve configures handlers on the ``ray.serve`` logger only (file per replica, with request
ids). Inside a replica, our package loggers reuse those handlers, so ``serve.log``-style lines
from the router, deployments and engines land next to Ray's own.
"""

from __future__ import annotations

import logging

PROJECT_LOGGERS = ("serve", "servers", "common", "configs", "cloud")


def use_serve_log_handlers(level: int = logging.INFO) -> None:
    serve_logger = logging.getLogger("ray.serve")
    if not serve_logger.handlers:
        return
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        for handler in serve_logger.handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)
        logger.propagate = False
