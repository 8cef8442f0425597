"""stack_files run as Ansible runs it, on a real directory tree (as this user: owner and group are its own ids)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from .process import run

ME = {"owner": str(os.getuid()), "group": str(os.getgid())}


def directory(path, mode="0700"):
    return {"path": str(path), "mode": mode, **ME}


def file(path, content, mode="0400", **extra):
    return {"path": str(path), "content": content, "mode": mode, **ME, **extra}


def write(tmp_path, directories=(), files=(), **options) -> dict:
    return run("stack_files", tmp_path, directories=list(directories), files=list(files), **options)


def test_it_creates_then_changes_nothing(tmp_path):
    secrets = tmp_path / "secrets"
    wanted = {"directories": [directory(secrets)],
              "files": [file(secrets / "password", "s3cret"), file(secrets / "key", "k\n", "0440")]}  # fmt: skip
    first = write(tmp_path, **wanted)
    assert first["changed"] is True
    assert first["updated"] == [str(secrets), str(secrets / "password"), str(secrets / "key")]
    assert (secrets / "password").read_text() == "s3cret"
    assert stat.S_IMODE((secrets / "password").stat().st_mode) == 0o400
    assert stat.S_IMODE((secrets / "key").stat().st_mode) == 0o440
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    second = write(tmp_path, **wanted)
    assert (second["changed"], second["updated"]) == (False, [])
    assert sorted(p.name for p in secrets.iterdir()) == ["key", "password"], "no temporary file is left behind"


def test_a_changed_content_or_mode_is_rewritten_and_named(tmp_path):
    target = tmp_path / "app.conf"
    write(tmp_path, files=[file(target, "a = 1\n", "0644")])
    assert write(tmp_path, files=[file(target, "a = 2\n", "0644")])["updated"] == [str(target)]
    assert target.read_text() == "a = 2\n"
    assert write(tmp_path, files=[file(target, "a = 2\n", "0600")])["updated"] == [str(target)]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_check_mode_names_what_would_change_and_writes_nothing(tmp_path):
    target = tmp_path / "new" / "file"
    result = write(tmp_path, [directory(tmp_path / "new")], [file(target, "content")], check_mode=True)
    assert result["updated"] == [str(tmp_path / "new"), str(target)]
    assert not (tmp_path / "new").exists()


def test_a_secret_never_appears_in_the_output_or_a_diff_but_a_configuration_is_diffed(tmp_path):
    (tmp_path / "app.conf").write_text("level = info\n")
    files = [file(tmp_path / "app.conf", "level = debug\n", "0644", secret=False),
             file(tmp_path / "password", "hunter2-hunter2")]  # fmt: skip
    result = write(tmp_path, files=files, diff=True)
    shown = json.dumps(result)
    assert "hunter2-hunter2" not in shown, "a secret is never shown"
    assert result["diff"] == [{"before_header": str(tmp_path / "app.conf"), "after_header": str(tmp_path / "app.conf"),
                               "before": "level = info\n", "after": "level = debug\n"}]  # fmt: skip


def test_a_file_that_fails_its_validation_is_left_as_it_was(tmp_path):
    target = tmp_path / "app.conf"
    target.write_text("good\n")
    result = write(tmp_path, files=[file(target, "bad\n", "0644", secret=False, validate="grep -q good %s")])
    assert result["failed"] is True
    assert "does not pass 'grep -q good %s' (exit 1), the file is left as it was" in result["msg"]
    assert target.read_text() == "good\n"
    assert write(tmp_path, files=[file(target, "good, again\n", "0644", validate="grep -q good %s")])["changed"]


@pytest.mark.parametrize(
    ("directories", "files", "message"),
    [
        ([], [file("relative/file", "content")], "relative/file: must be an absolute path"),
        ([], [{**file("/tmp/x", "content"), "mode": "rw-r--r--"}], "/tmp/x: mode must be octal permissions"),
        ([], [{**file("/tmp/x", "content"), "owner": "no-such-user"}], "/tmp/x: no user named 'no-such-user'"),
        ([], [file("/tmp/x", "aaaa"), file("/tmp/x", "bbbb")], "/tmp/x: listed twice, differently"),
    ],
)
def test_bad_input_fails_naming_the_path(tmp_path, directories, files, message):
    result = write(tmp_path, directories, files)
    assert result["failed"] is True and message in result["msg"]


def test_a_missing_directory_or_a_directory_in_the_way_fails_naming_it(tmp_path):
    assert "/missing does not exist" in write(tmp_path, files=[file(tmp_path / "missing" / "file", "content")])["msg"]
    (tmp_path / "taken").mkdir()
    taken = write(tmp_path, files=[file(tmp_path / "taken", "content")])
    assert "taken: exists and is not a regular file" in taken["msg"]
    (tmp_path / "plain").write_text("")
    assert "plain: exists and is not a directory" in write(tmp_path, [directory(tmp_path / "plain")])["msg"]
