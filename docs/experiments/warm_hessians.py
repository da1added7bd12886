"""The operating point's SQP iterations with the previous step's ``W_k`` shifted or kept at its stage.

The evidence of ``docs/experiments.md``, "Faster learned S_hat", on bags of
the base model (e.g. the sweep's data, ``whatmatters experiment``'s
``data/``). For every step of a bag, both starts come from the same earlier
result (``--stride`` steps before): the plan shifted by ``--stride`` stages,
and the second-order terms either shifted likewise (the old start) or each at
its own stage (``whatmatters.sensitivity.point.warm_start``). Prints one line
per bag and the mean::

    python docs/experiments/warm_hessians.py DATA_DIR [--steps 150] [--skip 30] [--stride 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from whatmatters.data.bags import read_bag_dir
from whatmatters.dynamics.context import history_features, history_windows
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.dynamics.registry import resolve_model
from whatmatters.mpc.config import MpcConfig
from whatmatters.robot.params import load_panda_params
from whatmatters.sensitivity.compute import SensitivityComputer, SensitivityConfig
from whatmatters.sensitivity.point import OperatingPoint, shifted


def _iterations(computer: SensitivityComputer, bag_dir: Path, steps: int, skip: int, stride: int) -> list[tuple[str, float, float]]:
    """(bag, mean iterations with W shifted, with W at its stage) per bag, over steps ``skip..steps - 1``."""
    model = computer.model
    assert isinstance(model, LearnedDynamics)
    episodes, _ = read_bag_dir(bag_dir)
    rows = []
    for ep in episodes:
        n = min(steps, len(ep.tau))
        feats = history_features(model.nominal, ep.x[:, :7], ep.x[:, 7:], ep.tau, ep.dt)
        with torch.no_grad():
            contexts = model.encode(history_windows(feats, ep.x[0], model.cfg.window)[:n]).numpy()
        weights = model.parameter_values()[: model.n_params - contexts.shape[1]]
        points: list[OperatingPoint] = []
        moved, kept = [], []
        for t in range(n):
            params = np.concatenate([weights, contexts[t]])
            if t < stride:
                points.append(computer.operating_point(ep.x[t], ep.x_ref_horizon[t], params))
                continue
            earlier = points[t - stride]
            assert earlier.kkt is not None and earlier.kkt.stage_hessians is not None
            x_init, u_init = shifted(earlier.x, earlier.u, stride)
            w = earlier.kkt.stage_hessians
            w_moved = np.concatenate([w[stride:], np.repeat(w[-1:], stride, axis=0)])
            point = computer.operating_point(ep.x[t], ep.x_ref_horizon[t], params, x_init, u_init, w)
            if t >= skip:
                kept.append(point.sqp_iter)
                moved.append(computer.operating_point(ep.x[t], ep.x_ref_horizon[t], params, x_init, u_init, w_moved).sqp_iter)
            points.append(point)
        rows.append((ep.path.name, float(np.mean(moved)), float(np.mean(kept))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder of bags of the base model")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--skip", type=int, default=30, help="first steps left out (the start-up)")
    parser.add_argument("--stride", type=int, default=1, help="steps from the earlier result (2: the logger's two lanes)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = SensitivityConfig.from_yaml()
    computer = SensitivityComputer(resolve_model("base"), MpcConfig.from_yaml(), load_panda_params().torque_limits, cfg)
    rows = _iterations(computer, args.data, args.steps, args.skip, args.stride)
    print("| bag | W shifted | W at its stage |\n|---|---|---|")
    for name, moved, kept in rows:
        print(f"| {name} | {moved:.2f} | {kept:.2f} |")
    print(f"| mean | {np.mean([r[1] for r in rows]):.2f} | {np.mean([r[2] for r in rows]):.2f} |")


if __name__ == "__main__":
    main()
