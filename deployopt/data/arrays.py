"""Reading array files (.npz / .npy) with one clear error per bad file; shared by every data source."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from deployopt.errors import file_error


def load_arrays(path: str | Path, what: str) -> dict[str, np.ndarray]:
    """Read an .npz (arrays by name) or .npy (a single array, named '') file."""
    path = Path(path)
    if not path.exists():
        raise file_error(path, f"{what} file not found", "check the path")
    if path.is_dir():
        raise file_error(path, f"is a directory, not a {what} file", "pass an .npz or .npy file")
    try:
        if path.suffix == ".npy":
            return {"": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                return {"": np.asarray(archive)}
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # a broken .npz is a broken zip
        raise file_error(path, f"is not a readable .npz/.npy {what} file ({exc})", "save it with numpy.savez") from exc
