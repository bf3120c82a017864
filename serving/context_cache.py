"""Two-stage serving with a cached task context: encode a task's support set once, score many
candidate sets against the cached context, fold new interactions in with ``update_context``.
Works over either client (:mod:`~cmml.serving.grpc_client`, :mod:`~cmml.serving.rest_client`).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Hashable, Mapping

import grpc
import numpy as np

from cmml.serving.errors import ServingError
from cmml.serving.grpc_client import GrpcClient
from cmml.serving.rest_client import RestClient
from cmml.serving.results import Prediction


class StaleContextError(KeyError):
    """The cached context was encoded by a model version that is no longer served: re-encode."""


@dataclasses.dataclass(frozen=True)
class CachedContext:
    context: np.ndarray  # [B, C], the input of ``score``
    state: np.ndarray  # [B, S], the input of ``update_context``
    version: int | None  # model version that produced it (gRPC reports it; None over REST)


class ContextCache:
    """Two-stage serving with a cached task context (an in-process stand-in for a feature store).

    * :meth:`encode` — ``encode_context`` once per user / scenario; keeps ``context`` and ``state``;
    * :meth:`score` — ``score`` for any number of candidate sets against the cached context;
    * :meth:`update` — ``update_context`` with new interactions; replaces the cached entry.

    A context only means something to the model version that encoded it, so calls on a cached
    entry are pinned to that version (when the transport reports it, i.e. over gRPC). Once the
    server has moved to a new version, they raise :class:`StaleContextError` and drop the entry:
    encode the task again. Entries are evicted least-recently-used beyond ``max_entries``.
    Thread-safe.
    """

    def __init__(self, client: GrpcClient | RestClient, max_entries: int = 100_000):
        self.client = client
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[Hashable, CachedContext] = collections.OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: Hashable, entry: CachedContext) -> None:
        """Stores an entry (e.g. one restored from a persistent feature store)."""
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get(self, key: Hashable) -> CachedContext:
        with self._lock:
            if key not in self._entries:
                raise KeyError(f"no cached context for {key!r}: call encode() first")
            self._entries.move_to_end(key)
            return self._entries[key]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def _pinned(
        self, key: Hashable, entry: CachedContext, inputs: Mapping[str, np.ndarray], signature: str
    ) -> Prediction:
        try:
            return self.client.predict(inputs, signature, version=entry.version)
        except ServingError as exc:
            if entry.version is not None and exc.code == grpc.StatusCode.NOT_FOUND:
                with self._lock:
                    self._entries.pop(key, None)
                raise StaleContextError(
                    f"context of {key!r} was encoded by version {entry.version}, which is no longer served: "
                    "encode again"
                ) from None
            raise

    def encode(self, key: Hashable, support: Mapping[str, np.ndarray]) -> np.ndarray:
        """Encodes the support set (``support_*`` inputs) and caches the context. Returns it."""
        result = self.client.predict(support, "encode_context")
        self.put(key, CachedContext(result.outputs["context"], result.outputs["state"], result.version))
        return result.outputs["context"]

    def score(self, key: Hashable, query: Mapping[str, np.ndarray]) -> np.ndarray:
        """Scores candidates (``query_*`` inputs) against the cached context: ``[B, Q]``."""
        entry = self.get(key)
        return self._pinned(key, entry, {"context": entry.context, **query}, "score").outputs["scores"]

    def update(self, key: Hashable, new: Mapping[str, np.ndarray]) -> np.ndarray:
        """Folds new interactions (``new_*`` inputs) into the cached state. Returns the new context."""
        entry = self.get(key)
        result = self._pinned(key, entry, {"state": entry.state, **new}, "update_context")
        self.put(key, CachedContext(result.outputs["context"], result.outputs["state"], entry.version))
        return result.outputs["context"]
