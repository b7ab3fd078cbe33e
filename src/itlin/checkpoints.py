"""Checkpoints of a training job (its lanes' state and rows) in its scratch folder, and the SIGTERM request
to write one: a pre-empted or killed job resumes from the last sound checkpoint with identical results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from itlin import record

if TYPE_CHECKING:
    from itlin.train import TrainState

log = logging.getLogger(__name__)


class Preempted(Exception):
    """The run was asked to stop (SIGTERM) and left a checkpoint to resume from."""


class TerminationRequest:
    """Notes SIGTERM (sent by SLURM on pre-emption or at the time limit) so the run can
    checkpoint at the next block boundary instead of losing the steps since the last one."""

    def __init__(self):
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._note)

    def _note(self, signum, frame) -> None:
        log.warning("SIGTERM received: checkpointing at the end of this block")
        self.requested = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class Checkpoints:
    """Orbax checkpoints of a job's train state and each lane's metric rows so far, in the scratch folder.

    Each checkpoint carries the SHA-256 of its contents (``digest``), computed from the values saved
    and checked on the values restored. A checkpoint that cannot be read or fails the check is
    damaged: it is moved to ``damaged/`` beside the checkpoints, with a warning naming it, and the
    previous one is tried (two are kept), then a fresh start, so a run never resumes from damaged
    state. A checkpoint written under different run configs is discarded: a changed config restarts.
    """

    def __init__(self, directory: Path, configs: Sequence[record.RunConfig]):
        self.directory = Path(directory).absolute()
        self.damaged = self.directory.parent / "damaged"
        self.config = [config.to_dict() for config in configs]
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
        self.latest = self.manager.latest_step() or 0

    def restore(self, initial: TrainState) -> tuple[TrainState, list[list[dict]] | None, float]:
        """The state, each lane's rows and the elapsed time of the latest sound checkpoint, or a fresh start
        (``initial``, None, 0)."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:  # the log first: it says whether the checkpoint belongs to this run config
                saved = self._read(step, log=ocp.args.JsonRestore()).log
                if saved["config"] != self.config:
                    log.warning("checkpoint at step %d was written under another run config: starting afresh", step)
                    for other in self.manager.all_steps():
                        self.manager.delete(other)
                    break
                state = self._read(step, state=ocp.args.StandardRestore(initial)).state
            except Exception as error:  # noqa: BLE001 (Orbax and TensorStore raise many kinds: any means unreadable)
                self._set_aside(step, f"unreadable: {type(error).__name__}: {str(error)[:300]}")
                continue
            contents = {key: value for key, value in saved.items() if key != "sha256"}
            if saved.get("sha256") != digest(state, contents):
                self._set_aside(step, "its contents differ from the checksum written when it was saved"
                                if "sha256" in saved else "it carries no checksum")
                continue
            log.info("resuming from checkpoint at step %d", step)
            self.latest = step
            return type(initial)(*jax.tree.map(jnp.asarray, state)), saved["rows"], saved["elapsed"]
        self.latest = 0
        if self.damaged.exists():
            log.warning("no sound checkpoint left: resuming from the start")
        return initial, None, 0.0

    def _read(self, step: int, **items) -> ocp.args.Composite:
        """Orbax's restore of ``items`` of the checkpoint at ``step``; a failed one leaves no read running."""
        with _settled_event_loops():
            return self.manager.restore(step, args=ocp.args.Composite(**items))

    def save(self, step: int, state: TrainState, rows: list[list[dict]], elapsed: float) -> None:
        contents = {"config": self.config, "rows": rows, "elapsed": elapsed}
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            log=ocp.args.JsonSave(contents | {"sha256": digest(state, contents)})))
        # Written before training goes on: the next block is given the state's buffers to reuse (donated),
        # which Orbax may still be reading (a checkpoint would then hold a later state than its checksum's).
        self.manager.wait_until_finished()
        self.latest = step

    def _set_aside(self, step: int, reason: str) -> None:
        """Move the checkpoint of ``step`` out of Orbax's sight, into ``damaged/``, and say so."""
        target = self.damaged / f"{step}-{time.strftime('%Y%m%dT%H%M%S')}"
        self.damaged.mkdir(parents=True, exist_ok=True)
        shutil.move(self.directory / str(step), target)
        self.manager.reload()
        log.warning("checkpoint at step %d is damaged (%s): moved to %s; trying an earlier one", step, reason, target)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def digest(state: TrainState, contents: dict) -> str:
    """SHA-256 of a checkpoint's contents: every array of the state (``record.fingerprint``) and the JSON
    of its log (config, rows, elapsed time)."""
    return record.fingerprint(state, json.dumps(contents, sort_keys=True).encode())


class _SettlingEventLoop(asyncio.SelectorEventLoop):
    """An event loop that, when closed, first lets the tasks still running on it end (``_settle``)."""

    def close(self) -> None:
        pending = asyncio.all_tasks(self) if not (self.is_closed() or self.is_running()) else set()
        if pending:
            self.run_until_complete(_settle(pending))
        super().close()


async def _settle(tasks: set[asyncio.Task], timeout_s: float = 60.0) -> None:
    """Wait for ``tasks`` (cancelling those still running after ``timeout_s``) and retrieve their outcomes,
    so that none is reported as never retrieved."""
    _, late = await asyncio.wait(tasks, timeout=timeout_s)
    for task in late:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class _SettlingPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _SettlingEventLoop()


@contextlib.contextmanager
def _settled_event_loops():
    """While active, event loops let their tasks end before they close.

    Orbax runs a restore on a fresh event loop, reading every array at once (``asyncio.gather``), and
    closes the loop as soon as one read fails, while the others still run in TensorStore's threads:
    each then ends on a closed loop (``RuntimeError: Event loop is closed`` in a TensorStore thread,
    exceptions never retrieved and reported at exit). Orbax exposes no way to wait for them, so the
    loops it creates meanwhile do: no operation of a failed restore outlives it.
    """
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_SettlingPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(previous)
