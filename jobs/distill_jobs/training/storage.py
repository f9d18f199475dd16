"""Directories in the artifact store: used in place when local, copied when remote."""

from __future__ import annotations

import tempfile
from typing import Any

import fsspec


def is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def local_copy(uri: str) -> str:
    """A local directory with the contents of ``uri`` (the directory itself when local)."""
    fs, path = fsspec.core.url_to_fs(uri)
    if is_local(fs):
        return str(path)
    target = tempfile.mkdtemp(prefix="distill-")
    fs.get(f"{path}/", f"{target}/", recursive=True)
    return target


def upload_dir(local: str, uri: str) -> None:
    """Copy a local directory's contents to ``uri`` (any fsspec store)."""
    fs, path = fsspec.core.url_to_fs(uri)
    fs.put(f"{local}/", f"{path}/", recursive=True)
