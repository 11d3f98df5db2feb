"""STAND-IN for kube-apiserver's ValidatingAdmissionPolicy plugin, used by kube_apiserver.py.

It follows the upstream documentation (kubernetes.io/docs/reference/access-authn-authz/
validating-admission-policy/) and kubernetes/apiserver's `pkg/admission/plugin/policy/validating`
for what the toolkit's policies use, and evaluates their CEL for real with cel-python:

- a binding (`spec.policyName`, `validationActions` with Deny) applies its policy; a policy with
  no binding does nothing;
- `matchConstraints.resourceRules` (apiGroups, apiVersions, operations, resources; "*" matches
  all; a subresource's request, such as `statefulsets/scale` with its Scale object, matches
  only a rule naming that subresource) and `namespaceSelector` (matchLabels; matchExpressions
  In, NotIn, Exists, DoesNotExist) against the request's namespace; cluster-scoped objects
  match only an empty selector;
- `paramKind` with the binding's `paramRef` (name, namespace): `params` is that object; when it
  is missing, `parameterNotFoundAction: Deny` refuses with upstream's message, Allow admits;
- the variables `object`, `oldObject` (null on CREATE), `request` (operation, namespace, name,
  kind, resource, subResource, and userInfo's username and groups, as the authenticator gives
  them), `params` and `namespaceObject`; `spec.variables` as `variables.NAME` (one that fails
  to evaluate is an error of each validation that reads it);
- on CREATE, `object.metadata.creationTimestamp` is already set: the registry fills the system
  fields (rest.BeforeCreate, FillObjectMetaSystemFields) before it calls the validating admission
  chain;
- each of `validations` in order: a false result or an evaluation error denies (an error with
  failurePolicy Ignore admits), with `message` or `failed expression: EXPR`;
- the refusal: `RESOURCE "NAME" is forbidden: ValidatingAdmissionPolicy 'P' with binding 'B'
  denied request: MESSAGE`, code 403 for `reason: Forbidden` and 422 Invalid otherwise
  (policy_decision.go's reasonToCode).

It does not model: matchConditions, messageExpression, auditAnnotations, Warn and Audit actions,
objectSelector, excludeResourceRules, paramRef selectors, the `authorizer` variable, Kubernetes'
CEL extension libraries (only standard CEL, which is all the toolkit's policies use), or type
checking: an expression is compiled only when a request meets it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import celpy

Obj = dict[str, Any]


@dataclass(frozen=True)
class Request:
    operation: str  # CREATE or UPDATE
    group: str
    version: str
    resource: str  # plural
    kind: str
    namespace: str
    name: str
    user: str = ""
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Denied:
    code: int
    reason: str
    message: str


def _selected(selector: Obj, labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for term in selector.get("matchExpressions") or []:
        key, operator, values = term["key"], term["operator"], term.get("values") or []
        present = key in labels
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
    return True


def _matches(policy: Obj, request: Request, namespace: Obj | None) -> bool:
    constraints = policy["spec"].get("matchConstraints") or {}

    def rule_matches(rule: Obj) -> bool:
        return all(
            "*" in (rule.get(field) or []) or wanted in (rule.get(field) or [])
            for field, wanted in (
                ("apiGroups", request.group),
                ("apiVersions", request.version),
                ("operations", request.operation),
                ("resources", request.resource),
            )
        )

    if not any(rule_matches(rule) for rule in constraints.get("resourceRules") or []):
        return False
    selector = constraints.get("namespaceSelector") or {}
    if namespace is None:
        return not selector
    return _selected(selector, (namespace.get("metadata") or {}).get("labels") or {})


def _evaluate(expression: str, activation: dict[str, Any]) -> tuple[bool, str]:
    """(passed, the error's text when it did not evaluate)."""
    environment = celpy.Environment()
    try:
        result = environment.program(environment.compile(expression)).evaluate(activation)
    except celpy.CELEvalError as error:  # raised at the top level
        return False, str(error.args[0] if error.args else error)
    except celpy.CELParseError as error:
        return False, f"compilation failed: {error}"
    if isinstance(result, celpy.CELEvalError):
        return False, str(result.args[0] if result.args else result)
    return result is True or result == celpy.celtypes.BoolType(True), ""


def admit(
    request: Request,
    obj: Obj,
    old: Obj | None,
    policies: list[Obj],
    bindings: list[Obj],
    get: Callable[[str, str, str], Obj | None],
) -> Denied | None:
    """The first refusal among the bound policies that match the request, or None.

    `get(kind, name, namespace)` reads objects: the namespace and the binding's parameter.
    """
    namespace = get("Namespace", request.namespace, "") if request.namespace else None
    by_name = {policy["metadata"]["name"]: policy for policy in policies}
    for binding in sorted(bindings, key=lambda b: b["metadata"]["name"]):
        spec = binding.get("spec") or {}
        policy = by_name.get(spec.get("policyName", ""))
        if policy is None or "Deny" not in (spec.get("validationActions") or []):
            continue
        if not _matches(policy, request, namespace):
            continue
        policy_name, binding_name = policy["metadata"]["name"], binding["metadata"]["name"]
        what = f'{request.resource}{"." + request.group if request.group else ""} "{request.name}"'
        params: Obj | None = None
        if policy["spec"].get("paramKind"):
            ref = spec.get("paramRef") or {}
            params = get(policy["spec"]["paramKind"]["kind"], ref.get("name", ""), ref.get("namespace", ""))
            if params is None:
                if ref.get("parameterNotFoundAction", "Deny") == "Deny":
                    return Denied(
                        403,
                        "Forbidden",
                        f"{what} is forbidden: ValidatingAdmissionPolicy '{policy_name}' with binding "
                        f"'{binding_name}' denied request: failed to configure binding: no params found "
                        "for policy binding with `Deny` parameterNotFoundAction",
                    )
                continue
        activation: dict[str, Any] = {
            "object": celpy.json_to_cel(obj),
            "oldObject": celpy.json_to_cel(old),
            "request": celpy.json_to_cel(
                {
                    "operation": request.operation,
                    "namespace": request.namespace,
                    "name": request.name,
                    "kind": {"group": request.group, "version": request.version, "kind": request.kind},
                    "resource": {
                        "group": request.group,
                        "version": request.version,
                        "resource": request.resource.split("/")[0],
                    },
                    "subResource": request.resource.partition("/")[2],
                    "userInfo": {"username": request.user, "groups": list(request.groups)},
                }
            ),
            "params": celpy.json_to_cel(params),
            "namespaceObject": celpy.json_to_cel(namespace),
        }
        variables: dict[Any, Any] = {}
        for variable in policy["spec"].get("variables") or []:  # each may use the ones before it
            activation["variables"] = celpy.celtypes.MapType(variables)
            environment = celpy.Environment()
            program = environment.program(environment.compile(variable["expression"]))
            try:
                value = program.evaluate(activation)
            except celpy.CELEvalError as error:  # an error of each validation that reads it
                value = error
            variables[celpy.celtypes.StringType(variable["name"])] = value
        activation["variables"] = celpy.celtypes.MapType(variables)
        ignore_errors = policy["spec"].get("failurePolicy", "Fail") == "Ignore"
        for validation in policy["spec"].get("validations") or []:
            passed, error = _evaluate(validation["expression"], activation)
            if passed or (error and ignore_errors):
                continue
            if error:
                message = f"expression '{validation['expression']}' resulted in error: {error}"
            else:
                message = validation.get("message") or f"failed expression: {validation['expression']}"
            reason = validation.get("reason") or "Invalid"
            return Denied(
                403 if reason == "Forbidden" else 422,
                reason,
                f"{what} is forbidden: ValidatingAdmissionPolicy '{policy_name}' with binding "
                f"'{binding_name}' denied request: {' '.join(message.split())}",
            )
    return None
