"""Real-time operation as on the robot: paced physics, delay compensation, start-up gate, timing figures.

The lock-step path (:func:`whatmatters.eval.episode.run_episode`) advances the
simulator one control period per command and is deterministic. On a robot
there is no lock-step: the robot runs its own clock, the controller samples
the latest state on a 50 Hz grid and its command takes effect when it
arrives. This package holds the parts of that loop that are not ROS:

* :mod:`~whatmatters.realtime.clock`: a wall-clock pacer with drift correction;
* :mod:`~whatmatters.realtime.plant`: the simulated robot at its physics rate
  (zero-order hold from the command's arrival, torque-rate limiter, held until
  the first command, its own record);
* :mod:`~whatmatters.realtime.reference`: the reference over the horizon at
  any time on the task's clock (cubic Hermite interpolation, start gate);
* :mod:`~whatmatters.realtime.torque`: the torque applied over a control step
  from the robot's high-rate effort samples;
* :mod:`~whatmatters.realtime.delay`: the state predicted over the input delay;
* :mod:`~whatmatters.realtime.control`: the MPC on the robot's clock;
* :mod:`~whatmatters.realtime.metrics`: J_track on the reference's clock,
  state-to-command latency and late commands, live or from a bag.
"""
