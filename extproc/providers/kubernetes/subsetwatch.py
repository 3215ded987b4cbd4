"""The watches behind DestinationRule subsets (`subsets`): DestinationRules, the workloads of the targets whose
Service has subsets, and the Pods of each subset a target owns.

What it costs is what the subsets in use cost, not what the cluster holds:
- DestinationRules: one watch per scope, only when Istio's CRD is served (`networking.istio.io` v1, else
  v1beta1, as discovery lists them; looked for again every minute while neither is);
- a workload's pod template labels: one watch per workload of a target whose Service some DestinationRule
  gives subsets, selected by name (`metadata.name=`);
- Pods: one watch per subset a target owns, selected by the subset's labels. An EndpointSlice endpoint
  names its Pod (`targetRef`) but not the Pod's labels; this watch says which of those Pods are in the subset.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from extproc.core.background import BackgroundTasks
from extproc.core.httpso import TargetKey
from extproc.providers.kubernetes import api as kube
from extproc.providers.kubernetes.api import JsonObj, KubeApi, KubeError, Resource, object_key
from extproc.providers.kubernetes.gatewaypods import PODS
from extproc.providers.kubernetes.informer import Informer
from extproc.providers.kubernetes.subsets import ServiceKey, SubsetIndex, SubsetTarget, Workload, rule_subsets

log = logging.getLogger(__name__)

_CRD_RECHECK = 60.0
_WORKLOADS: dict[str, Resource] = {
    kube.DEPLOYMENTS.plural: kube.DEPLOYMENTS,
    kube.STATEFULSETS.plural: kube.STATEFULSETS,
}


class SubsetWatch:
    """Feeds a `SubsetIndex` from the API server and reports what changed: `on_clusters` the subset clusters
    whose owner changed, `on_endpoints` the targets whose subset endpoints may have."""

    def __init__(
        self,
        api: KubeApi,
        scopes: Sequence[str | None],
        targets_of: Callable[[ServiceKey], Iterable[SubsetTarget]],
        on_clusters: Callable[[dict[str, TargetKey | None]], None],
        on_endpoints: Callable[[set[TargetKey]], None],
    ) -> None:
        self.api = api
        self.scopes = scopes
        self.index = SubsetIndex()
        self.rule_informers: list[Informer] = []
        self._targets_of = targets_of
        self._on_clusters = on_clusters
        self._on_endpoints = on_endpoints
        self._workloads: dict[Workload, Informer] = {}
        self._pods: dict[tuple[str, str], Informer] = {}
        self._tasks = BackgroundTasks()

    async def prepare(self) -> list[Informer]:
        """The DestinationRule watches to start with the provider's own (part of its first sync); none when
        Istio's CRD is not served, which is then looked for again every minute."""
        resource = await self._served()
        if resource is None:
            self._tasks.spawn(self._look_for_crd(), name="DestinationRule CRD check")
            return []
        self.rule_informers = [self._rule_informer(resource, scope) for scope in self.scopes]
        return list(self.rule_informers)

    async def _served(self) -> Resource | None:
        for resource in kube.DESTINATIONRULES:
            try:
                if await self.api.served(resource):
                    return resource
            except KubeError as exc:
                log.warning("cannot tell whether DestinationRules are served (%s); asking again shortly", exc)
                return None
        log.info("Istio's DestinationRules are not served: no subset clusters; looking again every minute")
        return None

    async def _look_for_crd(self) -> None:
        while True:
            await asyncio.sleep(_CRD_RECHECK)
            resource = await self._served()
            if resource is not None:
                self.rule_informers = [self._rule_informer(resource, scope) for scope in self.scopes]
                for informer in self.rule_informers:
                    informer.start()
                log.info("DestinationRules are served (%s): watching them", resource.version)
                return

    def _rule_informer(self, resource: Resource, namespace: str | None) -> Informer:
        return Informer(self.api, resource, self._on_rule, namespace=namespace)

    def informers(self) -> list[Informer]:
        """Every watch running now (for /status)."""
        return [*self.rule_informers, *self._workloads.values(), *self._pods.values()]

    # --- events -------------------------------------------------------------------------------------------

    def _on_rule(self, _kind: str, old: JsonObj | None, new: JsonObj | None) -> None:
        document = new or old or {}
        self.index.set_rule(object_key(document), rule_subsets(new) if new is not None else None)
        self.refresh()

    def _on_workload(self, workload: Workload) -> Callable[[str, JsonObj | None, JsonObj | None], None]:
        def changed(_kind: str, _old: JsonObj | None, new: JsonObj | None) -> None:
            labels = _template_labels(new) if new is not None else None
            if self.index.templates.get(workload) == labels:
                return
            if labels is None:
                self.index.templates.pop(workload, None)
            else:
                self.index.templates[workload] = labels
            self.refresh()

        return changed

    def _on_pod(self, selector: tuple[str, str]) -> Callable[[str, JsonObj | None, JsonObj | None], None]:
        def changed(_kind: str, old: JsonObj | None, new: JsonObj | None) -> None:
            if old is not None and new is not None:
                return  # only a Pod's coming and going changes who is in the subset (its labels are selected)
            self._on_endpoints(self.index.targets_selecting(*selector))

        return changed

    # --- derived state ---------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Recompute the subset clusters' owners and the watches they need; call after targets changed."""
        services = self.index.services
        if not services and not self.index.owners:
            return
        targets = [target for service in services for target in self._targets_of(service)]
        self._keep(
            self._workloads,
            {t.workload for t in targets if t.workload is not None and t.workload[0] in _WORKLOADS},
            self._workload_informer,
        )
        changed, touched = self.index.resolve(targets)
        self._keep(self._pods, self.index.selectors(), self._pod_informer)
        if changed:
            self._on_clusters(changed)
        if touched:
            self._on_endpoints(touched)

    def _keep(self, running: dict[Any, Informer], wanted: set[Any], make: Callable[[Any], Informer]) -> None:
        for key in [key for key in running if key not in wanted]:
            informer = running.pop(key)
            self._tasks.spawn(informer.stop(), name=f"stop {informer.name}", cancel_on_close=False)
            self.index.templates.pop(key, None)  # a workload no target names any more
        for key in wanted - running.keys():
            running[key] = make(key)
            running[key].start()

    def _workload_informer(self, workload: Workload) -> Informer:
        plural, namespace, name = workload
        return Informer(
            self.api,
            _WORKLOADS[plural],
            self._on_workload(workload),
            namespace=namespace,
            field_selector=f"metadata.name={name}",
        )

    def _pod_informer(self, selector: tuple[str, str]) -> Informer:
        namespace, labels = selector
        return Informer(self.api, PODS, self._on_pod(selector), namespace=namespace, label_selector=labels)

    def pods(self, key: TargetKey) -> set[str] | None:
        """The Pods (names) in the subsets `key` owns; None when it owns none (its whole Service counts)."""
        owned = self.index.of_target(key)
        if not owned:
            return None
        names: set[str] = set()
        for subset, _ in owned:
            informer = self._pods.get((subset.service[0], subset.selector))
            if informer is not None:
                names.update(name for _, name in informer.cache)
        return names

    def clusters(self, key: TargetKey) -> list[str]:
        """The subset clusters `key` owns (sorted); empty for most targets."""
        return [cluster for _, cluster in self.index.of_target(key)]

    async def stop(self) -> None:
        await self._tasks.close()
        for informer in self.informers():
            await informer.stop()


def _template_labels(document: JsonObj) -> dict[str, str]:
    labels = ((((document.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")) or {}
    return {str(k): str(v) for k, v in labels.items()}
