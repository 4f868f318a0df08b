"""Loaded at start-up by every Python process a test starts (its folder is put on PYTHONPATH by the
``child_patches`` fixture): replaces the functions named in DEPLOYOPT_TEST_CHILD_PATCHES, so that a candidate's
own process (deployopt.isolation) and bench workers run the test's stand-in, as monkeypatch does in-process."""

import importlib
import json
import os

from tests.fakes import child_patches

for target, replacement in json.loads(os.environ.get("DEPLOYOPT_TEST_CHILD_PATCHES", "[]")):
    module_name, attribute = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    child_patches.ORIGINALS[target] = getattr(module, attribute)
    replacement_module, function = replacement.split(":")
    setattr(module, attribute, getattr(importlib.import_module(replacement_module), function))
