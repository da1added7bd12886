"""Stop signals of a node process (whatmatters_ros.runtime): an orderly stop on the first, an interrupt on a second."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from whatmatters_ros.runtime import EXIT_INTERRUPTED

pytest.importorskip("rclpy")

# A node process whose start-up and close() can be made slow; it reports its phases on stdout.
NODE_SCRIPT = textwrap.dedent("""
    import sys, time
    from rclpy.node import Node
    from whatmatters_ros.runtime import run_node

    start_s, close_s = float(sys.argv[1]), float(sys.argv[2])

    class Slow(Node):
        def __init__(self):
            print("starting", flush=True)
            time.sleep(start_s)
            super().__init__("runtime_probe")
            self.create_timer(0.05, self.tick)
            self.ticks = 0

        def tick(self):
            self.ticks += 1
            if self.ticks == 1:
                print("spinning", flush=True)  # from a callback: the executor is running

        def close(self):
            print("closing", flush=True)
            time.sleep(close_s)
            print("closed", flush=True)

    sys.exit(run_node(Slow, []))
""")


def _start(tmp_path: Path, start_s: float, close_s: float) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "node.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, str(start_s), str(close_s)],
                                stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ))
    return proc, log


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, f"exited with {proc.returncode} before {text!r}: {log.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s: {log.read_text()}"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_closes_the_node_in_order_with_status_0(tmp_path: Path, sig: signal.Signals) -> None:
    proc, log = _start(tmp_path, 0.0, 0.3)
    _wait_for(log, "spinning", proc)
    proc.send_signal(sig)
    assert proc.wait(20) == 0, log.read_text()
    text = log.read_text()
    assert f"{sig.name} received: stopping" in text
    assert text.index("closing") < text.index("closed")  # close() ran to its end


def test_a_second_signal_interrupts_a_stuck_close(tmp_path: Path) -> None:
    proc, log = _start(tmp_path, 0.0, 60.0)
    _wait_for(log, "spinning", proc)
    proc.send_signal(signal.SIGINT)
    _wait_for(log, "closing", proc)
    time.sleep(0.2)
    assert proc.poll() is None  # the first signal waits for close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == EXIT_INTERRUPTED, log.read_text()
    assert "closed" not in log.read_text()


def test_a_signal_during_start_up_interrupts_it(tmp_path: Path) -> None:
    proc, log = _start(tmp_path, 60.0, 0.0)
    _wait_for(log, "starting", proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == EXIT_INTERRUPTED, log.read_text()
    assert time.monotonic() - t0 < 5.0 and "spinning" not in log.read_text()


PRIORITY_SCRIPT = textwrap.dedent("""
    import json, os, rclpy
    from whatmatters_ros.runtime import process_threads, realtime_priority, thread_name

    rclpy.init()
    node = rclpy.create_node("priority_probe")  # its DDS participant starts Fast DDS's threads
    ok = realtime_priority(10, "probe", process=True)
    print(json.dumps({"ok": ok, "threads": [[thread_name(t), os.sched_getscheduler(t)] for t in process_threads()]}))
    node.destroy_node()
    rclpy.shutdown()
""")


def test_a_real_time_process_leaves_dds_async_writer_threads_ordinary() -> None:
    import json

    out = subprocess.run([sys.executable, "-c", PRIORITY_SCRIPT], capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["ok"]:
        pytest.skip("no privilege for SCHED_FIFO on this machine")
    policies = {name: policy for name, policy in result["threads"]}
    asyn = [n for n in policies if n.startswith("dds.asyn")]
    assert asyn, f"no Fast DDS async writer thread among {sorted(policies)}"
    assert all(policies[n] == os.SCHED_OTHER for n in asyn)
    others = [p for n, p in result["threads"] if not n.startswith("dds.asyn")]
    assert others and all(p == os.SCHED_FIFO for p in others)


# A node that publishes a burst on a reliable topic once a subscriber listens, then ends by itself (done).
BURST_SCRIPT = textwrap.dedent("""
    import sys
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray
    from whatmatters_ros.runtime import run_node

    class Burst(Node):
        def __init__(self):
            super().__init__("burst_probe")
            self.pub = self.create_publisher(Float64MultiArray, "/burst", QoSProfile(depth=5000, reliability=ReliabilityPolicy.RELIABLE))
            self.done = False
            self.create_timer(0.05, self.tick)

        def tick(self):
            if self.done or self.pub.get_subscription_count() == 0:
                return
            for k in range(3000):
                self.pub.publish(Float64MultiArray(data=[float(k)] * 8))
            self.done = True  # the spin ends now; the process exits after run_node

    sys.exit(run_node(Burst, []))
""")


def test_a_node_that_ends_by_itself_delivers_its_last_messages(test_node: Any) -> None:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray

    got: list[float] = []
    test_node.create_subscription(Float64MultiArray, "/burst", lambda msg: got.append(msg.data[0]),
                                  QoSProfile(depth=5000, reliability=ReliabilityPolicy.RELIABLE))
    proc = subprocess.Popen([sys.executable, "-c", BURST_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    assert test_node.spin_until(lambda: proc.poll() is not None, 60.0), "the burst node did not end by itself"
    test_node.spin_until(lambda: len(got) >= 3000, 5.0)
    assert proc.returncode == 0, proc.stdout.read().decode()[-2000:] if proc.stdout else ""
    assert got == [float(k) for k in range(3000)]
