"""Kubernetes name rules: DNS-1123 labels and subdomains, label keys and values."""

from __future__ import annotations

import re

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def is_dns1123_label(value: str) -> bool:
    """A name such as a Workspace's: at most 63 of [a-z0-9-], alphanumeric at both ends."""
    return len(value) <= 63 and bool(_DNS1123_LABEL.match(value))


def is_dns1123_subdomain(value: str) -> bool:
    """A name such as a ConfigMap's: dot-separated DNS-1123 labels, at most 253 characters."""
    return len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.match(value))


def is_label_key(key: str) -> bool:
    """``[prefix/]name``: the prefix a DNS-1123 subdomain, the name at most 63 characters."""
    prefix, slash, name = key.rpartition("/")
    if slash and not is_dns1123_subdomain(prefix):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.match(name))


def is_label_value(value: str) -> bool:
    """Empty, or at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends."""
    return value == "" or (len(value) <= 63 and bool(_LABEL_NAME.match(value)))


def suggest_dns1123_label(value: str) -> str | None:
    """A DNS-1123 label close to ``value`` (lowercased, '_' and '.' as '-'), or None."""
    hint = re.sub(r"[^a-z0-9-]", "-", value.lower()).strip("-")[:63].strip("-")
    return hint if hint and is_dns1123_label(hint) and hint != value else None
