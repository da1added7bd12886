"""How equal the `ours` weights are for several eps (docs/experiments.md, 5: eps of the sensitivities).

Recomputes S_hat for the first steps of some episodes with each eps and
prints one markdown row per eps: Kish's effective sample size over M and the
mean cosine of each window's S with the mean S (``weight_statistics``) for
p = 1, 4, 12 (position objective, S_{t,k} = abs(S_hat of step t)[k]), and the
coefficient of variation of abs(dJ/du0)_eff per joint. Training data only.

    .venv/bin/python docs/analysis/eps_weights.py --bags runs/probe/data/env_0000 runs/probe/data/env_0005
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from whatmatters.data.bags import read_episode
from whatmatters.dynamics.registry import resolve_model
from whatmatters.mpc.config import MpcConfig
from whatmatters.robot.params import load_panda_params
from whatmatters.sensitivity.batch import compute_episode
from whatmatters.sensitivity.compute import SensitivityComputer, SensitivityConfig
from whatmatters.train.weighting import weight_statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bags", nargs="+", required=True, help="episode bags (e.g. a sweep's data folder's env_*)")
    parser.add_argument("--steps", type=int, default=250, help="first steps of each episode")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.5, 5.0], help="eps values, Nm")
    parser.add_argument("--model", default="base")
    args = parser.parse_args()
    model = resolve_model(args.model)
    mpc, limits = MpcConfig.from_yaml(), load_panda_params().torque_limits
    print("| eps, Nm | ESS / M at p = 1 / 4 / 12 | cosine of S with the mean S, p = 1 / 4 / 12 | coefficient of variation of abs(dJ/du0)_eff, joints 1-7 |")
    print("|---|---|---|---|")
    for eps in args.eps:
        computer = SensitivityComputer(model, mpc, limits, replace(SensitivityConfig.from_yaml(), eps=eps))
        s_all, eff_all = [], []
        for bag in args.bags:
            out = compute_episode(computer, read_episode(bag), args.steps)
            s_all.append(out["s_hat"][out["ok"]])
            eff_all.append(out["dj_du0_eff"][out["ok"]])
        s, eff = np.abs(np.concatenate(s_all)), np.concatenate(eff_all)
        stats = [weight_statistics(s[:, :p, :7]) for p in (1, 4, 12)]
        ess = " / ".join(f"{st['ess_fraction']:.3f}" for st in stats)
        cos = " / ".join(f"{st['cosine_to_mean']:.3f}" for st in stats)
        cv = " ".join(f"{v:.2f}" for v in eff.std(0) / eff.mean(0))
        print(f"| {eps:g} | {ess} | {cos} | {cv} |", flush=True)


if __name__ == "__main__":
    main()
