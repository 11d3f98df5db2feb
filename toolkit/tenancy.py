"""Who a shell user is on the cluster: their name, their namespace and the labels marking both.

Every user is a namespace `user-NAME` with a ResourceQuota `shells`; shells and users both build
on these names, so they live here, below `shells` and `users`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from toolkit.errors import BadInputError

if TYPE_CHECKING:
    from toolkit.kube import Kube

NAMESPACE_PREFIX = "user-"
QUOTA_NAME = "shells"
SHELLS_QUOTA = "count/statefulsets.apps"  # the quota's count of a user's shells (one StatefulSet each)
MANAGED_BY = "app.kubernetes.io/managed-by"
USER_LABEL = "toolkit.dev/user"
# User names become namespaces (DNS-1123 labels) and the shell's Linux user (at most 32).
USER_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$")


def namespace_of(user: str) -> str:
    return f"{NAMESPACE_PREFIX}{user}"


def check_name(what: str, name: str, pattern: re.Pattern[str], longest: int) -> str:
    """`name` when `pattern` (a DNS label of at most `longest`) matches it; a one-line error."""
    if not pattern.fullmatch(name):
        raise BadInputError(
            f"{what} name {name!r} is invalid: use 1-{longest} lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit"
        )
    return name


def check_user_name(user: str) -> str:
    return check_name("user", user, USER_NAME, 32)


def user_from_context(kube: Kube, explicit: str | None) -> str:
    """`--user`, or the user whose namespace the kubeconfig's context points at."""
    if explicit:
        return check_user_name(explicit)
    if kube.namespace and kube.namespace.startswith(NAMESPACE_PREFIX):
        return check_user_name(kube.namespace[len(NAMESPACE_PREFIX) :])
    raise BadInputError(
        "which user? pass --user NAME (operators), or use the kubeconfig 'toolkit user add' wrote (users)"
    )
