"""docs/CONFIGURATION.md is generated from config.py's pydantic fields (scripts/config_docs.py) and kept current."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel

import pgdr.config
from pgdr.config import env_overrides

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "config_docs.py"
REFERENCE = ROOT / "docs" / "CONFIGURATION.md"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_the_committed_configuration_reference_is_what_the_script_writes_now():
    assert REFERENCE.read_text(encoding="utf-8") == load_script().render(), (
        "docs/CONFIGURATION.md is out of date: run `python3 scripts/config_docs.py` to update it")


def test_the_check_option_agrees_from_the_command_line():
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr + "\nrun `python3 scripts/config_docs.py` to update it"


def test_every_key_in_the_reference_has_a_description():
    assert load_script().undescribed() == [], "add description= to these fields in src/pgdr/config.py"


def test_every_field_declared_in_config_py_has_its_own_description():
    models = [model for _, model in inspect.getmembers(pgdr.config, inspect.isclass)
              if issubclass(model, BaseModel) and model.__module__ == "pgdr.config"]
    missing = [f"{model.__name__}.{name}" for model in models for name, field in model.model_fields.items()
               if not field.exclude and not field.description]
    assert missing == [], "add description= to these fields in src/pgdr/config.py"


def test_the_reference_names_each_key_once_with_the_keys_new_fields_bring():
    keys = [key.name for table in load_script().tables() for key in table.keys]
    assert len(keys) == len(set(keys))
    for name in ("backup.compression", "backup.jobs", "databases[].readwrite_user.password",
                 "retention.local.keep_daily", "notify.healthchecks", "environment"):
        assert name in keys


def test_each_documented_environment_override_reaches_the_key_it_is_listed_for():
    documented = [key for table in load_script().tables() for key in table.keys if key.env != "-"]
    assert any(key.env == "PGDR_BACKUP__JOBS" for key in documented)
    for key in documented:
        section, _, name = key.name.partition(".")
        assert env_overrides({key.env: "value"}) == {section: {name: "value"}}, key
