"""Image tags follow their inputs: a changed file, argument or base gives a new tag; nothing else does."""

from __future__ import annotations

import shutil

from lab import images
from lab.images import Builder, Image, catalogue


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


def test_the_registry_holds_every_service_and_app_version():
    pushed = set(images.reference_names())
    for name in (
        "postgres:15",
        "redis:7.0",
        "nginx:1.22",
        "prometheus:2.42",
        "alertmanager:0.25",
        "node-exporter:1.5",
        "postgres-exporter:0.11",
        "redis-exporter:1.45",
    ):
        assert f"pliers/{name}" in pushed
    for version in images.APP_VERSIONS:
        for repo in ("api", "ai-service", "web"):
            assert f"pliers/{repo}:{version}" in pushed


def test_base_tag_is_stable_and_names_its_suite():
    assert images.base_tag("trixie") == images.base_tag("trixie")
    assert images.base_tag("trixie").startswith("pliers-lab/debian:trixie-")
    assert images.base_tag("trixie") != images.base_tag("bookworm")
