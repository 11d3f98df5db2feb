"""The images `toolkit images build` makes and the names it gives them, apart from toolkit.images so
that the CLI's help needs none of the build machinery."""

from __future__ import annotations

from enum import StrEnum

# The name `toolkit images build` gives the shell image, and the one shells run unless the site's
# shells_platform_image names another (its default is this name too; a unit test ties them).
SHELL_IMAGE = "localhost/toolkit-shell:latest"
# The name `toolkit images build --image toolkit` gives the lifecycle image.
TOOLKIT_IMAGE = "localhost/toolkit:latest"


class Image(StrEnum):
    """The images `toolkit images build` makes, each from images/<name>."""

    shell = "shell"
    toolkit = "toolkit"


DEFAULT_TAGS = {Image.shell: SHELL_IMAGE, Image.toolkit: TOOLKIT_IMAGE}
