"""The trial of released du0/de rows at torque bounds against eq. 5 as stored (docs/experiments.md, 11).

Reads two sweeps' finished runs: ``--trial`` (``ours_action: bound_relaxed``,
the validation set) and ``--stored`` (the main sweep: ``ours`` as stored), and
prints, per p, the environment-paired ratio of the trial's ``ours`` to the
stored ``ours`` at each run's selected checkpoint on the validation
environments (seeds paired by the bootstrap, 95 % interval), on all of them,
on the torque-bound ones and on the others, then the rule's verdict. The
evaluation environments are not read.

    .venv/bin/python docs/analysis/bound_relaxed.py --trial runs/bound_relaxed --stored runs/experiment
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from whatmatters.experiment.bounds import selected_validation_costs
from whatmatters.experiment.floor import BOUND_THRESHOLD
from whatmatters.experiment.statistics import paired_ratio


def _costs(folder: Path, p: int) -> list[dict[str, float]]:
    runs = [json.loads(f.read_text()) for f in sorted(folder.glob(f"runs/ours_p{p}_s*/result.json"))]
    return [c for c in (selected_validation_costs(r) for r in sorted(runs, key=lambda r: r["seed"])) if c]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trial", type=Path, required=True, help="output folder of the trial sweep")
    parser.add_argument("--stored", type=Path, required=True, help="output folder of the main sweep")
    parser.add_argument("--rollouts", type=int, nargs="+", default=[1, 4, 12])
    args = parser.parse_args()
    bound_share = json.loads((args.stored / "exact_validation.json").read_text())["bound_share_per_env"]
    print("| p | seeds (trial / stored) | all validation environments | torque-bound | the others |")
    print("|---|---|---|---|---|")
    below, at_most_one = 0, True
    for p in args.rollouts:
        trial, stored = _costs(args.trial, p), _costs(args.stored, p)
        if not trial or not stored:
            print(f"| {p} | — | runs missing (trial {len(trial)}, stored {len(stored)}) | | |")
            at_most_one = False
            continue
        envs = sorted(set.intersection(*(set(c) for c in trial + stored)))
        cells = []
        for group in (envs, [e for e in envs if bound_share[e] > BOUND_THRESHOLD], [e for e in envs if bound_share[e] <= BOUND_THRESHOLD]):
            if not group:
                cells.append("—")
                continue
            c = paired_ratio(np.array([[t[e] for e in group] for t in trial]), np.array([[s[e] for e in group] for s in stored]))
            cells.append(f"{c.ratio:.3f} [{c.low:.3f}, {c.high:.3f}], {c.wins} of {c.envs}")
            if group is envs:
                below += c.high < 1.0
                at_most_one &= c.ratio <= 1.0
        print(f"| {p} | {len(trial)} / {len(stored)} | " + " | ".join(cells) + " |")
    adopt = at_most_one and below >= 2
    print(f"\nRule (ratio <= 1 at every p and interval below 1 at two or more p): {'adopt bound_relaxed' if adopt else 'keep eq. 5 as stored'}")


if __name__ == "__main__":
    main()
