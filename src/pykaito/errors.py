"""The error tree of pykaito.

    PykaitoError                  anything pykaito raises on purpose
    ├── InputError                the user's input cannot be read (YAML, flags, files)
    ├── ValidationError           a Workspace breaks admission rules; carries FieldErrors
    ├── CatalogError              an unknown preset, instance type or model; carries suggestions
    ├── PlanError                 the model does not fit the hardware asked for
    ├── EngineError               the inference engine cannot load or serve
    │   ├── QueueFullError        the waiting queue is full (HTTP 429)
    │   └── PromptTooLongError    the prompt does not fit the context of one sequence (HTTP 400)
    ├── ClusterError              the Kubernetes API refused or could not be reached
    └── DownloadError             a model download was refused or failed; carries a reason

Every message says what is wrong, where, and what to do next. Third-party exceptions are
mapped to these at the edge and raised ``from`` the original.
"""

from __future__ import annotations

from dataclasses import dataclass


class PykaitoError(Exception):
    """Base class of every error pykaito raises on purpose."""


class InputError(PykaitoError):
    """The user's input (a file, a flag, standard input) cannot be read."""


@dataclass(frozen=True)
class FieldError:
    """One broken rule: the field path (``resource.instanceType``) and what to do."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ValidationError(PykaitoError):
    """A Workspace breaks one or more admission rules."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


class CatalogError(PykaitoError):
    """An unknown preset, instance type or model, with the closest known names."""

    def __init__(self, message: str, suggestions: tuple[str, ...] = ()) -> None:
        self.suggestions = suggestions
        super().__init__(message)


class PlanError(PykaitoError):
    """The model cannot be placed on the hardware asked for; the message says what would fit."""


class EngineError(PykaitoError):
    """The inference engine cannot load the model or serve a request."""


class QueueFullError(EngineError):
    """The waiting queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class PromptTooLongError(EngineError):
    """The prompt has more tokens than one sequence's context holds; a client mistake (HTTP 400)."""

    def __init__(self, message: str, prompt_tokens: int, max_model_len: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_model_len = max_model_len
        super().__init__(message)


class ClusterError(PykaitoError):
    """The Kubernetes API refused a call or could not be reached."""


class DownloadError(PykaitoError):
    """A model download was refused or failed.

    ``reason`` is one word a status condition can carry: Unauthorized (gated without a token),
    NotFound, DiskFull, ChecksumMismatch, Unreachable or Busy (another pull of the model runs).
    """

    def __init__(self, message: str, reason: str) -> None:
        self.reason = reason
        super().__init__(message)
