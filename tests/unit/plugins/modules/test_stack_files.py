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


@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    """dpkg-query answering from tmp_path/installed, and an apt-get that installs by adding to it (or fails its first
    install when the lists are stale, tmp_path/stale); both log their arguments to tmp_path/apt.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dpkg-query").write_text(
        '#!/bin/sh\necho "dpkg-query $*" >> "$FAKE_APT/apt.log"; shift 3\n'
        'for p in "$@"; do grep -qx "$p" "$FAKE_APT/installed" 2>/dev/null && echo "$p installed"; done\n'
        "exit 0\n"
    )
    (bin_dir / "apt-get").write_text(
        '#!/bin/sh\necho "apt-get $* $DEBIAN_FRONTEND" >> "$FAKE_APT/apt.log"\n'
        'case "$3" in update) rm -f "$FAKE_APT/stale"; exit 0 ;; esac\n'
        '[ ! -e "$FAKE_APT/stale" ] || { echo "E: Unable to locate package" >&2; exit 100; }\n'
        'shift 5; for p in "$@"; do echo "$p" >> "$FAKE_APT/installed"; done\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APT", str(tmp_path))
    return tmp_path / "apt.log"


def test_missing_packages_are_installed_and_installed_ones_cost_one_query(tmp_path, fake_apt):
    (tmp_path / "installed").write_text("openssl\n")
    first = write(tmp_path, packages=["openssl", "certbot"])
    assert (first["changed"], first["updated"]) == (True, ["package certbot"])
    assert (
        "apt-get -o DPkg::Lock::Timeout=300 install --yes --no-install-recommends certbot noninteractive"
        in fake_apt.read_text()
    )
    fake_apt.unlink()
    second = write(tmp_path, packages=["openssl", "certbot"])
    assert (second["changed"], second["updated"]) == (False, [])
    log = fake_apt.read_text()
    assert log.startswith("dpkg-query -W -f ${Package}") and log.count("dpkg-query") == 1 and "apt-get" not in log


def test_stale_package_lists_are_refreshed_once_and_check_mode_installs_nothing(tmp_path, fake_apt):
    (tmp_path / "stale").touch()
    assert write(tmp_path, packages=["age"], check_mode=True)["updated"] == ["package age"]
    assert "apt-get" not in fake_apt.read_text()
    assert write(tmp_path, packages=["age"])["updated"] == ["package age"]
    assert [line.split()[3] for line in fake_apt.read_text().splitlines() if line.startswith("apt-get")] == [
        "install", "update", "install"
    ]  # fmt: skip
    assert (tmp_path / "installed").read_text() == "age\n"


def test_a_package_that_cannot_be_installed_fails_naming_it(tmp_path, fake_apt):
    (tmp_path / "bin" / "apt-get").write_text('#!/bin/sh\necho "E: Unable to locate package nosuch" >&2; exit 100\n')
    result = write(tmp_path, packages=["nosuch"])
    assert result["failed"] is True
    assert result["msg"] == "installing nosuch failed (exit 100): E: Unable to locate package nosuch"


def test_commands_run_after_the_files_and_report_a_change_unless_they_print_ok(tmp_path):
    target = tmp_path / "state"
    said = ["sh", "-c", f"test -s {target} && echo ok || {{ echo written > {target}; echo installed; }}"]
    wanted = {"files": [file(tmp_path / "config", "x", "0644")], "commands": [said]}
    assert write(tmp_path, check_mode=True, **wanted)["commands"] == []
    assert not target.exists(), "check mode runs no command"
    first = write(tmp_path, **wanted)
    assert first["commands"] == [{"argv": said, "stdout": "installed"}]
    assert first["updated"] == [str(tmp_path / "config"), f"{' '.join(said)} - installed"]
    second = write(tmp_path, **wanted)
    assert (second["changed"], second["commands"]) == (False, [{"argv": said, "stdout": "ok"}])


def test_a_failing_command_fails_naming_it(tmp_path):
    result = write(tmp_path, commands=[["sh", "-c", "echo no certificate >&2; exit 3"]])
    assert result["failed"] is True
    assert result["msg"] == "sh -c echo no certificate >&2; exit 3 failed (exit 3): no certificate"
