"""Every base image of the Dockerfile is pinned by digest, or the README names it as not pinned."""

from __future__ import annotations

import re

from tests.support.env import REPO_ROOT


def test_every_base_image_is_pinned_by_digest_or_listed_in_the_readme() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    images = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert len(images) >= 2
    readme = (REPO_ROOT / "README.md").read_text()
    (listed,) = re.findall(r"^- Base images not pinned by digest: (.*)$", readme, re.M)
    unpinned = set(re.findall(r"`([^`]+)`", listed.split(". ", 1)[0]))
    for image in images:
        if "@sha256:" in image:
            assert re.fullmatch(r"\S+@sha256:[0-9a-f]{64}", image), image
        else:
            assert image in unpinned, f"{image} is neither pinned by digest nor listed in the README"
    # And the README lists no image the Dockerfile no longer uses unpinned.
    assert unpinned <= set(images)
