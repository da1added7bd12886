"""The context encoder's numpy path (the control loop's) equals its torch form."""

from __future__ import annotations

import numpy as np
import torch
from whatmatters.dynamics.context import ContextEncoder, ContextTracker


def _encoder(seed: int) -> ContextEncoder:
    torch.manual_seed(seed)
    enc = ContextEncoder(10, 32).double()
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.3 * torch.randn_like(p))
    enc.set_normalization(np.linspace(-1.0, 1.0, 21), np.linspace(0.5, 2.0, 21))
    return enc


def test_numpy_forward_equals_torch(rng):
    enc = _encoder(0)
    windows = rng.normal(size=(4, 15, 21)) * 2.0
    with torch.no_grad():
        ref = enc(torch.as_tensor(windows)).numpy()
    for b in range(4):
        np.testing.assert_allclose(enc.forward_numpy(windows[b]), ref[b], rtol=0, atol=1e-12 * np.abs(ref).max())


def test_numpy_forward_sees_in_place_weight_updates(rng):
    enc = _encoder(1)
    window = rng.normal(size=(15, 21))
    before = enc.forward_numpy(window)
    with torch.no_grad():
        enc.lstm.weight_hh_l0.mul_(1.5)
        ref = enc(torch.as_tensor(window[None]))[0].numpy()
    after = enc.forward_numpy(window)
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(after, ref, atol=1e-12)


def test_numpy_forward_sees_loaded_and_replaced_weights(rng):
    enc, other = _encoder(3), _encoder(4)
    window = rng.normal(size=(15, 21))
    enc.forward_numpy(window)  # converts and keeps the weights
    enc.load_state_dict(other.state_dict())
    np.testing.assert_allclose(enc.forward_numpy(window), other.forward_numpy(window), rtol=0, atol=1e-14)
    enc.head.bias = torch.nn.Parameter(enc.head.bias.detach() + 1.0)  # a new tensor, not an in-place change
    with torch.no_grad():
        ref = enc(torch.as_tensor(window[None]))[0].numpy()
    np.testing.assert_allclose(enc.forward_numpy(window), ref, atol=1e-12)


def test_tracker_context_is_the_encoder_of_its_window(nominal, rng):
    enc = _encoder(2)
    tracker = ContextTracker(nominal, 15, 0.02, enc, param_start=7)
    x = rng.normal(size=14)
    tracker.reset(x)
    for _ in range(5):
        x_new = x + 0.01 * rng.normal(size=14)
        tracker.observe(x_new, rng.normal(size=7), x)
        x = x_new
    start, z = tracker.context()
    with torch.no_grad():
        ref = enc(torch.as_tensor(tracker.window_array()[None]))[0].numpy()
    assert start == 7
    np.testing.assert_allclose(z, ref, atol=1e-12)


def test_tracker_tau_nom_is_the_nominal_inverse_dynamics(nominal, rng):
    """The compiled one-sample inverse dynamics equals the torch form (independent implementation path)."""
    tracker = ContextTracker(nominal, 15, 0.02)
    q, qd, qdd = (rng.normal(size=7) for _ in range(3))
    ref = nominal.inverse_dynamics(*(torch.as_tensor(v[None]) for v in (q, qd, qdd)))[0].numpy()
    np.testing.assert_allclose(tracker.tau_nom(q, qd, qdd), ref, rtol=1e-12, atol=1e-10)


def test_tracker_without_a_compiler_uses_casadi(nominal, rng, monkeypatch, tmp_path):
    import whatmatters.codegen as codegen

    monkeypatch.setenv("WHATMATTERS_CACHE", str(tmp_path))  # nothing compiled on this machine yet
    monkeypatch.setattr(codegen.shutil, "which", lambda name: None)
    monkeypatch.setattr(codegen, "_SHARED", {})
    tracker = ContextTracker(nominal, 15, 0.02)
    q, qd, qdd = (rng.normal(size=7) for _ in range(3))
    assert codegen.shared_compiled(tracker._tau_nom_key, lambda: tracker._tau_nom_vm) is None
    ref = nominal.inverse_dynamics(*(torch.as_tensor(v[None]) for v in (q, qd, qdd)))[0].numpy()
    np.testing.assert_allclose(tracker.tau_nom(q, qd, qdd), ref, rtol=1e-12, atol=1e-10)


def test_tracker_without_a_compiler_loads_the_cached_library(nominal, rng, monkeypatch, tmp_path):
    import whatmatters.codegen as codegen

    monkeypatch.setenv("WHATMATTERS_CACHE", str(tmp_path))
    monkeypatch.setattr(codegen, "_SHARED", {})
    tracker = ContextTracker(nominal, 15, 0.02)
    assert codegen.shared_compiled(tracker._tau_nom_key, lambda: tracker._tau_nom_vm) is not None  # compiled into the cache
    monkeypatch.setattr(codegen.shutil, "which", lambda name: None)  # then gcc is gone (a node with a filled cache)
    monkeypatch.setattr(codegen, "_SHARED", {})
    assert codegen.shared_compiled(tracker._tau_nom_key, lambda: tracker._tau_nom_vm) is not None
    q, qd, qdd = (rng.normal(size=7) for _ in range(3))
    ref = nominal.inverse_dynamics(*(torch.as_tensor(v[None]) for v in (q, qd, qdd)))[0].numpy()
    np.testing.assert_allclose(tracker.tau_nom(q, qd, qdd), ref, rtol=1e-12, atol=1e-10)
