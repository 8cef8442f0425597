# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""preload: nothing, loaded early. Documentation: preload.yml beside this file."""

from __future__ import annotations


def preload(_value=None) -> str:
    """An empty string, whatever it is given."""
    return ""


class FilterModule:
    def filters(self):
        return {"preload": preload}
