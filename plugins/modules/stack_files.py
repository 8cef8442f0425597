#!/usr/bin/python
# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: stack_files
short_description: Write a role's configuration and secret files, and their directories, in one round trip
version_added: 0.2.0
description:
  - Ensures each directory in O(directories) exists with its mode and owner, then each file in O(files) holds
    exactly its content, mode and owner; in one module run, where C(ansible.builtin.file), C(copy) and
    C(template) take one or two runs per path.
  - A file is replaced atomically (a temporary file in the same directory, then renamed), so a reader never sees
    half a file.
  - File contents are never logged; nor are they returned.
  - Reports C(changed) when a directory or file was created, or its content, mode or owner changed.
author:
  - Pliers team (@pliers)
attributes:
  check_mode:
    support: full
    description: Reports which paths would change; writes nothing.
  diff_mode:
    support: none
    description: Reports no diff (contents are often secrets); RV(updated) names what changed.
options:
  directories:
    description: Directories to ensure, in order; missing parents are created as C(mkdir -p) would (list a parent
      before its children to choose its mode and owner).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path of the directory.
        type: path
        required: true
      mode:
        description: Its permissions, in octal (V("0700")).
        type: str
        required: true
      owner:
        description: Its owner, a user name or a numeric id.
        type: raw
        default: root
      group:
        description: Its group, a group name or a numeric id.
        type: raw
        default: root
  files:
    description: Files to write, in order. Their directories must exist or be listed in O(directories).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path of the file.
        type: path
        required: true
      content:
        description: What the file holds, exactly (text, written as UTF-8). Never logged.
        type: str
        required: true
      mode:
        description: Its permissions, in octal (V("0400")).
        type: str
        required: true
      owner:
        description: Its owner, a user name or a numeric id (the user a container runs as).
        type: raw
        default: root
      group:
        description: Its group, a group name or a numeric id.
        type: raw
        default: root
"""

EXAMPLES = r"""
- name: Write the api's secret files, readable by the image's user only
  pliers.deploy.stack_files:
    directories:
      - {path: /opt/pliers/production/secrets/api, mode: "0700"}
    files:
      - {path: /opt/pliers/production/secrets/api/database_password, content: "{{ vault_postgres_password }}",
         mode: "0400", owner: "10001", group: "10001"}
  no_log: true
"""

RETURN = r"""
updated:
  description: The directories and files created or changed (or that would be, in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [/opt/pliers/production/secrets/api/database_password]
"""

import grp
import os
import pwd
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule


class FilesError(Exception):
    """A path cannot be made as asked; the message names it and why."""


def parse_mode(path: str, mode: str) -> int:
    text = str(mode).strip()
    try:
        value = int(text, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o7777:
        raise FilesError(f"{path}: mode must be octal permissions such as 0640, got {mode!r}")
    return value


def parse_id(path: str, value: str, kind: str) -> int:
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


def ensure_directory(entry: dict, check_mode: bool) -> bool:
    path = entry["path"]
    mode, uid, gid = attributes(entry)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if not check_mode:
            # Missing parents as mkdir -p makes them (root's, 0755); list a parent to choose its mode.
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            os.mkdir(path, 0o700)
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        return True
    if not stat.S_ISDIR(info.st_mode):
        raise FilesError(f"{path}: exists and is not a directory")
    if differs(info, mode, uid, gid):
        if not check_mode:
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        return True
    return False


def ensure_file(entry: dict, check_mode: bool) -> bool:
    path = entry["path"]
    mode, uid, gid = attributes(entry)
    wanted = entry["content"].encode("utf-8")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise FilesError(f"{path}: exists and is not a regular file")
    if info is not None:
        with open(path, "rb") as handle:
            same_content = handle.read() == wanted
        if same_content and not differs(info, mode, uid, gid):
            return False
        if same_content:
            if not check_mode:
                os.chown(path, uid, gid)
                os.chmod(path, mode)
            return True
    if check_mode:
        return True
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise FilesError(f"{path}: its directory {directory} does not exist; list it in directories")
    # Private while written, then given its owner and mode, then renamed over the old file.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(wanted)
            handle.flush()
            os.fsync(handle.fileno())
        os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def apply(directories: list[dict], files: list[dict], check_mode: bool) -> list[str]:
    """Every path made as asked; returns those that changed (would change, in check mode)."""
    for entry in (*directories, *files):
        if not os.path.isabs(entry["path"]):
            raise FilesError(f"{entry['path']}: must be an absolute path")
    seen: set[str] = set()
    for entry in (*directories, *files):
        if entry["path"] in seen:
            raise FilesError(f"{entry['path']}: listed twice")
        seen.add(entry["path"])
    changed = [entry["path"] for entry in directories if ensure_directory(entry, check_mode)]
    changed += [entry["path"] for entry in files if ensure_file(entry, check_mode)]
    return changed


def main() -> None:
    owner = dict(type="raw", default="root")
    argument_spec = dict(
        directories=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                path=dict(type="path", required=True),
                mode=dict(type="str", required=True),
                owner=owner,
                group=dict(owner),
            ),
        ),  # fmt: skip
        files=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                path=dict(type="path", required=True),
                content=dict(type="str", required=True, no_log=True),
                mode=dict(type="str", required=True),
                owner=owner,
                group=dict(owner),
            ),
        ),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        changed = apply(module.params["directories"], module.params["files"], module.check_mode)
    except (FilesError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=bool(changed), updated=changed)


if __name__ == "__main__":
    main()
