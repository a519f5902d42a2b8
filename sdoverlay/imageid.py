"""Which image this boot runs: what a persistent overlay is tied to.

A persistent overlay (persist, unlock --hotfix) is made over one /usr. An
upgrade boots another (ostree deploys a new commit, carrying /etc over by
its 3-way merge and sharing /var), and yesterday's hotfix of a library
would shadow today's without a word. So its drop-in records the image it
was made on (Image=), and the generator mounts it only on that image.

Read by the generator on the boot path: the standard library only.
"""

from __future__ import annotations

import os

OSTREE_BOOTED = "/run/ostree-booted"  # left by ostree-prepare-root
OSTREE_DEPLOY = "/sysroot/ostree/deploy"
# The image's own os-release, never /etc's, which the admin may change.
OS_RELEASE = "/usr/lib/os-release"
# os-release(5): the fields that name an image and its version.
IMAGE_KEYS = ("IMAGE_ID", "IMAGE_VERSION", "BUILD_ID")


def current() -> str:
    """This boot's image: "ostree:COMMIT" on an ostree deployment, else
    "os-release:IMAGE_ID=... IMAGE_VERSION=... BUILD_ID=..." (those the image
    sets); "" where neither says anything (then nothing is ever stale)."""
    commit = _booted_ostree_commit()
    if commit:
        return f"ostree:{commit}"
    fields = _image_fields()
    return "os-release:" + " ".join(f"{key}={fields[key]}" for key in IMAGE_KEYS if fields.get(key)) if fields else ""


def _booted_ostree_commit() -> str | None:
    """The commit of the deployment that is / (a deployment dir is COMMIT.SERIAL;
    the booted one is the same dir as /, as ostree itself finds it)."""
    if not os.path.exists(OSTREE_BOOTED):
        return None
    try:
        root = os.stat("/")
        stateroots = os.listdir(OSTREE_DEPLOY)
    except OSError:
        return None
    for stateroot in stateroots:
        deploy = f"{OSTREE_DEPLOY}/{stateroot}/deploy"
        try:
            entries = os.listdir(deploy)
        except OSError:
            continue
        for entry in entries:
            if entry.endswith(".origin"):
                continue
            try:
                info = os.stat(f"{deploy}/{entry}")
            except OSError:
                continue
            if (info.st_dev, info.st_ino) == (root.st_dev, root.st_ino):
                return entry.partition(".")[0]
    return None


def _image_fields() -> dict[str, str]:
    try:
        with open(OS_RELEASE, encoding="utf-8") as file:
            text = file.read()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        key, equals, value = line.strip().partition("=")
        if equals and key in IMAGE_KEYS:
            found[key] = value.strip().strip("\"'")
    return {key: value for key, value in found.items() if value}


def describe(image: str) -> str:
    """IMAGE as a person reads it: "ostree commit 3f2a1b0c9d8e", "IMAGE_VERSION=41"."""
    kind, _, value = image.partition(":")
    if kind == "ostree":
        return f"ostree commit {value[:12]}"
    return value or "an unknown image"
