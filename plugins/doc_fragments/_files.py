# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stack's directories and files, as the stack_files and compose_rollout modules take them (private to this
collection). Two literal copies: ansible-test reads a fragment's text without running Python."""

from __future__ import annotations


class ModuleDocFragment:
    # stack_files: the directories and files to write, as its options.
    DOCUMENTATION = r"""
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
    description: Files to write, in order. Their directories must exist or be listed in the directories.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path of the file.
        type: path
        required: true
      content:
        description: What the file holds, exactly (text, written as UTF-8). Never logged; shown in the output and
          diffs only when C(secret=false).
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
      secret:
        description: Whether the content is secret (never shown); V(false) for a configuration that may be diffed.
        type: bool
        default: true
      validate:
        description: A command that must accept the new content before it replaces the file, with C(%s) where the
          path of a temporary copy goes (as in M(ansible.builtin.copy)).
        type: str
      service:
        description: The stack's service the file belongs to (accepted from the stack's plan; unused here).
        type: str
      reload:
        description: Whether that service reloads the file in place (accepted from the stack's plan; unused here).
        type: bool
        default: false
"""

    # compose_rollout: the same, inside its write option.
    WRITE = r"""
options:
  write:
    description: Directories and files to bring to their content first (a file is secret unless
      C(secret=false)). The project file may be among them, with a C(validate) command; a file whose
      C(service) is O(edge) and C(reload=true) is reloaded in the edge when it changes.
    type: dict
    default: {}
    version_added: 0.2.0
    suboptions:
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
        description: Files to write, in order. Their directories must exist or be listed in the directories.
        type: list
        elements: dict
        default: []
        suboptions:
          path:
            description: Absolute path of the file.
            type: path
            required: true
          content:
            description: What the file holds, exactly (text, written as UTF-8). Never logged; shown in the output and
              diffs only when C(secret=false).
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
          secret:
            description: Whether the content is secret (never shown); V(false) for a configuration that may be diffed.
            type: bool
            default: true
          validate:
            description: A command that must accept the new content before it replaces the file, with C(%s) where the
              path of a temporary copy goes (as in M(ansible.builtin.copy)).
            type: str
          service:
            description: The stack's service the file belongs to (accepted from the stack's plan; unused here).
            type: str
          reload:
            description: Whether that service reloads the file in place (accepted from the stack's plan; unused here).
            type: bool
            default: false
"""
