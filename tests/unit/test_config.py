"""include/prodclone.yaml: one declaration per key gives the loader its defaults and editors their schema;
unknown keys and bad values are refused at file:line:col."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from prodclone.cli import main
from prodclone.config import SCHEMA_PATH, Config, default_profiles, json_schema, load_config, schema_text
from prodclone.errors import ProdcloneError
from support import ROOT

SHIPPED = ROOT / "include" / "prodclone.yaml"


def _write(tmp_path, text: str):
    path = tmp_path / "prodclone.yaml"
    path.write_text(text)
    return path


def test_checked_in_schema_is_the_generated_one():
    """Regenerate with `prodclone config schema > include/prodclone.schema.json`."""
    assert SCHEMA_PATH.read_text() == schema_text()


def test_editors_find_the_schema_and_it_accepts_the_shipped_file():
    header = SHIPPED.read_text().splitlines()[:10]
    assert "# yaml-language-server: $schema=prodclone.schema.json" in header
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load(SHIPPED.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError, match="'jobz' was unexpected"):
        jsonschema.validate({"source": {"jobz": 2}}, schema)


def test_an_empty_file_is_the_declared_defaults(tmp_path):
    """The loader has no defaults of its own: what an absent key becomes is the field's default."""
    cfg = load_config(_write(tmp_path, "# nothing set\n"))
    assert cfg == Config()
    assert cfg.profiles == default_profiles()
    assert (cfg.jobs, cfg.schedule, cfg.velero.volume) == (2, "0 2 * * *", (("type", "gp3"),))
    assert cfg.rules_path == ROOT / "include" / "masking" / "rules.yaml"


def test_schema_defaults_are_the_loaders(tmp_path):
    """Every default an editor shows is what the loader uses when the key is left out."""
    cfg = load_config(_write(tmp_path, ""))
    for section, spec in json_schema()["properties"].items():
        for name, leaf in (spec.get("properties") or {section: spec}).items():
            if "default" in leaf:
                text = yaml.safe_dump({section: {name: leaf["default"]}} if "properties" in spec else {name: leaf["default"]})
                assert load_config(_write(tmp_path, text)) == cfg, (section, name)


def test_shipped_file_loads_its_values():
    cfg = load_config(SHIPPED)
    assert cfg.profiles["preview"].settings == (("statement_timeout", "30s"),)
    assert cfg.profiles["loadtest"].max_ttl_hours == 168
    pg, redis = cfg.velero.datastores
    assert (pg.kind, pg.port, pg.secret, redis.selector, redis.container, redis.port) == \
        ("postgres", 5432, "postgres-credentials", (("app", "redis"),), "redis", 6379)


def test_emptied_lists_are_defaults_and_a_null_schedule_is_no_schedule(tmp_path):
    cfg = load_config(_write(tmp_path, "export:\n  schedule: null\nclones:\n  protected:\n  teardown_schedule: null\n"
                                       "alerts:\n  email:\nvelero:\n  volume:\n"))
    assert (cfg.schedule, cfg.teardown_schedule, cfg.protected, cfg.alert_emails) == (None, None, (), ())
    assert cfg.velero.volume == (("type", "gp3"),)


BAD = [
    ("source:\n  jobz: 3\n", "2:3: source.jobz: unknown key 'jobz' (did you mean 'jobs'?)"),
    ("sorce:\n  jobs: 3\n", "1:1: sorce: unknown key 'sorce' (did you mean 'source'?)"),
    ("profiles:\n  preview:\n    resources: {connection_limt: 3}\n",
     "3:17: profiles.preview.resources.connection_limt: unknown key 'connection_limt' (did you mean 'connection_limit'?)"),
    ("profiles:\n  staging: {ttl_hours: 1}\n", "2:3: profiles.staging: unknown key 'staging'; known here: preview, loadtest"),
    ("velero:\n  datastores:\n    mysql: {}\n", "3:5: velero.datastores.mysql: unknown key 'mysql'; known here: postgres, redis"),
    ("source:\n  jobs: 0\n", "2:3: source.jobs: 0 is less than the minimum of 1"),
    ("clones:\n  keep_snapshots: three\n", "2:3: clones.keep_snapshots: 'three' is not of type 'integer'"),
    ("driver: k8s\n", "1:1: driver: 'k8s' is not one of ['postgres', 'velero']"),
    ("source:\n  mode: snapshot\n", "2:3: source.mode: 'snapshot' is not one of ['live', 'replica_paused', 'rds_snapshot']"),
    ("storage:\n  url: /srv/exports\n", "2:3: storage.url: '/srv/exports' does not match"),
    ("profiles:\n  preview:\n    ttl_hours: 100\n", "3:5: profiles.preview.ttl_hours: 100 is more than max_ttl_hours (72)"),
    ("profiles: {}\n", "1:1: profiles: {} should be non-empty"),
    ("source:\n  jobs: 2\n  jobs: 3\n", "3:3: 'jobs' appears twice in one mapping; keep one"),
    ("source: {jobs: 2\n", "1:9: malformed YAML: this '{' is not closed"),
]


@pytest.mark.parametrize(("text", "says"), BAD, ids=[b[1].split(": ")[1] for b in BAD])
def test_bad_configs_are_refused_at_file_line_col(tmp_path, text, says):
    path = _write(tmp_path, text)
    with pytest.raises(ProdcloneError) as exc:
        load_config(path)
    assert f"{path}:{says}" in str(exc.value)


def test_a_bad_storage_url_override_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PRODCLONE_STORAGE_URL", "exports")
    with pytest.raises(ProdcloneError, match=r"\$PRODCLONE_STORAGE_URL must start with file:/// or s3://"):
        load_config(_write(tmp_path, ""))
    monkeypatch.setenv("PRODCLONE_STORAGE_URL", "s3://bucket/prefix")
    assert load_config(_write(tmp_path, "storage: {url: 'file:///srv/x'}\n")).storage_url == "s3://bucket/prefix"


def test_prodclone_config_check(tmp_path, capsys):
    assert main(["config", "check", "--config", str(SHIPPED)]) == 0
    assert "config ok: driver postgres, profiles preview, loadtest" in capsys.readouterr().out
    bad = _write(tmp_path, "clones:\n  keep_snapshot: 3\n")
    assert main(["config", "check", "--config", str(bad)]) == 1
    assert f"{bad}:2:3: clones.keep_snapshot: unknown key 'keep_snapshot' (did you mean 'keep_snapshots'?)" \
        in capsys.readouterr().err


def _documented_defaults() -> dict[str, str]:
    """`key` -> the first `value` in its row of docs/configuration.md's table ("" for an empty cell)."""
    rows = re.findall(r"^\| `([a-z_.]+)` \| (?:`([^`]*)`)?", (ROOT / "docs" / "configuration.md").read_text(), re.M)
    return dict(rows)


def test_docs_list_every_key_with_its_default():
    documented = _documented_defaults()
    text = (ROOT / "docs" / "configuration.md").read_text()
    for section, spec in json_schema()["properties"].items():
        if section in ("profiles", "velero"):  # summarised in one row each
            assert f"`{section}." in text
            continue
        for name, leaf in (spec.get("properties") or {section: spec}).items():
            dotted = f"{section}.{name}" if "properties" in spec else section
            if dotted == "source.rds":
                continue
            assert f"| `{dotted}` |" in text, f"docs/configuration.md lacks a row for {dotted}"
            if "default" in leaf:
                shown = leaf["default"] if isinstance(leaf["default"], str) else json.dumps(leaf["default"])
                assert documented.get(dotted) == shown, dotted
