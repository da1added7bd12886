"""Following a running MPC's model: the loggers compute S_hat with the model the MPC runs.

An MPC node reports ``model`` and ``model_version`` on ``/diagnostics``
(every few steps and in a heartbeat). :class:`ModelFollower` watches those
reports; a version newer than the one in use is loaded in a thread (a
model and its sensitivity computers can take seconds), and the node takes it
over between two control steps (:meth:`ModelFollower.take`). A model that
cannot be loaded is reported and the running one stays. No ROS here: the
node passes the statuses of its ``/diagnostics`` messages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["ModelFollower"]


class ModelFollower:
    """Loads the newer models an MPC reports.

    Args:
        mpc_name: The MPC's diagnostic status name (``mpc_controller``, ``car_mpc``).
        load: Builds what the node needs from a model spec (e.g. the model and its computers); may raise.
        on_error: Called with a message when ``load`` raised.
        version: The version in use at the start.
    """

    def __init__(self, mpc_name: str, load: Callable[[str], Any], on_error: Callable[[str], None], version: int = 1) -> None:
        self.mpc_name, self._load, self._on_error = mpc_name, load, on_error
        self.version = version
        self._loading: tuple[int, Any] | None = None  # (version, payload once loaded, else None)
        self._lock = threading.Lock()

    def on_statuses(self, statuses: Iterable[Any]) -> None:
        """The statuses of a ``/diagnostics`` message (``name``, ``values`` as key/value pairs)."""
        for status in statuses:
            if status.name != self.mpc_name:
                continue
            values = {kv.key: kv.value for kv in status.values}
            version = int(values.get("model_version", 0))
            with self._lock:
                if version <= self.version or (self._loading is not None and self._loading[0] >= version):
                    continue
                self._loading = (version, None)
            threading.Thread(target=self._run, args=(version, values.get("model", "")), name="reload", daemon=True).start()

    def _run(self, version: int, spec: str) -> None:
        try:
            payload = self._load(spec)
        except Exception as exc:  # noqa: BLE001 - whatever building it raised (also in a child process): the running model stays
            with self._lock:
                if self._loading is not None and self._loading[0] == version:
                    self._loading = None
            self._on_error(f"cannot follow the MPC's model version {version} ('{spec}'): {exc}")
            return
        with self._lock:
            if self._loading is not None and self._loading[0] == version:
                self._loading = (version, payload)

    def take(self) -> tuple[int, Any] | None:
        """The newly loaded ``(version, payload)``, once (None while nothing new is ready)."""
        with self._lock:
            if self._loading is None or self._loading[1] is None:
                return None
            loaded, self._loading = self._loading, None
            self.version = loaded[0]
            return loaded
