"""STAND-IN for Kueue v0.19.2 (kubernetes-sigs/kueue), as the stand-in API server runs it.

No Kueue controller can run here, so `FakeApiServer(kueue=True)` serves Kueue's API groups and
runs this model of what the toolkit relies on. It follows Kueue v0.19.2's documentation and code
(git tag v0.19.2, commit 8eab68778fc1b52affe165fdf5af29d1e9b4f3cb), point by point:

- StatefulSets (site/content/en/docs/tasks/run/statefulset.md): a StatefulSet is queued when its
  `metadata.labels` carry `kueue.x-k8s.io/queue-name`, in any namespace but kube-system and
  kueue-system (the default `managedJobsNamespaceSelector`, apis/config/v1beta2/defaults.go).
  Kueue's StatefulSet webhook marks the pod template with the annotation
  `kueue.x-k8s.io/pod-suspending-parent: statefulset` (statefulset_webhook.go).
- Gated pods (docs/tasks/run/plain_pods.md): the pod webhook adds the scheduling gates
  `kueue.x-k8s.io/admission` and `kueue.x-k8s.io/topology` to such pods when they are created
  (pod_webhook.go; topology-aware scheduling is on by default). The pod reconciler labels them
  `kueue.x-k8s.io/managed: "true"` and with the queue name, and annotates them with the pod group
  (`kueue.x-k8s.io/pod-group-name`, `kueue.x-k8s.io/pod-group-total-count`,
  `kueue.x-k8s.io/prebuilt-workload-name`: annotations since v0.18, WorkloadIdentifierAnnotations).
  The kube-scheduler leaves a gated pod `PodScheduled=False`, reason `SchedulingGated`.
- Workloads (pkg/controller/jobframework/workload_names.go, statefulset_reconciler.go): one per
  StatefulSet, named `statefulset-<name>-<first 5 hex of sha1("StatefulSet\\napps\\n<name>\\n<uid>")>`,
  in its namespace, with one non-controller owner reference to it (so it goes when the StatefulSet
  goes), `spec.queueName` from the label and one pod set `main` of `replicas` pods.
- Scale to zero (test/e2e/singlecluster/baseline/statefulset_test.go): the Workload is kept,
  `QuotaReserved=False` with reason `OnHold` ("StatefulSet scaled to zero; workload on hold"), and
  its quota released. Scaled up again, it waits for quota anew ("Workload no longer on hold;
  waiting for quota reservation").
- Admission (docs/concepts/cluster_queue.md, pkg/scheduler/flavorassigner/flavorassigner.go): a
  workload's LocalQueue must exist in its namespace and name a ClusterQueue whose
  `namespaceSelector` matches the namespace (unset matches none, `{}` all). Pending workloads are
  taken by priority, then creation time (GetQueueOrderTimestamp, pkg/workload/workload.go: a
  resumed shell's Workload, kept through its pause, keeps its place by its creation). For each
  resource group, the first flavor (in the ClusterQueue's order) that matches the pod set's node
  selector and has unused nominal quota for every covered resource requested is assigned; a
  requested resource no group covers makes the workload inadmissible ("resource X unavailable in
  ClusterQueue"). `StrictFIFO` admits nothing behind a head that doesn't fit; `BestEffortFIFO`
  tries the ones behind it. A reservation sets `QuotaReserved` (reason `QuotaReserved`, "Quota
  reserved in ClusterQueue X") and `Admitted` (reason `Admitted`, "The workload is admitted") and
  `status.admission`; a workload that doesn't fit gets `QuotaReserved=False`, reason `Pending`,
  "couldn't assign flavors to pod set main: insufficient unused quota for R in flavor F, N more
  needed". Resources whose names start with one of the Configuration's
  `resources.excludeResourcePrefixes` are left out of all of it
  (docs/tasks/manage/administer_cluster_quotas.md, "Exclude arbitrary resources").
- Ungating (docs/concepts/resource_flavor.md): an admitted workload's pods lose both gates, and
  the flavor's `nodeLabels` join their `nodeSelector` and its `tolerations` their tolerations.
- Pending workloads on demand (docs/tasks/manage/monitor_pending_workloads/
  pending_workloads_on_demand.md): `GET /apis/visibility.kueue.x-k8s.io/v1beta2/clusterqueues/CQ/
  pendingworkloads` and `.../namespaces/NS/localqueues/LQ/pendingworkloads` answer a
  `PendingWorkloadsSummary` whose items carry `metadata` (name, namespace, creationTimestamp,
  ownerReferences), `priority`, `localQueueName`, `positionInClusterQueue` and
  `positionInLocalQueue`, both counted from 0, in the order admission takes them.

Not modelled: pods' graceful termination (a deleted pod's GPUs are free at once; on a cluster a
shell Kueue admits may wait for them), preemption, cohorts and borrowing, admission fair
sharing's usage-based ordering (workloads are taken in FIFO order across LocalQueues),
topology-aware scheduling, WaitForPodsReady
eviction, admission checks, priority classes (every workload has priority 0), the webhook's
refusal of replica changes other than to and from zero, LocalQueue and ClusterQueue status,
conversion between v1beta1 and v1beta2 (only v1beta2 is served), and Kueue's controller being down
(its webhooks, failurePolicy Fail, would refuse StatefulSet changes and pods in the namespaces
they cover).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

Obj = dict[str, Any]

GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"
VISIBILITY_GROUP = "visibility.kueue.x-k8s.io"
QUEUE_NAME = "kueue.x-k8s.io/queue-name"
MANAGED = "kueue.x-k8s.io/managed"
SUSPENDING_PARENT = "kueue.x-k8s.io/pod-suspending-parent"
POD_GROUP_NAME = "kueue.x-k8s.io/pod-group-name"
POD_GROUP_TOTAL_COUNT = "kueue.x-k8s.io/pod-group-total-count"
PREBUILT_WORKLOAD_NAME = "kueue.x-k8s.io/prebuilt-workload-name"
ADMISSION_GATE = "kueue.x-k8s.io/admission"
TOPOLOGY_GATE = "kueue.x-k8s.io/topology"
UNMANAGED_NAMESPACES = ("kube-system", "kueue-system")
POD_SET = "main"
GATED_MESSAGE = "Scheduling is blocked due to non-empty scheduling gates"


def managed(namespace: str, labels: dict[str, str]) -> bool:
    return namespace not in UNMANAGED_NAMESPACES and bool(labels.get(QUEUE_NAME))


def mutate_statefulset(sts: Obj) -> None:
    """Kueue's StatefulSet webhook, on create and update."""
    metadata = sts.get("metadata") or {}
    if not managed(metadata.get("namespace", ""), metadata.get("labels") or {}):
        return
    template = sts.setdefault("spec", {}).setdefault("template", {})
    # Another parent's mark is left as it is.
    template.setdefault("metadata", {}).setdefault("annotations", {}).setdefault(
        SUSPENDING_PARENT, "statefulset"
    )


def mutate_pod(pod: Obj) -> None:
    """Kueue's pod webhook, on create: pods whose parent Kueue suspends wait behind its gates."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if SUSPENDING_PARENT not in annotations:  # any suspending parent, as pod_webhook.go checks
        return
    gates = pod.setdefault("spec", {}).setdefault("schedulingGates", [])
    for gate in (ADMISSION_GATE, TOPOLOGY_GATE):
        if not any(g.get("name") == gate for g in gates):
            gates.append({"name": gate})


def workload_name(sts_name: str, sts_uid: str) -> str:
    digest = hashlib.sha1(f"StatefulSet\napps\n{sts_name}\n{sts_uid}".encode()).hexdigest()
    return f"statefulset-{sts_name}"[: 253 - 6] + f"-{digest[:5]}"


def new_workload(sts: Obj) -> Obj:
    metadata = sts["metadata"]
    template = copy.deepcopy(sts["spec"]["template"])
    template.setdefault("metadata", {})
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workload",
        "metadata": {
            "name": workload_name(metadata["name"], metadata["uid"]),
            "namespace": metadata["namespace"],
            "labels": {"kueue.x-k8s.io/job-uid": metadata["uid"]},
            "annotations": {
                "kueue.x-k8s.io/job-owner-gvk": "apps/v1, Kind=StatefulSet",
                "kueue.x-k8s.io/job-owner-name": metadata["name"],
                "kueue.x-k8s.io/is-group-workload": "true",
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                }
            ],
        },
        "spec": {
            "queueName": metadata["labels"][QUEUE_NAME],
            "podSets": [
                {"name": POD_SET, "count": int(sts["spec"].get("replicas", 1)), "template": template}
            ],
            "priority": 0,
            "active": True,
        },
        "status": {},
    }


def condition(workload: Obj, kind: str) -> Obj:
    return next((c for c in (workload.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def set_condition(workload: Obj, kind: str, status: str, reason: str, message: str, at: str) -> None:
    conditions = workload.setdefault("status", {}).setdefault("conditions", [])
    previous = condition(workload, kind)
    entry = {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": previous.get("lastTransitionTime", at)
        if previous.get("status") == status
        else at,
        "observedGeneration": workload["metadata"].get("generation", 1),
    }
    workload["status"]["conditions"] = [c for c in conditions if c["type"] != kind] + [entry]


def admitted(workload: Obj) -> bool:
    return condition(workload, "QuotaReserved").get("status") == "True"


def on_hold(workload: Obj) -> bool:
    return condition(workload, "QuotaReserved").get("reason") == "OnHold"


def hold(workload: Obj, at: str) -> None:
    """Scaled to zero: the workload stays, its quota released."""
    workload["status"].pop("admission", None)
    set_condition(
        workload, "QuotaReserved", "False", "OnHold", "StatefulSet scaled to zero; workload on hold", at
    )
    set_condition(workload, "Admitted", "False", "NoReservation", "The workload has no reservation", at)


def release_hold(workload: Obj, replicas: int, at: str) -> None:
    workload["spec"]["podSets"][0]["count"] = replicas
    set_condition(
        workload,
        "QuotaReserved",
        "False",
        "Pending",
        "Workload no longer on hold; waiting for quota reservation",
        at,
    )


def pending(workloads: Iterable[Obj]) -> list[Obj]:
    """Workloads waiting for quota, in the order admission takes them."""
    waiting = [w for w in workloads if not admitted(w) and not on_hold(w)]
    return sorted(
        waiting, key=lambda w: (-int(w["spec"].get("priority") or 0), w["metadata"]["creationTimestamp"])
    )


def _label_selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def cluster_queue_of(workload: Obj, local_queues: dict[tuple[str, str], Obj]) -> str | None:
    local_queue = local_queues.get((workload["metadata"]["namespace"], workload["spec"].get("queueName", "")))
    return str(local_queue["spec"]["clusterQueue"]) if local_queue else None


class Admission:
    """One pass of Kueue's scheduler over every ClusterQueue: which pending workloads get quota."""

    def __init__(
        self,
        cluster_queues: list[Obj],
        local_queues: list[Obj],
        flavors: list[Obj],
        namespace_labels: dict[str, dict[str, str]],
        requests_of: Callable[[Obj], dict[str, Fraction]],
        quantity: Callable[[Any], Fraction],
        excluded_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.cluster_queues = {cq["metadata"]["name"]: cq for cq in cluster_queues}
        self.local_queues = {(lq["metadata"]["namespace"], lq["metadata"]["name"]): lq for lq in local_queues}
        self.flavors = {f["metadata"]["name"]: f for f in flavors}
        self.namespace_labels = namespace_labels
        self.requests_of = requests_of
        self.quantity = quantity
        self.excluded_prefixes = excluded_prefixes

    def pod_set_requests(self, workload: Obj) -> dict[str, Fraction]:
        pod_set = workload["spec"]["podSets"][0]
        per_pod = self.requests_of({"spec": pod_set["template"].get("spec") or {}})
        return {
            name: amount * int(pod_set.get("count", 1))
            for name, amount in per_pod.items()
            if not name.startswith(self.excluded_prefixes)
        }

    def used(self, cq_name: str, workloads: list[Obj]) -> dict[tuple[str, str], Fraction]:
        """(flavor, resource) -> quota reserved by admitted workloads."""
        usage: dict[tuple[str, str], Fraction] = {}
        for workload in workloads:
            admission = (workload.get("status") or {}).get("admission") or {}
            if not admitted(workload) or admission.get("clusterQueue") != cq_name:
                continue
            for assignment in admission.get("podSetAssignments") or []:
                for resource, flavor in (assignment.get("flavors") or {}).items():
                    amount = self.quantity((assignment.get("resourceUsage") or {}).get(resource, "0"))
                    usage[(flavor, resource)] = usage.get((flavor, resource), Fraction(0)) + amount
        return usage

    def why_inadmissible(self, workload: Obj) -> str | None:
        namespace, queue = workload["metadata"]["namespace"], workload["spec"].get("queueName", "")
        if (namespace, queue) not in self.local_queues:
            return f"LocalQueue {queue} is terminating or missing"
        cq_name = cluster_queue_of(workload, self.local_queues) or ""
        cq = self.cluster_queues.get(cq_name)
        if cq is None:
            return f"ClusterQueue {cq_name} is terminating or missing"
        if not _label_selector_matches(
            cq["spec"].get("namespaceSelector"), self.namespace_labels.get(namespace, {})
        ):
            return "workload namespace doesn't match ClusterQueue selector"
        return None

    def assign(
        self, workload: Obj, cq: Obj, usage: dict[tuple[str, str], Fraction]
    ) -> tuple[Obj | None, str]:
        """(flavors and usage per resource, or None; why it does not fit)."""
        requests = self.pod_set_requests(workload)
        node_selector = (workload["spec"]["podSets"][0]["template"].get("spec") or {}).get(
            "nodeSelector"
        ) or {}
        flavors: dict[str, str] = {}
        for resource in requests:
            if not any(
                resource in group.get("coveredResources", [])
                for group in cq["spec"].get("resourceGroups") or []
            ):
                return None, f"resource {resource} unavailable in ClusterQueue"
        reasons: list[str] = []
        for group in cq["spec"].get("resourceGroups") or []:
            wanted = {r: a for r, a in requests.items() if r in group.get("coveredResources", [])}
            if not wanted:
                continue
            chosen = None
            for flavor_entry in group.get("flavors") or []:
                name = flavor_entry["name"]
                flavor = self.flavors.get(name)
                if flavor is None:
                    reasons.append(f"flavor {name} not found")
                    continue
                labels = (flavor.get("spec") or {}).get("nodeLabels") or {}
                if any(key in node_selector and node_selector[key] != value for key, value in labels.items()):
                    reasons.append(f"flavor {name} doesn't match node affinity")
                    continue
                nominal = {
                    r["name"]: self.quantity(r["nominalQuota"]) for r in flavor_entry.get("resources") or []
                }
                short = []
                for resource, amount in wanted.items():
                    free = nominal.get(resource, Fraction(0)) - usage.get((name, resource), Fraction(0))
                    if amount > free:
                        more = _amount(amount - free)
                        short.append(
                            f"insufficient unused quota for {resource} in flavor {name}, {more} more needed"
                        )
                if short:
                    reasons.extend(short)
                    continue
                chosen = name
                break
            if chosen is None:
                return None, "couldn't assign flavors to pod set main: " + ", ".join(reasons)
            flavors.update({resource: chosen for resource in wanted})
        resource_usage = {resource: _amount(amount) for resource, amount in requests.items()}
        count = int(workload["spec"]["podSets"][0].get("count", 1))
        return {
            "clusterQueue": cq["metadata"]["name"],
            "podSetAssignments": [
                {"name": POD_SET, "flavors": flavors, "resourceUsage": resource_usage, "count": count}
            ],
        }, ""

    def run(self, workloads: list[Obj], at: str) -> list[Obj]:
        """Decide every pending workload once; the workloads whose status changed."""
        changed: list[Obj] = []
        blocked: set[str] = set()  # StrictFIFO ClusterQueues whose head did not fit
        usage_by_cq: dict[str, dict[tuple[str, str], Fraction]] = {}
        for workload in pending(workloads):
            before = copy.deepcopy(workload.get("status") or {})
            why = self.why_inadmissible(workload)
            if why is not None:
                set_condition(workload, "QuotaReserved", "False", "Inadmissible", why, at)
            else:
                cq_name = cluster_queue_of(workload, self.local_queues) or ""
                cq = self.cluster_queues[cq_name]
                usage = usage_by_cq.setdefault(cq_name, self.used(cq_name, workloads))
                admission, why = (None, "") if cq_name in blocked else self.assign(workload, cq, usage)
                if admission is not None:
                    workload["status"]["admission"] = admission
                    set_condition(
                        workload,
                        "QuotaReserved",
                        "True",
                        "QuotaReserved",
                        f"Quota reserved in ClusterQueue {cq_name}",
                        at,
                    )
                    set_condition(workload, "Admitted", "True", "Admitted", "The workload is admitted", at)
                    for assignment in admission["podSetAssignments"]:
                        for resource, flavor in assignment["flavors"].items():
                            amount = self.quantity(assignment["resourceUsage"][resource])
                            usage[(flavor, resource)] = usage.get((flavor, resource), Fraction(0)) + amount
                else:
                    if why:
                        set_condition(workload, "QuotaReserved", "False", "Pending", why, at)
                    if cq.get("spec", {}).get("queueingStrategy") == "StrictFIFO":
                        blocked.add(cq_name)
            if workload.get("status") != before:
                changed.append(workload)
        return changed


def _amount(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else str(float(value))


def ungate(pod: Obj, workload: Obj, flavors: dict[str, Obj]) -> bool:
    """An admitted workload's pod: gates off, the flavor's node labels and tolerations on."""
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    if not any(g.get("name") == ADMISSION_GATE for g in gates):
        return False
    pod["spec"]["schedulingGates"] = [
        g for g in gates if g.get("name") not in (ADMISSION_GATE, TOPOLOGY_GATE)
    ]
    if not pod["spec"]["schedulingGates"]:
        del pod["spec"]["schedulingGates"]
    for assignment in workload["status"]["admission"]["podSetAssignments"]:
        for flavor_name in sorted(set(assignment["flavors"].values())):
            flavor_spec = (flavors.get(flavor_name) or {}).get("spec") or {}
            selector = pod["spec"].setdefault("nodeSelector", {})
            for key, value in (flavor_spec.get("nodeLabels") or {}).items():
                selector.setdefault(key, value)
            pod["spec"].setdefault("tolerations", []).extend(flavor_spec.get("tolerations") or [])
    return True


def label_pod(pod: Obj, workload: Obj, replicas: int) -> bool:
    """Kueue's StatefulSet pod reconciler: the pod joins its workload's group."""
    metadata = pod["metadata"]
    labels = metadata.setdefault("labels", {})
    annotations = metadata.setdefault("annotations", {})
    wanted_labels = {MANAGED: "true", QUEUE_NAME: workload["spec"]["queueName"]}
    wanted_annotations = {
        POD_GROUP_NAME: workload["metadata"]["name"],
        PREBUILT_WORKLOAD_NAME: workload["metadata"]["name"],
        POD_GROUP_TOTAL_COUNT: str(replicas),
        "kueue.x-k8s.io/pod-group-serving": "true",
        "kueue.x-k8s.io/pod-group-fast-admission": "true",
        "kueue.x-k8s.io/pod-group-pod-index-label": "apps.kubernetes.io/pod-index",
        "kueue.x-k8s.io/role-hash": POD_SET,
    }
    if all(labels.get(k) == v for k, v in wanted_labels.items()) and all(
        annotations.get(k) == v for k, v in wanted_annotations.items()
    ):
        return False
    labels.update(wanted_labels)
    annotations.update(wanted_annotations)
    return True


def pending_summary(
    workloads: list[Obj],
    local_queues: list[Obj],
    cluster_queue: str,
    namespace: str | None = None,
    local_queue: str | None = None,
) -> Obj:
    """The visibility API's PendingWorkloadsSummary for a ClusterQueue or one of its LocalQueues."""
    by_key = {(lq["metadata"]["namespace"], lq["metadata"]["name"]): lq for lq in local_queues}
    in_cq = [w for w in pending(workloads) if cluster_queue_of(w, by_key) == cluster_queue]
    items = []
    per_local: dict[tuple[str, str], int] = {}
    for position, workload in enumerate(in_cq):
        key = (workload["metadata"]["namespace"], workload["spec"]["queueName"])
        local_position = per_local.get(key, 0)
        per_local[key] = local_position + 1
        if namespace is not None and key != (namespace, local_queue):
            continue
        items.append(
            {
                "metadata": {
                    "name": workload["metadata"]["name"],
                    "namespace": workload["metadata"]["namespace"],
                    "creationTimestamp": workload["metadata"]["creationTimestamp"],
                    "ownerReferences": copy.deepcopy(workload["metadata"].get("ownerReferences") or []),
                },
                "priority": int(workload["spec"].get("priority") or 0),
                "localQueueName": workload["spec"]["queueName"],
                "positionInClusterQueue": position,
                "positionInLocalQueue": local_position,
            }
        )
    return {
        "kind": "PendingWorkloadsSummary",
        "apiVersion": f"{VISIBILITY_GROUP}/{VERSION}",
        "metadata": {},
        "items": items,
    }
