# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writing the stack's files and their directories (private to this collection): the stack_files module's core,
which compose_rollout also runs before it acts, so that a deploy checks a host's files and containers in one
round trip.

A file is secret unless marked otherwise: its content never appears in the module's output, its log line or a
diff. A file that is not secret gets a diff in diff mode.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import stat
import tempfile

OWNER = dict(type="raw", default="root")
DIRECTORY_OPTIONS = dict(
    path=dict(type="path", required=True),
    mode=dict(type="str", required=True),
    owner=OWNER,
    group=dict(OWNER),
)
FILE_OPTIONS = dict(
    path=dict(type="path", required=True),
    # Every content is kept out of the module's log line; those of files that are not secret are shown again in
    # the output and diffs (reveal_non_secrets).
    content=dict(type="str", required=True, no_log=True),
    mode=dict(type="str", required=True),
    owner=OWNER,
    group=dict(OWNER),
    secret=dict(type="bool", default=True),
    validate=dict(type="str"),
    # The stack's markers: the service a file belongs to, and whether that service reloads it in place.
    service=dict(type="str"),
    reload=dict(type="bool", default=False),
)


UNIT_OPTIONS = dict(
    name=dict(type="str", required=True),
    enabled=dict(type="bool", default=True),
    state=dict(type="str", choices=["started", "stopped"], default="started"),
)
# Unit files: written, they need systemd to read them again before a unit is enabled or started.
SYSTEMD_DIRECTORY = "/etc/systemd/system/"


class FilesError(Exception):
    """A path cannot be made as asked; the message names it and why."""


def reveal_non_secrets(module, files: list[dict]) -> None:
    """Keep only the secret contents hidden in the output: a file that is not secret may be shown and diffed.

    A blank secret (an unset API key) hides nothing, and would only mask every newline of the output.
    """
    secrets = {entry["content"] for entry in files if entry["secret"]}
    shown = {entry["content"] for entry in files if not entry["secret"]} - secrets
    module.no_log_values.difference_update(shown)
    module.no_log_values.difference_update({value for value in module.no_log_values if not str(value).strip()})


def parse_mode(path: str, mode: str) -> int:
    text = str(mode).strip()
    try:
        value = int(text, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o7777:
        raise FilesError(f"{path}: mode must be octal permissions such as 0640, got {mode!r}")
    return value


def parse_id(path: str, value, kind: str) -> int:
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid if kind == "owner" else grp.getgrnam(text).gr_gid
    except KeyError:
        raise FilesError(f"{path}: no {'user' if kind == 'owner' else 'group'} named {text!r} on this host") from None


def attributes(entry: dict) -> tuple[int, int, int]:
    path = entry["path"]
    return (
        parse_mode(path, entry["mode"]),
        parse_id(path, entry["owner"], "owner"),
        parse_id(path, entry["group"], "group"),
    )


def differs(info: os.stat_result, mode: int, uid: int, gid: int) -> bool:
    return stat.S_IMODE(info.st_mode) != mode or info.st_uid != uid or info.st_gid != gid


class Writer:
    """Brings directories and files to what they should be; remembers what changed and, for files that are not
    secret, a diff of each."""

    def __init__(self, module) -> None:
        self.module = module
        self.check_mode = module.check_mode
        self.changed: list[str] = []
        self.diffs: list[dict] = []

    def directory(self, entry: dict) -> bool:
        path = entry["path"]
        mode, uid, gid = attributes(entry)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            if not self.check_mode:
                # Missing parents as mkdir -p makes them (root's, 0755); list a parent to choose its mode.
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                os.mkdir(path, 0o700)
                os.chown(path, uid, gid)
                os.chmod(path, mode)
            return True
        if not stat.S_ISDIR(info.st_mode):
            raise FilesError(f"{path}: exists and is not a directory")
        if differs(info, mode, uid, gid):
            if not self.check_mode:
                os.chown(path, uid, gid)
                os.chmod(path, mode)
            return True
        return False

    def file(self, entry: dict) -> bool:
        path = entry["path"]
        mode, uid, gid = attributes(entry)
        wanted = entry["content"].encode("utf-8")
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            info = None
        if info is not None and not stat.S_ISREG(info.st_mode):
            raise FilesError(f"{path}: exists and is not a regular file")
        before = b""
        if info is not None:
            with open(path, "rb") as handle:
                before = handle.read()
            if before == wanted:
                if not differs(info, mode, uid, gid):
                    return False
                if not self.check_mode:
                    os.chown(path, uid, gid)
                    os.chmod(path, mode)
                return True
        if not entry.get("secret", True):
            self.diffs.append(
                {
                    "before_header": path if info is not None else "(absent)",
                    "after_header": path,
                    "before": before.decode("utf-8", errors="replace"),
                    "after": entry["content"],
                }
            )
        directory = os.path.dirname(path)
        if self.check_mode:
            if entry.get("validate") and os.path.isdir(directory):
                self._validated(entry, wanted, directory, install=False)
            return True
        if not os.path.isdir(directory):
            raise FilesError(f"{path}: its directory {directory} does not exist; list it in directories")
        self._validated(entry, wanted, directory, install=True, owner=(mode, uid, gid))
        return True

    def _validated(self, entry: dict, wanted: bytes, directory: str, install: bool, owner=None) -> None:
        """Write the content beside the file (private while written), validate it, then move it into place."""
        path = entry["path"]
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(wanted)
                handle.flush()
                os.fsync(handle.fileno())
            if entry.get("validate"):
                self.validate(path, entry["validate"], tmp)
            if install:
                mode, uid, gid = owner
                os.chown(tmp, uid, gid)
                os.chmod(tmp, mode)
                # atomic_move gives a file it creates the umask's mode and root's ownership: a tight umask keeps a
                # new secret private until it gets its own (a replaced file keeps the temporary one's).
                umask = os.umask(0o077)
                try:
                    self.module.atomic_move(tmp, path, keep_dest_attrs=False)
                finally:
                    os.umask(umask)
                os.chown(path, uid, gid)
                os.chmod(path, mode)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def validate(self, path: str, command: str, candidate: str) -> None:
        if "%s" not in command:
            raise FilesError(f"{path}: validate must hold %s where the new file's path goes, got {command!r}")
        argv = [part.replace("%s", candidate) for part in shlex.split(command)]
        rc, out, err = self.module.run_command(argv)
        if rc != 0:
            raise FilesError(
                f"{path}: the new content does not pass {command!r} (exit {rc}), the file is left as it was: "
                f"{(err or out).strip()[-1500:]}"
            )

    def remove(self, paths: list[str]) -> list[str]:
        """The paths that must not exist (a directory with what it holds); returns those removed."""
        removed = []
        for path in paths:
            if not os.path.isabs(path) or os.path.normpath(path) in ("/", "/etc", "/var", "/opt", "/usr", "/root"):
                raise FilesError(f"{path}: only an absolute path of its own can be removed")
            if not os.path.lexists(path):
                continue
            if not self.check_mode:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            removed.append(path)
        self.changed += removed
        return removed

    def units(self, units: list[dict]) -> list[str]:
        """Each systemd unit enabled (or not) and started (or stopped), systemd reloaded first when a unit file was
        written; returns the units acted on."""
        if not units:
            return []
        if any(path.startswith(SYSTEMD_DIRECTORY) for path in self.changed) and not self.check_mode:
            self.systemctl("daemon-reload")
        acted = []
        for unit in units:
            name = unit["name"]
            enabled = self.systemctl("is-enabled", name, check=False) == "enabled"
            active = self.systemctl("is-active", name, check=False) == "active"
            wanted_active = unit["state"] == "started"
            actions = []
            if enabled != unit["enabled"]:
                actions.append("enable" if unit["enabled"] else "disable")
            if active != wanted_active:
                actions.append("start" if wanted_active else "stop")
            if actions:
                acted.append(f"{name} - {', '.join(actions)}")
                if not self.check_mode:
                    for action in actions:
                        self.systemctl(action, name)
        self.changed += acted
        return acted

    def packages(self, names: list[str]) -> list[str]:
        """The Debian packages the files and units need, installed when missing (apt-get; the package lists are
        refreshed once when the install fails on them); returns the missing ones."""
        if not names:
            return []
        _rc, out, _err = self.module.run_command(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *names])
        installed = {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}
        missing = sorted(set(names) - installed)
        if missing and not self.check_mode:
            apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]
            environment = {"DEBIAN_FRONTEND": "noninteractive"}
            # What they recommend (fonts, documentation, ICU for certbot; FUSE for restic) no deploy uses.
            install = [*apt, "install", "--yes", "--no-install-recommends", *missing]
            rc, out, err = self.module.run_command(install, environ_update=environment)
            if rc != 0:
                # Lists older than the archive, or none yet.
                self.module.run_command([*apt, "update"], environ_update=environment)
                rc, out, err = self.module.run_command(install, environ_update=environment)
            if rc != 0:
                raise FilesError(f"installing {', '.join(missing)} failed (exit {rc}): {(err or out).strip()[-800:]}")
        self.changed += [f"package {name}" for name in missing]
        return missing

    def commands(self, commands: list[list[str]]) -> list[dict]:
        """Each command run (not in check mode), in order, once the files and units are: changed unless it printed
        `ok`. Returns each one's argv and output."""
        ran = []
        for argv in [] if self.check_mode else commands:
            rc, out, err = self.module.run_command(argv)
            if rc != 0:
                raise FilesError(f"{' '.join(argv)} failed (exit {rc}): {(err or out).strip()[-800:]}")
            ran.append({"argv": argv, "stdout": out.strip()})
            if out.strip() != "ok":
                self.changed.append(f"{' '.join(argv)} - {out.strip()}")
        return ran

    def systemctl(self, *args: str, check: bool = True) -> str:
        rc, out, err = self.module.run_command(["systemctl", *args])
        if check and rc != 0:
            raise FilesError(f"systemctl {' '.join(args)} failed (exit {rc}): {(err or out).strip()}")
        return out.strip()

    def apply(self, directories: list[dict], files: list[dict]) -> list[str]:
        """Every path made as asked; returns those that changed (would change, in check mode)."""
        for entry in (*directories, *files):
            if not os.path.isabs(entry["path"]):
                raise FilesError(f"{entry['path']}: must be an absolute path")
        # Two roles may ask for the same path alike (a directory both need); asked for differently, it is refused.
        seen: dict[str, dict] = {}
        unique: dict[str, list] = {"directories": [], "files": []}
        for kind, entries in (("directories", directories), ("files", files)):
            for entry in entries:
                if entry["path"] in seen:
                    if seen[entry["path"]] != entry:
                        raise FilesError(f"{entry['path']}: listed twice, differently")
                    continue
                seen[entry["path"]] = entry
                unique[kind].append(entry)
        changed = [entry["path"] for entry in unique["directories"] if self.directory(entry)]
        changed += [entry["path"] for entry in unique["files"] if self.file(entry)]
        self.changed += changed
        return changed
