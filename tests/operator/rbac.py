"""Authentication and RBAC authorization as kube-apiserver does them, for the emulator.

Identities come from bearer tokens; roles and bindings come from rendered objects (the Helm chart's
ClusterRole, Role and their bindings), so what a test grants is exactly what the chart grants.
``system:masters`` bypasses authorization, as it does on a real cluster; discovery and version
endpoints are open to every authenticated user (the built-in ``system:discovery`` role).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
DISCOVERY_PREFIXES = ("/api", "/apis", "/version", "/openapi", "/healthz", "/livez", "/readyz")


@dataclass(frozen=True)
class User:
    """An authenticated identity: a user name and its groups."""

    name: str
    groups: tuple[str, ...] = (AUTHENTICATED,)

    @classmethod
    def service_account(cls, namespace: str, name: str) -> User:
        return cls(
            f"system:serviceaccount:{namespace}:{name}",
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED),
        )

    @classmethod
    def admin(cls) -> User:
        return cls("kubernetes-admin", (MASTERS, AUTHENTICATED))


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do, in RBAC's terms (``resource`` without the subresource)."""

    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str | None = None
    name: str | None = None
    path: str = ""  # for non-resource requests

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)

    def describe(self, user: User) -> str:
        """The Forbidden message kube-apiserver writes."""
        if not self.is_resource:
            return f'forbidden: User "{user.name}" cannot {self.verb} path "{self.path}"'
        full = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        what = f"{self.resource}.{self.group}" if self.group else self.resource
        subject = f'{what} "{self.name}" is forbidden' if self.name else f"{what} is forbidden"
        where = f' in the namespace "{self.namespace}"' if self.namespace else " at the cluster scope"
        return (
            f'{subject}: User "{user.name}" cannot {self.verb} resource "{full}" '
            f'in API group "{self.group}"{where}'
        )


@dataclass(frozen=True)
class Rule:
    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str] = frozenset()
    non_resource_urls: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Rule:
        return cls(
            frozenset(raw.get("apiGroups") or ()),
            frozenset(raw.get("resources") or ()),
            frozenset(raw.get("verbs") or ()),
            frozenset(raw.get("resourceNames") or ()),
            frozenset(raw.get("nonResourceURLs") or ()),
        )

    def allows(self, attrs: Attributes) -> bool:
        if "*" not in self.verbs and attrs.verb not in self.verbs:
            return False
        if not attrs.is_resource:
            return any(
                url == attrs.path or (url.endswith("*") and attrs.path.startswith(url[:-1]))
                for url in self.non_resource_urls
            )
        if "*" not in self.api_groups and attrs.group not in self.api_groups:
            return False
        full = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        wildcard_sub = f"*/{attrs.subresource}" if attrs.subresource else "*"
        if not {full, wildcard_sub, "*"} & self.resources:
            return False
        if self.resource_names:
            return attrs.name is not None and attrs.name in self.resource_names
        return True


@dataclass(frozen=True)
class Binding:
    role: tuple[str, str | None]  # (ClusterRole name, None) or (Role name, its namespace)
    namespace: str | None  # None for a ClusterRoleBinding: the rules apply everywhere
    subjects: tuple[Mapping[str, Any], ...]

    def binds(self, user: User) -> bool:
        for subject in self.subjects:
            kind, name = subject.get("kind"), subject.get("name")
            if kind == "ServiceAccount":
                namespace = subject.get("namespace") or self.namespace
                if user.name == f"system:serviceaccount:{namespace}:{name}":
                    return True
            elif (kind == "User" and user.name == name) or (kind == "Group" and name in user.groups):
                return True
        return False


@dataclass
class Authorizer:
    """RBAC over a fixed set of roles and bindings."""

    cluster_roles: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    roles: dict[tuple[str, str], tuple[Rule, ...]] = field(default_factory=dict)
    bindings: list[Binding] = field(default_factory=list)

    @classmethod
    def from_objects(cls, objects: Iterable[Mapping[str, Any]]) -> Authorizer:
        """Roles and bindings from rendered manifests (other kinds are ignored)."""
        authorizer = cls()
        for obj in objects:
            kind, meta = obj.get("kind"), obj.get("metadata") or {}
            rules = tuple(Rule.parse(r) for r in obj.get("rules") or ())
            if kind == "ClusterRole":
                authorizer.cluster_roles[meta["name"]] = rules
            elif kind == "Role":
                authorizer.roles[(meta.get("namespace") or "default", meta["name"])] = rules
            elif kind in {"ClusterRoleBinding", "RoleBinding"}:
                ref = obj["roleRef"]
                namespace = None if kind == "ClusterRoleBinding" else meta.get("namespace") or "default"
                role = (ref["name"], None if ref["kind"] == "ClusterRole" else namespace)
                authorizer.bindings.append(Binding(role, namespace, tuple(obj.get("subjects") or ())))
        return authorizer

    def rules_for(self, user: User, namespace: str | None) -> list[Rule]:
        """The rules that apply to ``user`` for a request in ``namespace`` (None: cluster scope)."""
        rules: list[Rule] = []
        for binding in self.bindings:
            if not binding.binds(user):
                continue
            if binding.namespace is not None and binding.namespace != namespace:
                continue
            name, role_ns = binding.role
            if role_ns is None:
                rules += self.cluster_roles.get(name, ())
            else:
                rules += self.roles.get((role_ns, name), ())
        return rules

    def allows(self, user: User, attrs: Attributes) -> bool:
        if MASTERS in user.groups:
            return True
        discovery = any(attrs.path == p or attrs.path.startswith(p + "/") for p in DISCOVERY_PREFIXES)
        if not attrs.is_resource and AUTHENTICATED in user.groups and attrs.verb == "get" and discovery:
            return True
        return any(rule.allows(attrs) for rule in self.rules_for(user, attrs.namespace))

    def granted(self, user: User) -> set[tuple[str, str, str]]:
        """Every (group, resource[/subresource], verb) the cluster-wide rules grant ``user``, expanded."""
        result: set[tuple[str, str, str]] = set()
        for rule in self.rules_for(user, None):
            for group in rule.api_groups:
                for resource in rule.resources:
                    result |= {(group, resource, verb) for verb in rule.verbs}
        return result
