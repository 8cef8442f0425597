"""stack_files on a real directory tree (as this user: owner and group are its own ids)."""

from __future__ import annotations

import os
import stat

import pytest
from ansible_collections.pliers.deploy.plugins.modules import stack_files

ME = {"owner": str(os.getuid()), "group": str(os.getgid())}


def directory(path, mode="0700"):
    return {"path": str(path), "mode": mode, **ME}


def file(path, content, mode="0400"):
    return {"path": str(path), "content": content, "mode": mode, **ME}


def test_it_creates_then_changes_nothing(tmp_path):
    secrets = tmp_path / "secrets"
    wanted = ([directory(secrets)], [file(secrets / "password", "s3cret"), file(secrets / "key", "k\n", "0440")])
    assert stack_files.apply(*wanted, check_mode=False) == [
        str(secrets),
        str(secrets / "password"),
        str(secrets / "key"),
    ]
    assert (secrets / "password").read_text() == "s3cret"
    assert stat.S_IMODE((secrets / "key").stat().st_mode) == 0o440
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    assert stack_files.apply(*wanted, check_mode=False) == []
    assert sorted(p.name for p in secrets.iterdir()) == ["key", "password"], "no temporary file is left behind"


def test_a_changed_content_or_mode_is_rewritten_and_named(tmp_path):
    target = tmp_path / "app.conf"
    stack_files.apply([], [file(target, "a = 1\n", "0644")], check_mode=False)
    assert stack_files.apply([], [file(target, "a = 2\n", "0644")], check_mode=False) == [str(target)]
    assert target.read_text() == "a = 2\n"
    assert stack_files.apply([], [file(target, "a = 2\n", "0600")], check_mode=False) == [str(target)]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_check_mode_names_what_would_change_and_writes_nothing(tmp_path):
    target = tmp_path / "new" / "file"
    changed = stack_files.apply([directory(tmp_path / "new")], [file(target, "x")], check_mode=True)
    assert changed == [str(tmp_path / "new"), str(target)]
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("directories", "files", "message"),
    [
        ([], [file("relative/file", "x")], "relative/file: must be an absolute path"),
        ([], [{**file("/tmp/x", "x"), "mode": "rw-r--r--"}], "/tmp/x: mode must be octal permissions"),
        ([], [{**file("/tmp/x", "x"), "owner": "no-such-user-here"}], "/tmp/x: no user named 'no-such-user-here'"),
        ([], [file("/tmp/x", "a"), file("/tmp/x", "b")], "/tmp/x: listed twice"),
    ],
)
def test_bad_input_fails_naming_the_path(directories, files, message):
    with pytest.raises(stack_files.FilesError, match=message.replace("(", r"\(")):
        stack_files.apply(directories, files, check_mode=False)


def test_a_missing_directory_or_a_directory_in_the_way_fails_naming_it(tmp_path):
    with pytest.raises(stack_files.FilesError, match="its directory .*/missing does not exist"):
        stack_files.apply([], [file(tmp_path / "missing" / "file", "x")], check_mode=False)
    (tmp_path / "taken").mkdir()
    with pytest.raises(stack_files.FilesError, match="taken: exists and is not a regular file"):
        stack_files.apply([], [file(tmp_path / "taken", "x")], check_mode=False)
    (tmp_path / "plain").write_text("")
    with pytest.raises(stack_files.FilesError, match="plain: exists and is not a directory"):
        stack_files.apply([directory(tmp_path / "plain")], [], check_mode=False)
