"""Saved connections: named endpoints (the local server, a Workspace tunnel, any OpenAI-compatible URL).

The list lives in ``connections.json`` in the data directory and holds no secret. An API key is
either stored in ``connection-keys.json`` beside it (mode 0600, never read by the history) or
referenced: an environment variable or a key file, read when the connection is used. Keys are never
printed: listings say only where the key comes from.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from dataclasses import replace as replaced
from pathlib import Path
from typing import Literal, cast
from urllib.parse import urlsplit

from pykaito.apps.history import data_dir
from pykaito.client.endpoint import default_endpoint, normalize_endpoint
from pykaito.errors import InputError

CONNECTIONS_FILE = "connections.json"
KEYS_FILE = "connection-keys.json"
LOCAL = "local"
CONNECTION_ENV = "KAITO_CONNECTION"  # the saved connection `kaito ui --connection` opens with
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

Kind = Literal["local", "workspace", "url"]
KINDS: tuple[Kind, ...] = ("local", "workspace", "url")


@dataclass(frozen=True)
class Connection:
    """One named endpoint. ``key_env`` / ``key_file`` reference a key; a stored key is kept apart."""

    name: str
    url: str
    kind: Kind = "url"
    workspace: str | None = None
    namespace: str | None = None
    key_env: str | None = None
    key_file: str | None = None
    stored_key: bool = False

    def describe(self) -> str:
        """Where it points, for listings."""
        if self.kind == "workspace":
            where = f"workspace {self.namespace or 'default'}/{self.workspace}"
            return f"{where} (run `kaito connect {self.workspace}` first)"
        return "the local server (kaito up / kaito serve)" if self.kind == "local" else "OpenAI-compatible"

    def key_source(self) -> str:
        """Where the API key comes from, never the key itself."""
        if self.stored_key:
            return "stored (0600 file)"
        if self.key_env:
            return f"${self.key_env}"
        if self.key_file:
            return f"file {self.key_file}"
        return "none"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InputError(
            f"connection name {name!r} is not valid: use letters, digits, '.', '_' or '-' "
            "(at most 63, starting with a letter or digit)"
        )
    return name


def check_url(url: str) -> str:
    """The server root of ``url`` (``host:port`` → ``http://host:port``), or a clear error."""
    if not url.strip():
        raise InputError("give the server's URL, e.g. http://localhost:8080")
    root = normalize_endpoint(url)
    try:
        parts = urlsplit(root)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise InputError(f"URL {url.strip()!r} is not valid ({exc}): e.g. http://HOST:8080") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in root):
        raise InputError(
            f"URL {url.strip()!r} is not valid: give http:// or https:// and a host, e.g. http://HOST:8080"
        )
    return root


class ConnectionStore:
    """The saved connections of this user; ``directory`` defaults to the data directory."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else data_dir()
        self.path = self.directory / CONNECTIONS_FILE
        self.keys_path = self.directory / KEYS_FILE

    # files

    def _read(self, path: Path) -> dict[str, dict[str, object]]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path} is not valid JSON (line {exc.lineno}): fix it or remove it to start again"
            ) from exc
        if not isinstance(data, dict):
            raise InputError(f"{path} must hold a JSON object: fix it or remove it to start again")
        return cast(dict[str, dict[str, object]], data)

    def _write(self, path: Path, data: Mapping[str, object], private: bool) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        # Create with 0600 from the start: the key is never readable by others, not even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
        try:
            if private:
                os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=2, sort_keys=True)
                out.write("\n")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(path)

    def _keys(self) -> dict[str, str]:
        return {name: str(value) for name, value in self._read(self.keys_path).items()}

    # reading

    def all(self) -> list[Connection]:
        """The saved connections, with the local server first (``local``, unless saved otherwise)."""
        saved: dict[str, Connection] = {}
        for name, entry in sorted(self._read(self.path).items()):
            try:
                saved[name] = Connection(name=name, **entry)  # type: ignore[arg-type]
            except TypeError as exc:
                raise InputError(
                    f"{self.path}: connection {name!r} has unknown fields ({exc}): "
                    f"`kaito connections rm {name}` and add it again"
                ) from exc
        local = saved.pop(LOCAL, None) or Connection(name=LOCAL, url=default_endpoint(), kind="local")
        return [local, *saved.values()]

    def has(self, name: str) -> bool:
        """Whether ``name`` is saved (the built-in ``local`` is not, until saved)."""
        return name in self._read(self.path)

    def names(self) -> list[str]:
        return [conn.name for conn in self.all()]

    def get(self, name: str) -> Connection:
        for conn in self.all():
            if conn.name == name:
                return conn
        raise InputError(
            f"no saved connection {name!r}: saved are {', '.join(self.names())}; "
            "add one with `kaito connections add NAME URL`"
        )

    def api_key(self, conn: Connection) -> str | None:
        """The key this connection uses, or None (then ``$KAITO_API_KEY`` applies, as without one)."""
        if conn.stored_key:
            key = self._keys().get(conn.name)
            if not key:
                raise InputError(
                    f"the stored API key of connection {conn.name!r} is missing from {self.keys_path}: "
                    f"add the connection again with --api-key-file"
                )
            return key
        if conn.key_env:
            value = os.environ.get(conn.key_env, "").strip()
            if not value:
                raise InputError(
                    f"connection {conn.name!r} reads its API key from ${conn.key_env}, which is not set"
                )
            return value
        if conn.key_file:
            return read_key_file(Path(conn.key_file), f"connection {conn.name!r}: key file")
        return None

    # changing

    def add(self, conn: Connection, api_key: str | None = None, *, replace: bool = False) -> Connection:
        """Save ``conn``; ``api_key`` is stored apart in the 0600 keys file."""
        check_name(conn.name)
        if conn.kind not in KINDS:
            raise InputError(f"connection kind {conn.kind!r} is not one of {', '.join(KINDS)}")
        saved = self._read(self.path)
        if conn.name in saved and not replace:
            raise InputError(
                f"connection {conn.name!r} exists already: remove it first "
                f"(`kaito connections rm {conn.name}`) or add it with --replace"
            )
        refs = sum(1 for ref in (api_key, conn.key_env, conn.key_file) if ref)
        if refs > 1:
            raise InputError(
                "give the API key one way: a key file to store, an environment variable, or a file"
            )
        conn = Connection(**{**asdict(conn), "url": check_url(conn.url), "stored_key": bool(api_key)})
        keys = self._keys()
        if api_key:
            keys[conn.name] = api_key
            self._write(self.keys_path, keys, private=True)
        elif conn.name in keys:
            del keys[conn.name]
            self._write(self.keys_path, keys, private=True)
        entry = {k: v for k, v in asdict(conn).items() if k != "name" and v not in (None, False)}
        saved[conn.name] = entry
        self._write(self.path, saved, private=False)
        return conn

    def edit(
        self, name: str, *, url: str | None = None, api_key: str | None = None, drop_key: bool = False
    ) -> Connection:
        """Change a saved connection's URL and key; without ``api_key`` (or ``drop_key``) its key stays.

        A new key replaces a stored one or an environment/file reference; ``local`` (built in
        until saved) is saved by its first edit.
        """
        conn = self.get(name)
        key: str | None = None
        if api_key:
            conn = replaced(conn, key_env=None, key_file=None)
            key = api_key
        elif drop_key:
            conn = replaced(conn, key_env=None, key_file=None)
        elif conn.stored_key:
            key = self.api_key(conn)
        return self.add(replaced(conn, url=url if url is not None else conn.url), key, replace=True)

    def remove(self, name: str) -> None:
        saved = self._read(self.path)
        if name not in saved:
            raise InputError(f"no saved connection {name!r}: `kaito connections list` shows them")
        del saved[name]
        self._write(self.path, saved, private=False)
        keys = self._keys()
        if keys.pop(name, None) is not None:
            self._write(self.keys_path, keys, private=True)


def read_key_file(path: Path, what: str) -> str:
    """The first line of a key file; one clear error when it is missing or empty."""
    try:
        lines = path.expanduser().read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise InputError(f"{what} {path}: {exc.strerror or exc}; give a file holding the key") from exc
    if not lines or not lines[0].strip():
        raise InputError(f"{what} {path} is empty: put the server's API key on its first line")
    return lines[0].strip()
