# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""labelled_nodes: the inventory hosts whose docker_host_node_labels give a label a value."""

from __future__ import annotations


def labelled_nodes(hosts: list[str], hostvars, label: str, value: str = "true") -> list[str]:
    """Hosts (in inventory order) whose docker_host_node_labels[label] equals value (compared as text)."""
    found = []
    for host in hosts:
        labels = hostvars[host].get("docker_host_node_labels") or {}
        if str(labels.get(label, "")).lower() == str(value).lower():
            found.append(host)
    return found


class FilterModule:
    def filters(self):
        return {"labelled_nodes": labelled_nodes}
