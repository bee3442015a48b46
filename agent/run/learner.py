"""The learner call of the training loop: sample, update, write the priorities back; in line or overlapped with acting.

Every `train_freq` env steps the loop asks for one learner call: `gradient_steps`
batches drawn from the replay (by priority with prioritized replay), one
compiled call of `gradient_steps` updates, and, with prioritized replay, the
samples' |TD errors| written back as their priorities (Schaul et al. 2016).

With `overlap_learning` the compiled call runs in a worker thread while the
loop acts and steps the env for the next `train_freq` env steps; on 2 cores
this is ~9% more env steps per second on Breakout (docs/throughput.md, **Overlapped
learning**). Training then acts on the weights as they stood when the running
call began (a frozen numpy copy, `Learner.act`): acting lags the newest weights
by one learner call, as distributed DQN's actors lag their learner (Horgan et
al. 2018, Ape-X), though by far less. The call's results are taken in
("settled") at the next call, or earlier when something needs the network as
it is (a target sync, an evaluation, a checkpoint, a log row, the loop's end:
`Run.settle`), but only a new call moves the weights acting uses, so where
settles happen never changes the run, and a checkpoint saves the frozen copy:
a resume goes on bit for bit from any step. The updates themselves, their
batches and their priorities are those of the in-line loop: with random
actions (epsilon 1) the two give the same weights bit for bit
(tests/test_learner.py).

Overlap needs the numpy acting copy (`DQNAgent.acts_in_numpy`): acting through
TensorFlow would read the variables while the update writes them. Where the
agent acts in TensorFlow the calls run in line.
"""

from __future__ import annotations

import time

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from agent.core.config import DQNConfig
from agent.dqn.agent import DQNAgent, NonFiniteLossError, PendingResults
from agent.dqn.networks import NumpyPolicy
from agent.dqn.policies import epsilon_greedy
from agent.run.run_state import LoopState
from replay import ReplayMemory


LEARNER_PHASES = ("wait", "sample", "update", "priorities")


class Learner:
    """Runs the loop's learner calls and keeps their results in `state.metrics`.

    Args:
        agent, replay, state: the run's; `state.metrics` gets each call's metrics.
        overlap: run each call in a worker thread while the loop goes on
            (`cfg.overlap_learning`); ignored where the agent acts in TensorFlow.
    """

    def __init__(self, cfg: DQNConfig, agent: DQNAgent, replay: ReplayMemory, state: LoopState, overlap: bool = False):
        self.cfg, self.agent, self.replay, self.state = cfg, agent, replay, state
        self.overlap = bool(overlap) and agent.acts_in_numpy
        self._executor: ThreadPoolExecutor | None = None
        self._pending: tuple[Future[PendingResults], np.ndarray | None] | None = None  # (the call, its samples' replay indices)
        self._pending_step = 0  # the env step at which the pending call began
        self._acting: NumpyPolicy | None = None  # overlap: the weights as the latest call found them (None: the agent's own)
        # Wall seconds of this session's calls by phase: waiting for the previous (overlapped) call, sampling, the update
        # in line (overlapped, the update runs in the worker: what acting could not hide shows up as "wait"), and writing
        # the new priorities (prioritized replay), each counted once.
        self.seconds = dict.fromkeys(LEARNER_PHASES, 0.0)
        self.calls = 0

    def act(self, obs_batch: np.ndarray, epsilon: float) -> np.ndarray:
        """The training loop's epsilon-greedy actions (`DQNAgent.act` with the agent's RNG). In line: on the newest
        weights; overlapped: on the weights as they stood when the latest learner call began. A recurrent agent's
        network runs on every step (random actions too) and moves the loop's `state.carry` past `obs_batch`."""
        if getattr(self.agent, "recurrent", False):
            step = self.agent.step if self._acting is None else self._acting.step
            q, self.state.carry = step(obs_batch, self.state.carry)
            return epsilon_greedy(lambda _: q, obs_batch, epsilon, self.agent.rng, self.agent.num_actions)[0]
        q_values = self.agent.q_values if self._acting is None else self._acting.q_values
        return epsilon_greedy(q_values, obs_batch, epsilon, self.agent.rng, self.agent.num_actions)[0]

    def call(self, beta: float, learning_rate: float | None = None) -> None:
        """One learner call on the replay as it stands: settle the previous call, set the step size, sample, update.

        Args:
            beta: the importance-sampling exponent of prioritized replay (unused without it).
            learning_rate: a new step size for this call's updates, or None to keep the optimizer's.

        Raises:
            NonFiniteLossError: a loss or gradient became non-finite, in this call or (overlapped) the previous one.
        """
        t0, priorities_s = time.perf_counter(), self.seconds["priorities"]
        self.settle()  # the step size, the priorities and the acting copy are written only between calls
        t1 = time.perf_counter()
        self.calls += 1
        self.seconds["wait"] += t1 - t0 - (self.seconds["priorities"] - priorities_s)
        if learning_rate is not None:
            self.agent.set_learning_rate(learning_rate)
        cfg = self.cfg
        if cfg.prioritized:
            # All K batches of a call come from the priorities as they stand at its start; the |TD errors|
            # of its K * B samples become their priorities when it is settled.
            drawn = self.replay.sample_prioritized(cfg.gradient_steps, cfg.batch_size, beta, deferred=self.overlap)
            batch, weights, indices = drawn.batch, drawn.weights, drawn.indices
        else:
            batch, weights, indices = self.replay.sample_many(cfg.gradient_steps, cfg.batch_size), None, None
        t2, priorities_s = time.perf_counter(), self.seconds["priorities"]
        self.seconds["sample"] += t2 - t1
        if not self.overlap:
            self._take(self.agent.compute_update(batch, weights), indices)
            self.seconds["update"] += time.perf_counter() - t2 - (self.seconds["priorities"] - priorities_s)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner")
        self._acting = self.agent.frozen_acting_copy()  # what acting uses until the next call, however often this one is settled
        self._pending_step = self.state.step
        self._pending = (self._executor.submit(self.agent.compute_update, batch, weights), indices)
        self.seconds["update"] += time.perf_counter() - t2  # handing over: the copy of the acting weights, the submit

    @property
    def pending(self) -> bool:
        """Whether a learner call runs in the worker thread now (its results not yet taken in)."""
        return self._pending is not None

    def settle(self) -> None:
        """Wait for an overlapped call and take in its results; a no-op when none is pending.

        Raises:
            NonFiniteLossError: the call met a non-finite loss (its bad update was not applied).
        """
        if self._pending is None:
            return
        future, indices = self._pending
        try:
            results = future.result()  # an exception raised in the call comes out here
        except Exception:
            self._pending = None
            self._drop_deferred(indices)
            raise
        self._pending = None
        self._take(results, indices)

    def wait(self) -> None:
        """Settle for an exception already on its way out of the loop: the call ends before anything reads the
        network, and a failure of its own is dropped (the first exception is the one to report)."""
        try:
            self.settle()
        except Exception:
            pass

    def _take(self, results: PendingResults, indices: np.ndarray | None) -> None:
        try:
            metrics, td_errors = self.agent.finish_update(results)  # counts the updates, refreshes the agent's copy; raises on NaN
        except NonFiniteLossError as e:
            self._drop_deferred(indices)  # as in line: a call that failed writes no priorities
            if self.overlap:  # settled later than it began: say when it began
                raise NonFiniteLossError(f"{e}, in the learner call begun at env step {self._pending_step}") from None
            raise
        if indices is not None:
            t = time.perf_counter()
            self.replay.update_priorities(indices, td_errors)
            self.seconds["priorities"] += time.perf_counter() - t
        self.state.metrics = metrics

    def _drop_deferred(self, indices: np.ndarray | None) -> None:
        if indices is not None and self.overlap:
            self.replay.cancel_deferred_priorities()

    # ----- checkpoints: the weights acting lags on -----

    def state_dict(self) -> dict:
        """Overlapped: the frozen acting weights (`held`), so that a resume acts as the run would have gone on."""
        policy = self._acting if self._acting is not None else self.agent.frozen_acting_copy()
        arrays = policy.arrays() if policy is not None else []
        return {"held": self._acting is not None, **{f"w{i}": a for i, a in enumerate(arrays)}}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state["held"], bool):
            raise ValueError("'held' must be true or false")
        current = self.agent.frozen_acting_copy()
        if not state["held"] or current is None:
            self._acting = None
            return
        self._acting = current.with_arrays([np.array(state[f"w{i}"]) for i in range(len(current.arrays()))])

    def close(self) -> None:
        """Let a running call finish (its results are dropped) and stop the worker thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._pending = None
