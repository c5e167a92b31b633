"""Save and restore the whole logging configuration (no tests here).

``configure_logging`` (what ``vox-relay serve`` runs) and uvicorn's default log config (the
fake push service) rewrite levels, handlers and ``propagate`` of the root, ``uvicorn`` and
library loggers; a later test capturing records then silently missed some (e.g. the access
log), depending on the order tests ran in. ``tests/conftest.py`` wraps every test in
:func:`preserved_logging`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["preserved_logging"]

_LoggerState = tuple[int, bool, bool, list[logging.Handler], list[object]]
_FRESH: _LoggerState = (logging.NOTSET, True, False, [], [])


def _own_handlers(logger: logging.Logger) -> list[logging.Handler]:
    # pytest's capture handlers come and go with each test phase: never save or restore them.
    return [h for h in logger.handlers if type(h).__module__ != "_pytest.logging"]


def _logger_state(logger: logging.Logger) -> _LoggerState:
    return (
        logger.level,
        logger.propagate,
        logger.disabled,
        _own_handlers(logger),
        list(logger.filters),
    )


def _restore_logger(logger: logging.Logger, state: _LoggerState) -> None:
    level, propagate, disabled, handlers, filters = state
    logger.setLevel(level)
    logger.propagate = propagate
    logger.disabled = disabled
    for handler in _own_handlers(logger):
        if handler not in handlers:
            logger.removeHandler(handler)
    for handler in handlers:
        logger.addHandler(handler)  # a no-op for one still there
    logger.filters[:] = filters  # type: ignore[assignment]


@contextmanager
def preserved_logging() -> Iterator[None]:
    """Run the body, then put every logger (and the root) back as it was; loggers created
    meanwhile get the defaults (level NOTSET, propagating, no handlers)."""
    manager = logging.Logger.manager
    root = logging.getLogger()
    saved = {
        name: _logger_state(logger)
        for name, logger in manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    saved_root, disable = _logger_state(root), manager.disable
    try:
        yield
    finally:
        for name, logger in list(manager.loggerDict.items()):
            if isinstance(logger, logging.Logger):
                _restore_logger(logger, saved.get(name, _FRESH))
        _restore_logger(root, saved_root)
        logging.disable(disable)
