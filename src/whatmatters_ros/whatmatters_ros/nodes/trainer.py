"""``trainer``: fine-tunes the MPC's model on the recorded bags and hot-swaps it.

Polls ``bag_dir`` every ``poll_period`` s for closed bags (folders with
``metadata.yaml``; a bag still being written has none). When at least
``min_bags`` new ones are there, a round starts in a worker thread:
:func:`whatmatters.train.job.run_job` (the core's dataset builder, windows,
weighting and :func:`whatmatters.train.finetune.finetune`) on every closed bag
seen so far, from the ``base`` checkpoint; a damaged bag is skipped with a
warning naming it and never retried. S_hat for ``ours`` / ``ours_avg`` comes
from each bag's ``sensitivity.npz`` sidecar or, without one, from its
``/mpc/sensitivity`` topic. The checkpoint is written atomically to
``checkpoint``; then the trainer sets the MPC's ``model`` parameter to that
path (``<mpc_node>/set_parameters``, rcl_interfaces/SetParameters) and calls
``<mpc_node>/reload_model`` (std_srvs/Trigger). The sensitivity logger follows
the MPC's new model version by itself.

Progress: logging and ``~/status`` (std_msgs/String, one JSON object:
``state`` in waiting / training / reloading / done / error, ``round``,
``bags``, ``skipped``, ``epoch``, ``train_loss``, ``checkpoint``, ``message``).
After ``max_rounds`` rounds (0: never) the node stops.

``system: car`` trains the race car's model instead: the car's job
(:func:`whatmatters.car.job.run_car_job`: the bags of ``car_logger``, the
packaged car model as ``base``, the settings of ``config/car/experiment.yaml``
where ``epochs`` and ``lr`` are 0), reloading ``mpc_node`` (set it to ``/car_mpc``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.task import Future
from std_msgs.msg import String
from std_srvs.srv import Trigger

from whatmatters.car.experiment import CarExperimentConfig
from whatmatters.car.job import CarFinetuneJob, run_car_job
from whatmatters.data.bags import BagError, find_bags
from whatmatters.errors import WhatmattersError
from whatmatters.train.finetune import FinetuneConfig
from whatmatters.train.job import FinetuneJob, run_job
from whatmatters.train.weighting import WEIGHTINGS
from whatmatters_ros.params import NodeParams, ParameterError, declare_parameters, param
from whatmatters_ros.runtime import exit_with, run_node

__all__ = ["TrainerNode", "TrainerParams", "main"]


@dataclass(frozen=True)
class TrainerParams(NodeParams):
    """Parameters of ``trainer`` (``config/trainer.yaml``)."""

    node_name: ClassVar[str] = "trainer"

    system: str = param("arm", "the robot: arm (the Panda's job and model) or car (the race car's)", choices=("arm", "car"))
    bag_dir: str = param("runs/ros/bags", "folder the logger records into (watched)")
    checkpoint: str = param("runs/ros/model.pt", "fine-tuned checkpoint, written atomically (training state in <checkpoint>.runs/)")
    base: str = param("base", "starting checkpoint of every round: base (packaged) or a path")
    weighting: str = param("ours", "loss weighting", choices=WEIGHTINGS)
    rollout: int = param(4, "rollout length p, control steps", lo=1, hi=12)
    epochs: int = param(0, "epochs per round (0: config/finetune.yaml)", lo=0, hi=10000)
    lr: float = param(0.0, "learning rate (0: config/finetune.yaml)", lo=0.0, hi=1.0)
    seed: int = param(0, "seed of the data order", lo=0)
    min_bags: int = param(1, "new closed bags needed to start a round", lo=1, hi=100000)
    poll_period: float = param(2.0, "bag folder polling period, s (wall)", lo=0.05, hi=3600.0)
    max_rounds: int = param(0, "stop after this many rounds (0: run until shut down)", lo=0, hi=100000)
    mpc_node: str = param("/mpc_controller", "MPC node whose model is set and reloaded ('' : none)")
    service_timeout: float = param(30.0, "wait for the MPC's services, s", lo=0.1, hi=3600.0)


class TrainerNode(Node):
    """The trainer node; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("trainer", **kwargs)
        self.p = declare_parameters(self, TrainerParams)
        cfg = FinetuneConfig.from_yaml()
        cfg = replace(cfg, epochs=self.p.epochs) if self.p.epochs else cfg
        cfg = replace(cfg, lr=self.p.lr) if self.p.lr else cfg
        try:
            if self.p.system == "car":
                self.job: Any = CarFinetuneJob(self.p.base, self.p.weighting, self.p.rollout, self.p.seed, self.p.epochs, self.p.lr)
                self.total_epochs = self.p.epochs or CarExperimentConfig.from_yaml().finetune_epochs
            else:
                self.total_epochs = cfg.epochs
                self.job = FinetuneJob(base=self.p.base, weighting=self.p.weighting, p=self.p.rollout, seed=self.p.seed, cfg=cfg)
            if self.p.base != "base" and not Path(self.p.base).is_file():
                raise ParameterError(f"node 'trainer': parameter 'base' = {self.p.base!r}: no such checkpoint")
        except WhatmattersError as exc:
            raise ParameterError(f"node 'trainer': {exc}") from exc
        self.done = False
        self.used: set[Path] = set()  # bags trained on or skipped
        self.rounds = 0
        self.busy = False
        self.status: dict[str, Any] = {"state": "waiting", "round": 0, "bags": 0, "skipped": [], "checkpoint": self.p.checkpoint}
        self.result: Future | None = None
        self.pending_swap: tuple[str, float] | None = None  # (checkpoint, monotonic deadline) while waiting for the MPC
        self.pub_status = self.create_publisher(String, "~/status", 10)
        node = self.p.mpc_node.rstrip("/")
        self.set_params = self.create_client(SetParameters, f"{node}/set_parameters") if node else None
        self.reload = self.create_client(Trigger, f"{node}/reload_model") if node else None
        self.create_timer(self.p.poll_period, self._poll)
        self.get_logger().info(
            f"watching {Path(self.p.bag_dir).resolve()} ({self.p.system}): {self.p.weighting}, p = {self.p.rollout}, "
            f"{self.total_epochs} epochs, "
            f"from {self.p.base} to {self.p.checkpoint}, reloading {node or 'nothing'}"
        )

    # ----------------------------------------------------------------- status
    def _report(self, state: str, message: str, **values: Any) -> None:
        self.status.update(state=state, message=message, **values)
        self.pub_status.publish(String(data=json.dumps(self.status)))
        # two call sites: rclpy refuses to log from one line at another severity than before (ValueError)
        if state == "error":
            self.get_logger().error(f"[{state}] {message}")
        else:
            self.get_logger().info(f"[{state}] {message}")

    # ------------------------------------------------------------------ rounds
    def _poll(self) -> None:
        if self.result is not None and self.result.done():
            self._trained(self.result.result())
        elif self.pending_swap is not None:
            self._try_swap()
        if self.busy or self.done:
            return
        try:
            closed = find_bags(self.p.bag_dir, complete_only=True)
        except BagError:
            closed = []
        new = [b for b in closed if b not in self.used]
        if len(new) < self.p.min_bags:
            self._report("waiting", f"{len(new)} new closed bags of {self.p.min_bags} needed", bags=len(closed))
            return
        self.busy, self.rounds = True, self.rounds + 1
        bags = [b for b in closed if b not in {Path(s) for s in self.status["skipped"]}]
        self.used.update(new)
        self._report("training", f"round {self.rounds}: {len(bags)} bags ({len(new)} new)", round=self.rounds, bags=len(bags), epoch=0)
        self.result = Future()
        threading.Thread(target=self._train, args=(bags, self.result), name="train", daemon=True).start()

    def _train(self, bags: list[Path], done: Future) -> None:
        """Worker thread: one fine-tuning round (the core's job)."""

        def progress(_model: Any, epoch: int) -> dict[str, Any]:
            self._report("training", f"round {self.rounds}: epoch {epoch} of {self.total_epochs} done", epoch=epoch)
            return {}

        run_dir = Path(self.p.checkpoint).with_name(Path(self.p.checkpoint).name + ".runs") / f"round_{self.rounds:03d}"
        try:
            run = run_car_job if self.p.system == "car" else run_job
            done.set_result(run(self.job, self.p.bag_dir, self.p.checkpoint, bags=bags, run_dir=run_dir, on_epoch=progress))
        except (WhatmattersError, FloatingPointError, OSError) as exc:
            done.set_result(exc)

    def _trained(self, result: dict[str, Any] | Exception) -> None:
        self.result = None
        if isinstance(result, Exception):
            self.busy = False
            self._report("error", f"round {self.rounds} failed: {result}")
            self._maybe_finish()
            return
        for bag in result["skipped"]:
            self.get_logger().warning(f"skipped damaged bag {bag}")
        skipped = sorted(set(self.status["skipped"]) | set(result["skipped"]))
        loss = result["train_loss"][-1] if result["train_loss"] else None
        self._report("reloading", f"round {self.rounds}: {result['windows']} windows, loss {loss}; checkpoint {result['checkpoint']}",
                     skipped=skipped, train_loss=loss, windows=result["windows"], wall_s=result["wall_s"])
        self._swap(result["checkpoint"])

    # ----------------------------------------------------------------- reload
    def _swap(self, checkpoint: str) -> None:
        if self.set_params is None or self.reload is None:
            self._finished(True, "no MPC to reload")
            return
        self.pending_swap = (checkpoint, time.monotonic() + self.p.service_timeout)
        self._try_swap()

    def _try_swap(self) -> None:
        """Sends the new model once the MPC's services are there (checked from the poll timer: the executor never blocks)."""
        if self.pending_swap is None or self.set_params is None or self.reload is None:
            return
        checkpoint, deadline = self.pending_swap
        if not (self.set_params.service_is_ready() and self.reload.service_is_ready()):
            if time.monotonic() > deadline:
                self.pending_swap = None
                self._finished(False, f"{self.p.mpc_node} services not available within {self.p.service_timeout:g} s")
            return
        self.pending_swap = None
        request = SetParameters.Request(parameters=[Parameter("model", value=str(Path(checkpoint).resolve())).to_parameter_msg()])
        self.set_params.call_async(request).add_done_callback(self._parameter_set)

    def _parameter_set(self, future: Future) -> None:
        results = future.result().results if future.result() is not None else []
        if not results or not results[0].successful:
            self._finished(False, f"{self.p.mpc_node} refused the model parameter: {results[0].reason if results else 'no answer'}")
            return
        self.reload.call_async(Trigger.Request()).add_done_callback(self._reloaded)  # type: ignore[union-attr]

    def _reloaded(self, future: Future) -> None:
        response = future.result()
        ok = response is not None and response.success
        self._finished(ok, response.message if response is not None else "reload_model gave no answer")

    def _finished(self, ok: bool, message: str) -> None:
        self.busy = False
        self._report("done" if ok else "error", f"round {self.rounds}: {message}", reloaded=ok)
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.p.max_rounds and self.rounds >= self.p.max_rounds:
            self.done = True


def main(args: list[str] | None = None) -> None:
    """Console script ``trainer``."""
    exit_with(run_node(TrainerNode, args))


if __name__ == "__main__":
    main()
