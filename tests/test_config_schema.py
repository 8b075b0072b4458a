"""The packaged YAML is the only default, described by a schema the docs page is made from.

As distributed does with ``distributed-schema.yaml``: ``ebook2audio.yaml`` is
validated against ``ebook2audio-schema.yaml`` and both have the same keys;
``docs/configuration.md`` is what ``docs/gen_config.py`` writes; and no
``config.get`` call in the package repeats (or contradicts) a default of the
YAML.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import jsonschema  # in the dev extra: a missing validator must fail, not skip
import pytest
from helpers import ROOT

from ebook2audio_dask import config

PACKAGE = ROOT / "ebook2audio_dask"
READ_BY = {"client", "worker", "both"}


def _gen_config():
    spec = importlib.util.spec_from_file_location("gen_config", ROOT / "docs" / "gen_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defaults_validate_against_the_schema():
    schema = config.schema()
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate({"ebook2audio": config.defaults()}, schema)


def test_schema_rejects_an_unknown_key_and_a_wrong_type():
    schema = config.schema()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"ebook2audio": {"cluster": {"n-wokers": 2}}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"ebook2audio": {"synthesize": {"batch-chars": "many"}}}, schema)


def _same_keys(schema_node: dict, defaults: dict, path: str = "") -> list[str]:
    problems = []
    props = schema_node["properties"]
    for name in sorted(set(props) ^ set(defaults)):
        where = "schema" if name in props else "ebook2audio.yaml"
        problems.append(f"{path}{name}: only in {where}")
    for name in set(props) & set(defaults):
        if "properties" in props[name]:
            if not isinstance(defaults[name], dict):
                problems.append(f"{path}{name}: a section in the schema, not in the YAML")
            else:
                problems += _same_keys(props[name], defaults[name], f"{path}{name}.")
    return problems


def test_schema_and_defaults_have_the_same_keys():
    root = config.schema()["properties"]["ebook2audio"]
    assert _same_keys(root, config.defaults()) == []


def test_every_setting_says_what_it_is_and_where_it_is_read():
    leaves = dict(config.schema_leaves())
    assert "cluster.backend" in leaves and "output.loudness.range" in leaves
    for key, node in leaves.items():
        assert node.get("type"), f"{key}: no type"
        assert str(node.get("description", "")).strip(), f"{key}: no description"
        assert node.get("x-read-by") in READ_BY, f"{key}: x-read-by must be one of {READ_BY}"


def test_configuration_page_is_generated_from_the_schema():
    page = ROOT / "docs" / "configuration.md"
    assert page.read_text(encoding="utf-8") == _gen_config().render(), (
        "docs/configuration.md is stale: run python docs/gen_config.py"
    )
    text = page.read_text(encoding="utf-8")
    for key, _ in config.schema_leaves():
        assert f"| `{key}` |" in text


# ------------------------------------------------------------------ config.get call sites
def _config_names(tree: ast.Module) -> set[str]:
    """Local names bound to the ebook2audio_dask.config module in *tree*."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (
            node.module in (None, "ebook2audio_dask") or node.module == ""
        ):
            for alias in node.names:
                if alias.name == "config":
                    names.add(alias.asname or "config")
    return names


def _calls():
    """``(file, line, key or prefix, is_prefix, default node or None)`` of each config.get."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = _config_names(tree)
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in names
                and node.args
            ):
                continue
            first = node.args[0]
            default = node.args[1] if len(node.args) > 1 else None
            for kw in node.keywords:
                if kw.arg == "default":
                    default = kw.value
            rel = path.relative_to(PACKAGE).as_posix()
            if isinstance(first, ast.Constant):
                yield rel, node.lineno, first.value, False, default
            elif isinstance(first, ast.JoinedStr) and isinstance(first.values[0], ast.Constant):
                yield rel, node.lineno, first.values[0].value, True, default
            else:
                yield rel, node.lineno, None, True, default


def _has(tree: dict, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def test_config_get_calls_read_keys_of_the_yaml_without_their_own_default():
    defaults = config.defaults()
    calls = list(_calls())
    assert len(calls) > 40  # the scan finds the call sites
    problems = []
    for rel, line, key, is_prefix, default in calls:
        where = f"{rel}:{line}"
        if key is not None and not is_prefix and not _has(defaults, key):
            problems.append(f"{where}: {key!r} is not in ebook2audio.yaml")
        if key is not None and is_prefix and not _has(defaults, key.rstrip(".")):
            problems.append(f"{where}: no section {key.rstrip('.')!r} in ebook2audio.yaml")
        if default is not None:
            problems.append(f"{where}: a default for {key!r}; the YAML is the only default")
    assert problems == []


def test_slurm_job_defaults_are_the_yaml_profile():
    pytest.importorskip("dask_jobqueue")
    from ebook2audio_dask.cluster import slurm_job_script

    profile = config.defaults()["slurm"]
    script = slurm_job_script()
    assert f"--cpus-per-task={profile['cores']}" in script
    assert f"-t {profile['walltime']}" in script
    assert f"--gres={profile['gres-type']}:{profile['gpus-per-job']}" in script


def test_generator_check_mode(tmp_path, monkeypatch):
    gen = _gen_config()
    monkeypatch.setattr(gen, "PAGE", Path(tmp_path / "configuration.md"))
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0
    gen.PAGE.write_text("stale", encoding="utf-8")
    assert gen.main(["--check"]) == 1
