"""Image tags follow their inputs: a changed file, argument or base gives a new tag; nothing else does."""

from __future__ import annotations

import shutil

import yaml

from lab import images
from lab.images import Builder, Image, catalogue

from ..paths import ROOT


def builder_for(image: Image, base_tag: str = "base:1") -> Builder:
    builder = Builder([image])
    builder.tags = {image.base: base_tag}
    return builder


def test_tag_changes_with_the_build_context_the_arguments_and_the_base(tmp_path):
    context = tmp_path / "ctx"
    shutil.copytree(images.IMAGES_DIR / "redis", context)
    image = Image("redis", context, "bookworm")
    first = builder_for(image).tag_of(image)
    assert builder_for(image).tag_of(image) == first, "the same inputs must give the same tag"
    assert builder_for(image, "base:2").tag_of(image) != first
    with_args = Image("redis", context, "bookworm", args={"APP_VERSION": "1.0.0"})
    assert builder_for(with_args).tag_of(with_args) != first
    (context / "docker-entrypoint.sh").write_text('#!/bin/sh\nexec "$@"\n')
    assert builder_for(image).tag_of(image) != first
    (context / "docker-entrypoint.sh").chmod(0o644)
    before_mode = builder_for(image).tag_of(image)
    (context / "docker-entrypoint.sh").chmod(0o755)
    assert builder_for(image).tag_of(image) != before_mode


def test_catalogue_bases_come_first_and_names_are_unique():
    known = {"bookworm", "trixie"}
    keys = []
    for image in catalogue():
        assert image.base in known, f"{image.key} is built on {image.base}, which comes later or not at all"
        known.add(image.key)
        keys.append(image.key)
    assert len(keys) == len(set(keys))
    pushed = [name for image in catalogue() for name in image.pushed_as]
    assert len(pushed) == len(set(pushed))


def test_a_plain_builder_leaves_the_on_demand_images_out_and_none_of_its_images_needs_one():
    on_demand = {image.key for image in catalogue() if image.on_demand}
    assert "python3.14" in on_demand
    default = Builder().images
    assert not on_demand & {image.key for image in default}
    assert not on_demand & {image.base for image in default}
    assert not [image.key for image in catalogue() if image.on_demand and image.pushed_as]


# The images the lab's inventories (local, local-swarm) do not deploy, each with the setting of theirs that leaves
# it out (the test checks they hold it).
NOT_IN_THE_LAB = {
    "traefik_image": ("pliers_edge", "nginx"),
    "monitoring_grafana_image": ("monitoring_grafana_enabled", False),
    "monitoring_loki_image": ("monitoring_logs_enabled", False),
    "monitoring_alloy_image": ("monitoring_logs_enabled", False),
}
REGISTRY = "{{ pliers_registry }}/"


def role_images() -> dict[str, str]:
    """Each role default `*_image` pulled from the registry, by variable: its name in the registry (pliers/x:tag)."""
    found = {}
    for defaults in sorted(ROOT.glob("roles/*/defaults/main.yml")):
        for variable, value in (yaml.safe_load(defaults.read_text()) or {}).items():
            if variable.endswith("_image") and isinstance(value, str) and value.startswith(REGISTRY):
                found[variable] = value.removeprefix(REGISTRY)
    return found


def test_the_registry_holds_every_image_the_lab_inventories_deploy():
    pushed = set(images.reference_names())
    for inventory in ("local", "local-swarm"):
        settings = yaml.safe_load((ROOT / "inventories" / inventory / "group_vars/all/main.yml").read_text())
        for variable, (setting, value) in NOT_IN_THE_LAB.items():
            assert settings[setting] == value, f"{inventory} deploys {variable}: the lab must hold its image"
    deployed = role_images()
    # The app images follow the release (api:{{ api_version }}): every version the lab tests deploy.
    fixed = {name for variable, name in deployed.items() if variable not in NOT_IN_THE_LAB and "{{" not in name}
    assert fixed, f"no image of a fixed tag among the roles' defaults: {deployed}"
    assert fixed - pushed == set(), "images the lab's inventories deploy that the lab registry does not hold"
    for version in images.APP_VERSIONS:
        for repo in ("api", "ai-service", "web"):
            assert f"pliers/{repo}:{version}" in pushed


def test_base_tag_is_stable_and_names_its_suite():
    assert images.base_tag("trixie") == images.base_tag("trixie")
    assert images.base_tag("trixie").startswith("pliers-lab/debian:trixie-")
    assert images.base_tag("trixie") != images.base_tag("bookworm")
