"""Flex Template entry point: the image's FLEX_TEMPLATE_PYTHON_PY_FILE (/template/launcher.py).

Google's launcher binary runs `python /template/launcher.py --name=value ...` on the launcher VM with
the template parameters and Dataflow's own options. This file does two things, then runs exactly what
`python -m pipeline` runs (pipeline/__main__.py, from the package installed in the image):

- it makes the workers use this same image: `--sdk_container_image` defaults to DEID_WORKER_IMAGE,
  which templates/build.sh bakes in at build time (an immutable Artifact Registry tag). A value passed
  as a parameter wins. With neither, it stops: Dataflow would otherwise start stock Beam workers that
  lack this package, OpenSlide and OpenCV, and fail far from the cause.
- it refuses the options that would stage packages to be pip-installed when the job starts
  (--setup_file, --requirements_file, --extra_package(s)): everything is installed in the image.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Mapping, Sequence

IMAGE_ENV = "DEID_WORKER_IMAGE"
IMAGE_OPTION = "--sdk_container_image"
# Options that make Beam stage something for workers to pip-install at startup.
REFUSED_OPTIONS = ("--setup_file", "--requirements_file", "--extra_package", "--extra_packages")


def _given(argv: Sequence[str], option: str) -> bool:
    return any(arg == option or arg.startswith(option + "=") for arg in argv)


def launch_args(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The arguments `python -m pipeline` receives; SystemExit with a message when they are unusable."""
    refused = [option for option in REFUSED_OPTIONS if _given(argv, option)]
    if refused:
        raise SystemExit(
            f"error: {', '.join(refused)} would install packages when the job starts; "
            "this template's image already holds every dependency"
        )
    if _given(argv, IMAGE_OPTION):
        return list(argv)
    image = env.get(IMAGE_ENV, "").strip()
    if not image:
        raise SystemExit(
            f"error: no worker image: pass sdk_container_image=<this template's image> or build the "
            f"image with templates/build.sh, which sets {IMAGE_ENV}"
        )
    return [*argv, f"{IMAGE_OPTION}={image}"]


def main() -> None:
    sys.argv = [sys.argv[0], *launch_args(sys.argv[1:], os.environ)]
    runpy.run_module("pipeline", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
