"""The car experiment's report: the comparison table and the Fig. 3-style figure.

Fig. 3 (the paper's outlook): S_hat of the base model's MPC over the horizon
and the states at several positions along a lap, beside the car's path on
the track. Each panel is ``|S_hat|`` of one control step (N horizon steps x
the states), scaled by that step's largest entry, so the panels show where
the importance sits, not how large it is (the scale is printed above each).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from whatmatters.car.data import CarRecord
from whatmatters.car.model import plant_pose
from whatmatters.car.raceline import RacingLine
from whatmatters.car.track import Track
from whatmatters.io import atomic_write_bytes, atomic_write_text

__all__ = ["fig3_positions", "plot_fig3", "results_markdown", "write_car_report"]

#: States shown in Fig. 3 (s, delta and a carry almost nothing: the residual does not act on them).
FIG3_STATES = (1, 2, 3, 4, 5)


def fig3_positions(rec: CarRecord, count: int = 4) -> list[int]:
    """Steps of the first lap at evenly spaced arc lengths (after the first tenth of a lap), with converged S_hat."""
    assert rec.s_hat is not None
    s = rec.x[:-1, 0] - rec.x[0, 0]
    lap = s.max()
    ok = np.all(np.isfinite(rec.s_hat), axis=(1, 2))
    out = []
    for target in np.linspace(0.1, 0.85, count) * lap:
        candidates = np.nonzero(ok & (s >= target))[0]
        if candidates.size:
            out.append(int(candidates[0]))
    return out


def plot_fig3(rec: CarRecord, track: Track, labels: tuple[str, ...], steps: list[int]) -> bytes:
    """The figure (module docstring) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert rec.s_hat is not None
    fig = plt.figure(figsize=(4.2 + 2.4 * len(steps), 4.2))
    grid = fig.add_gridspec(1, len(steps) + 2, width_ratios=[2.2, 0.1] + [1.0] * len(steps))
    ax = fig.add_subplot(grid[0, 0])
    s = np.linspace(0.0, track.length, 600)
    for n in (-track.half_width, 0.0, track.half_width):
        x, y, _ = track.from_frenet(s, np.full_like(s, n), np.zeros_like(s))
        ax.plot(x, y, color="0.6" if n else "0.85", lw=1.0, ls="-" if n else "--")
    path = plant_pose(track, np.column_stack([np.mod(rec.x[:, 0], track.length), rec.x[:, 1:]]))
    ax.plot(path[:, 0], path[:, 1], color="#1f77b4", lw=1.2)
    for i, k in enumerate(steps):
        ax.annotate(chr(65 + i), path[k, :2], xytext=(4, 4), textcoords="offset points", fontsize=11, weight="bold")
        ax.plot(*path[k, :2], "o", color="#d62728", ms=5)
    ax.set_aspect("equal")
    ax.set_title("path of the base model's MPC")
    ax.axis("off")
    for i, k in enumerate(steps):
        a = fig.add_subplot(grid[0, i + 2])
        values = np.abs(rec.s_hat[k][:, list(FIG3_STATES)])
        scale = values.max()
        a.imshow(values.T / max(scale, 1e-300), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, origin="upper")
        a.set_yticks(range(len(FIG3_STATES)))
        a.set_yticklabels([labels[j] for j in FIG3_STATES] if i == 0 else [])
        a.set_xlabel("horizon step")
        a.set_title(f"{chr(65 + i)}: s = {np.mod(rec.x[k, 0], track.length):.1f} m\nmax {scale:.2g}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _cell(entry: dict[str, float], scale: float = 1.0, digits: int = 2) -> str:
    return f"{scale * entry['mean']:.{digits}f} ± {scale * entry['std']:.{digits}f}"


def results_markdown(report: dict[str, Any], weightings: tuple[str, ...], lengths: tuple[int, ...], command: str) -> str:
    """The comparison, one table per rollout length, as markdown (columns: :func:`~whatmatters.car.sweep.summary`)."""
    table = report["summary"]
    n_env = len(report["base"])
    lines = [f"Command: `{command}`", ""]
    for p in lengths:
        lines += [
            f"**p = {int(p)}** (mean ± std over the seeds; each run against `stand` of its seed on the same {n_env} environments)",
            "",
            "| weighting | J, ratio of means, % | J, median of the per-environment ratios, % | environments won | lap time, % | beyond the border, s | environments with failed solves |",
            "|---|---|---|---|---|---|---|",
        ]
        for w in weightings:
            row = table.get(f"{w}/p{int(p)}")
            if row is None:
                continue
            lines.append(
                f"| {w} | {_cell(row['j_track'], 100, 1)} | {_cell(row['j_paired_median'], 100, 1)} | {_cell(row['envs_won'], 1, 1)} | "
                f"{_cell(row['lap_time'], 100, 1)} | {_cell(row['off_track'])} | {_cell(row['failed_envs'], 1, 1)} |"
            )
        lines.append("")
    for name in ("nominal", "base"):
        per_env = report[name]
        laps = [e["lap_time"] for e in per_env if np.isfinite(e["lap_time"])]
        lines.append(
            f"{name} model: J {np.mean([e['j_track'] for e in per_env]):.4g} (median {np.median([e['j_track'] for e in per_env]):.4g}), "
            f"lap time {np.mean(laps) if laps else float('nan'):.3f} s ({len(laps)} of {len(per_env)} laps finished), "
            f"beyond the border {np.mean([e['off_track'] for e in per_env]):.2f} s (means over the {len(per_env)} environments)  "
        )
    return "\n".join(lines) + "\n"


def write_car_report(
    report: dict[str, Any], rec: CarRecord, track: Track, line: RacingLine, labels: tuple[str, ...], cfg: Any, command: str, folder: Path
) -> list[Path]:
    """Writes ``car_results.md``, ``car_results.json``, ``fig3.png`` and the track and racing line
    the sweep ran on (``track.csv``, ``racing_line.csv``) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    steps = fig3_positions(rec)
    md = results_markdown(report, tuple(cfg.weightings), tuple(cfg.rollout_lengths), command)
    paths = [folder / "car_results.md", folder / "car_results.json", folder / "fig3.png", folder / "track.csv", folder / "racing_line.csv"]
    atomic_write_text(md, paths[0])
    atomic_write_text(_json({**report, "fig3_steps": steps, "fig3_episode": rec.path.name}), paths[1])
    atomic_write_bytes(plot_fig3(rec, track, labels, steps), paths[2])
    track.save(paths[3])
    line.save(paths[4])
    return paths


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=float)

