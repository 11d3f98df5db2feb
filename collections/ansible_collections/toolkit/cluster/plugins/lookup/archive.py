"""Lookup: a file on the control node, read once for its sha256 and, where asked, its content.

`lookup('toolkit.cluster.archive', path, content=true)` gives `{sha256: HEX, content: BASE64}`
(`content=false`: the sha256 alone), or none where the file is missing. A chart archive is checked
against its pin and embedded in a manifest from one read on the controller, where a stat and a
slurp would each cost a module run on every converge.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

DOCUMENTATION = r"""
name: archive
short_description: A control-node file's sha256, and its content in base64, from one read
description:
  - Reads a file on the control node once and returns its sha256 and, with O(content), its content
    in base64; none where the file does not exist. C(~) and environment variables in the path are
    expanded, as the file modules do.
options:
  _terms:
    description: The file's path.
    required: true
    type: list
    elements: path
  content:
    description: Return the content too (a large archive that is only copied needs its sha256 alone).
    type: bool
    default: true
author: toolkit
"""

RETURN = r"""
_raw:
  description: "For each path: {sha256: hex digest, content: base64}, or none where it is missing."
  type: list
  elements: dict
"""

BLOCK = 1 << 20


def read_archive(path: str, content: bool = True) -> dict[str, str] | None:
    path = os.path.expanduser(os.path.expandvars(path))
    digest, blocks = hashlib.sha256(), []
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(BLOCK), b""):
                digest.update(block)
                if content:
                    blocks.append(block)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise AnsibleError(f"cannot read {path}: {error.strerror}") from None
    found = {"sha256": digest.hexdigest()}
    if content:
        found["content"] = base64.b64encode(b"".join(blocks)).decode("ascii")
    return found


class LookupModule(LookupBase):
    def run(self, terms: list[Any], variables: dict[str, Any] | None = None, **kwargs: Any) -> list[Any]:
        self.set_options(var_options=variables, direct=kwargs)
        return [read_archive(str(term), content=bool(self.get_option("content"))) for term in terms]
