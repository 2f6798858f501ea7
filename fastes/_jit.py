"""Where the Numba kernels' compiled code is cached, decided once when fastes is imported.

Numba caches ``cache=True`` kernels in the package's ``__pycache__``, else in
``$NUMBA_CACHE_DIR``, else in the user's cache folder (``~/.cache/numba``); when none
of these is writable (a read-only install and no writable ``HOME``) it refuses to define
the function at all, and ``import fastes`` failed. Here the same places are tried
first; then a folder under the system's temp folder (``fastes-numba-cache-<uid>``,
kept between runs); then no cache (every start compiles again: slower start-up, same
results). A fallback is said once, in one line on stderr. An unwritable
``$NUMBA_CACHE_DIR`` is said too (Numba itself would skip it silently).

Kernels use this module's :func:`njit`, which drops ``cache=True`` when no place works.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numba
from numba.core import caching, config

__all__ = ["njit", "CACHE_ENABLED", "CACHE_NOTE", "choose_cache"]


def _probe():  # a function whose source file lies in the package: what numba locates
    pass


def _writable(folder: str) -> bool:
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


def choose_cache(py_file: str, temp_root: str | None = None) -> tuple[bool, str | None, str | None]:
    """``(enabled, cache_dir, note)`` for kernels defined in ``py_file``: whether to cache
    at all, a folder to set as Numba's ``CACHE_DIR`` (``None``: Numba's own choice works)
    and the one line to print (``None``: nothing to say)."""
    user_dir = config.CACHE_DIR
    user_ok = bool(user_dir) and caching.UserProvidedCacheLocator.from_function(_probe, py_file) is not None
    if user_ok:
        return True, None, None
    where = None
    for cls in (caching.InTreeCacheLocator, caching.UserWideCacheLocator):
        loc = cls.from_function(_probe, py_file)
        if loc is not None:
            where = loc.get_cache_path()
            break
    bad = f"NUMBA_CACHE_DIR={user_dir} is not writable" if user_dir else None
    if where is not None:
        return True, None, (f"fastes: {bad}; caching compiled kernels in {where}" if bad else None)
    bad = bad or f"neither {Path(py_file).parent / '__pycache__'} nor the user's cache folder is writable"
    root = temp_root if temp_root is not None else tempfile.gettempdir()
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    folder = os.path.join(root, f"fastes-numba-cache-{uid}")
    if _writable(folder):
        return True, folder, f"fastes: {bad}; caching compiled kernels in {folder}"
    return False, None, f"fastes: {bad}, nor {root}; kernels are compiled at every start (no cache)"


CACHE_ENABLED, _dir, CACHE_NOTE = choose_cache(str(Path(__file__).resolve()))
if _dir is not None:
    os.environ["NUMBA_CACHE_DIR"] = _dir  # numba re-reads its configuration from the environment
    config.CACHE_DIR = _dir
if CACHE_NOTE:
    print(CACHE_NOTE, file=sys.stderr)


def njit(*args, **kwargs):
    """``numba.njit``, with ``cache=True`` dropped when no cache folder is writable."""
    if not CACHE_ENABLED:
        kwargs.pop("cache", None)
    return numba.njit(*args, **kwargs)
