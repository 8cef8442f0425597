# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The attributes the pliers.deploy modules share (private to this collection; other collections should not
extend these fragments)."""

from __future__ import annotations


class ModuleDocFragment:
    # Every module: what check_mode and diff_mode mean. Each module says its own support (full, partial, none or
    # N/A) under attributes, and details when it needs them.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying the target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in C(check_mode)), when in
      diff mode.
"""

    # Every module in meta/runtime.yml's action group. A module that joined the group after its own
    # version_added says when, under attributes: action_group: version_added.
    ACTIONGROUP_DEPLOY = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/pliers.deploy.deploy) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - pliers.deploy.deploy
"""

    # A module with an action plugin of the same name. The module says its support and what runs on the controller.
    ACTION = r"""
options: {}
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on
      the controller.
"""
