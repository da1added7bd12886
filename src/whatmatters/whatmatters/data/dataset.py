"""Training data from episode bags: transitions with their history windows.

For every recorded control step t of every episode the dataset holds the
state x_t, the applied torque u_t, the next state x_{t+1}, the history window
W_t (transitions t-W..t-1, see :mod:`whatmatters.dynamics.context`) and the
environment seed / step index (for multi-step windows and analysis).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from whatmatters.data.bags import SENSITIVITY, EpisodeRecord, find_bags, read_bags
from whatmatters.dynamics.context import history_features, history_windows
from whatmatters.dynamics.rigid_body import RigidBodyDynamics

__all__ = ["ACTION_WEIGHTS", "TransitionDataset", "episode_sensitivities", "load_transitions", "per_joint_sensitivities"]

ACTION_WEIGHTS = ("effective", "per_joint", "bound_relaxed")

log = logging.getLogger(__name__)


@dataclass
class TransitionDataset:
    """All transitions of a set of episodes, as flat arrays (S samples).

    Attributes:
        x: States x_t, (S, 14).
        u: Applied torques u_t, Nm, (S, 7).
        x_next: States x_{t+1}, (S, 14).
        windows: History windows, (S, W, 21).
        episode: Episode index per sample, (S,).
        step: Step index t within its episode, (S,).
        dt: Control period, s.
        sources: The bag of each episode.
        s_hat: Task sensitivities per sample from the bags' sidecars or
            their ``/mpc/sensitivity`` topic, (S, N, nx), NaN where a sample
            has none (None if not loaded).
        skipped: ``(bag, reason)`` of every damaged bag left out.
    """

    x: np.ndarray
    u: np.ndarray
    x_next: np.ndarray
    windows: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    dt: float
    sources: list[Path]
    s_hat: np.ndarray | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, mask: np.ndarray) -> TransitionDataset:
        """The samples where ``mask`` is true."""
        s_hat = None if self.s_hat is None else self.s_hat[mask]
        return TransitionDataset(
            self.x[mask], self.u[mask], self.x_next[mask], self.windows[mask], self.episode[mask], self.step[mask], self.dt, self.sources, s_hat,
            self.skipped,
        )

    def split_by_episode(self, fraction: float, seed: int) -> tuple[TransitionDataset, TransitionDataset]:
        """Splits whole episodes: ``fraction`` of them (at least one if > 0) into the second part."""
        rng = np.random.default_rng(seed)
        episodes = np.unique(self.episode)
        n_hold = max(1, int(round(fraction * len(episodes)))) if fraction > 0 and len(episodes) > 1 else 0
        held = set(rng.choice(episodes, size=n_hold, replace=False).tolist()) if n_hold else set()
        mask = np.array([e in held for e in self.episode])
        return self.subset(~mask), self.subset(mask)


def transitions_from_episodes(episodes: list[EpisodeRecord], nominal: RigidBodyDynamics, window: int) -> TransitionDataset:
    """Builds the flat transition arrays.

    Raises:
        ValueError: If the episodes have different control periods or none is given.
    """
    if not episodes:
        raise ValueError("no episodes to build a dataset from")
    dts = {round(ep.dt, 9) for ep in episodes}
    if len(dts) != 1:
        raise ValueError(f"episodes have different control periods: {sorted(dts)}")
    dt = dts.pop()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("x", "u", "x_next", "windows", "episode", "step")}
    for i, ep in enumerate(episodes):
        feats = history_features(nominal, ep.x[:, :7], ep.x[:, 7:], ep.tau, dt)
        steps = len(ep.tau)
        parts["x"].append(ep.x[:-1])
        parts["u"].append(ep.tau)
        parts["x_next"].append(ep.x[1:])
        parts["windows"].append(history_windows(feats, ep.x[0], window))
        parts["episode"].append(np.full(steps, i))
        parts["step"].append(np.arange(steps))
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    return TransitionDataset(**arrays, dt=dt, sources=[ep.path for ep in episodes])


def episode_sensitivities(ep: EpisodeRecord) -> np.ndarray:
    """S_hat of every step of an episode, (T, N, nx), NaN where a step has none.

    From the bag's ``sensitivity.npz`` sidecar (``whatmatters sensitivities``)
    if there is one, else from the bag's ``/mpc/sensitivity`` topic (recorded
    online by the ROS logger; ``ep`` must have been read with that topic).

    Raises:
        ValueError: If the bag has neither (the message names it).
    """
    steps = len(ep.tau)
    path = ep.path / "sensitivity.npz"
    if path.is_file():
        with np.load(path) as side:
            s_hat = side["s_hat"]
        full = np.full((steps, *s_hat.shape[1:]), np.nan)
        full[: len(s_hat)] = s_hat[:steps]
        return full
    if SENSITIVITY in ep.extra:
        values, index = ep.extra[SENSITIVITY], ep.extra_steps[SENSITIVITY]
        full = np.full((steps, *values.shape[1:]), np.nan)
        inside = (index >= 0) & (index < steps)  # the sample of the last state answers no recorded step
        full[index[inside]] = values[inside]
        return full
    raise ValueError(f"bag {ep.path} has no {path.name} and no {SENSITIVITY} topic; run 'whatmatters sensitivities' on it")


def _episode_factors(ep: EpisodeRecord, du0_key: str = "du0_de") -> tuple[np.ndarray, np.ndarray]:
    """|dJ/du0|_eff (T, nu) and du0/de (T, nu, N, nx; ``du0_de_relaxed``: its bound rows released) of an
    episode from its sidecar, NaN where missing."""
    path = ep.path / "sensitivity.npz"
    if not path.is_file():
        what = "per-joint action weights" if du0_key == "du0_de" else "released bound rows (bound_relaxed)"
        raise ValueError(f"bag {ep.path} has no {path.name}: {what} need the two factors it stores")
    steps = len(ep.tau)
    with np.load(path) as side:
        if du0_key not in side.files:
            raise ValueError(f"{path} has no {du0_key} (made by an older version): compute the bag's sensitivities again ('whatmatters sensitivities')")
        eff, du0 = side["dj_du0_eff"], side[du0_key]
    full_eff, full_du0 = np.full((steps, *eff.shape[1:]), np.nan), np.full((steps, *du0.shape[1:]), np.nan)
    full_eff[: len(eff)], full_du0[: len(du0)] = eff[:steps], du0[:steps]
    return full_eff, full_du0


def per_joint_sensitivities(dj_du0_eff: np.ndarray, du0_de: np.ndarray) -> np.ndarray:
    """S_hat with each joint's |dJ/du0_j|_eff divided by its dataset mean (a remedy, not eq. 5).

    ``S_hat_t = sum_j (|dJ/du0_j|_eff,t / mean_t |dJ/du0_j|_eff,t) du0_j/de_t``:
    every joint's action counts equally on average, so one joint with a large
    effective sensitivity does not set the pattern alone.

    Args:
        dj_du0_eff: (S, nu), NaN rows for samples without sensitivities.
        du0_de: (S, nu, N, nx).

    Returns:
        (S, N, nx), NaN where a sample has none.

    Raises:
        ValueError: If a joint's mean effective sensitivity is not positive.
    """
    mean = np.nanmean(dj_du0_eff, axis=0)
    if not np.all(mean > 0):
        raise ValueError(f"per-joint action weights need a positive mean |dJ/du0|_eff for every joint, got {mean}")
    return np.einsum("sj,sjkn->skn", dj_du0_eff / mean, du0_de)


def load_transitions(
    folder: str | Path,
    nominal: RigidBodyDynamics,
    window: int,
    sensitivities: bool = False,
    bags: Sequence[str | Path] | None = None,
    action_weights: str = "effective",
) -> TransitionDataset:
    """Reads every bag in a folder (damaged ones skipped with a warning) into transitions.

    Args:
        folder: Folder of bags (only named in messages when ``bags`` is given).
        nominal: Nominal model (history features).
        window: History window W.
        sensitivities: Also load each bag's S_hat into ``s_hat``
            (:func:`episode_sensitivities`: sidecar, else the bag's topic;
            steps without one are NaN).
        bags: Read these bag folders instead of every bag below ``folder``.
        action_weights: ``effective`` (S_hat as stored, eq. 5),
            ``per_joint`` (:func:`per_joint_sensitivities`, from the sidecars' factors) or
            ``bound_relaxed`` (eq. 5 with du0/de's rows at an active bound of u_0 taken with
            that bound released: ``|dJ/du0|_eff @ du0_de_relaxed`` from the sidecars).

    Raises:
        ValueError: If no bag is readable, or ``sensitivities`` is asked for and
            a bag has neither a sidecar nor the topic, or ``per_joint`` for a bag
            without a sidecar (the message names it).
    """
    if action_weights not in ACTION_WEIGHTS:
        raise ValueError(f"action_weights must be one of {', '.join(ACTION_WEIGHTS)}, got {action_weights!r}")
    paths = [Path(b) for b in bags] if bags is not None else find_bags(folder)
    episodes, skipped = read_bags(paths, (SENSITIVITY,) if sensitivities else ())
    if skipped:
        log.warning("%d of %d bags skipped in %s: %s", len(skipped), len(paths), folder, ", ".join(str(b) for b, _ in skipped))
    if not episodes:
        raise ValueError(f"no readable bag in {folder}")
    data = transitions_from_episodes(episodes, nominal, window)
    data.skipped = skipped
    if sensitivities and action_weights == "per_joint":
        factors = [_episode_factors(ep) for ep in episodes]
        data.s_hat = per_joint_sensitivities(np.concatenate([f[0] for f in factors]), np.concatenate([f[1] for f in factors]))
    elif sensitivities and action_weights == "bound_relaxed":
        factors = [_episode_factors(ep, "du0_de_relaxed") for ep in episodes]
        data.s_hat = np.einsum("sj,sjkn->skn", np.concatenate([f[0] for f in factors]), np.concatenate([f[1] for f in factors]))
    elif sensitivities:
        data.s_hat = np.concatenate([episode_sensitivities(ep) for ep in episodes])
    return data
