"""`prodclone rules scaffold --output`: a mistake never costs the data engineer their rules file."""

import os
import stat

import psycopg
import pytest
from psycopg import sql

from prodclone.cli import main
from prodclone.db import dbname_of, with_dbname

OLD = "# hand-edited rules that must survive a failed scaffold\nversion: 1\ntables: {}\n"


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(OLD)
    path.chmod(0o640)
    return path


def _only_rules_left(path):
    assert path.read_text() == OLD
    assert [p.name for p in path.parent.iterdir()] == ["rules.yaml"]  # no temporary file left behind


def test_output_replaces_the_file_with_a_complete_draft_and_keeps_its_mode(sample_source, rules_file, capsys):
    src, counts = sample_source
    assert main(["rules", "scaffold", "--source", src, "--output", str(rules_file)]) == 0
    assert capsys.readouterr().out == ""  # nothing on stdout: the file holds the rules
    assert stat.S_IMODE(rules_file.stat().st_mode) == 0o640
    assert main(["rules", "check", "--source", src, "--rules", str(rules_file)]) == 0
    assert all(f"  public.{t}:" in rules_file.read_text() for t in counts)


def test_an_unreachable_source_leaves_the_file_as_it_was(pg, rules_file, capsys):
    typo = with_dbname(pg, "prodclone_no_such_database")
    assert main(["rules", "scaffold", "--source", typo, "--output", str(rules_file)]) == 1
    assert "cannot connect to the source database" in capsys.readouterr().err
    _only_rules_left(rules_file)


def test_an_empty_source_is_refused_before_connecting(rules_file, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["rules", "scaffold", "--source", "", "--output", str(rules_file)])
    assert exit_.value.code == 2
    assert "--source: is empty" in capsys.readouterr().err
    _only_rules_left(rules_file)


def test_a_database_without_tables_is_an_error(pg, new_db, rules_file, capsys):
    empty = new_db("pct_empty")
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname_of(empty))))
    assert main(["rules", "scaffold", "--source", empty, "--output", str(rules_file)]) == 1
    err = capsys.readouterr().err
    assert "no tables found" in err and "nothing was written" in err
    _only_rules_left(rules_file)
    # Without --output nothing reaches stdout either, so `> rules.yaml` at least gets no half-truth.
    assert main(["rules", "scaffold", "--source", empty]) == 1
    assert capsys.readouterr().out == ""


def test_a_missing_output_directory_is_refused(sample_source, tmp_path, capsys):
    target = tmp_path / "no-such-dir" / "rules.yaml"
    assert main(["rules", "scaffold", "--source", sample_source[0], "--output", str(target)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not os.path.exists(target.parent)
