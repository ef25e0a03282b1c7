"""Model packages (``.zip``, e.g. bioimage.io): find and read their ONNX weights safely.

A package is data from elsewhere. Its one ``.onnx`` member is read into memory and handed
to onnxruntime as bytes; nothing is ever extracted to disk, so a member named ``../../x`` or
``/etc/x`` (zip-slip) has nowhere to land, and a member larger than any model is refused before
it is decompressed (zip bombs).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from .errors import InputError, describe


def _open(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise InputError(f"model package {describe(path)} is not a readable zip ({err})") from None


def onnx_from_package(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of the package's single ONNX model file."""
    path = Path(path)
    with _open(path) as archive:
        members = [m for m in archive.infolist() if m.filename.lower().endswith(".onnx")]
        if len(members) != 1:
            raise InputError(
                f"model package {describe(path)} holds {len(members)} .onnx files; expected "
                "exactly one (a zsdeconvnet or bioimage.io package with ONNX weights)"
            )
        member = members[0]
        if member.file_size > max_bytes:
            raise InputError(f"model package {describe(path)}: {member.filename} is too large")
        try:
            return archive.read(member)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            raise InputError(f"model package {describe(path)} is damaged ({err})") from None
