"""The mining loop: train on the tip, wait for the block's earliest valid moment, propose.

Each attempt trains the tip's weights on the miner's local data in a thread of its own (so the
event loop keeps serving the API) with a fresh seed. The best candidate for the current tip is
kept; its block is proposed at the earliest timestamp at which its improvement meets the
time-decayed difficulty. When that moment is far off the miner trains again instead of idling,
since another seed may clear the bar sooner. Work on a tip is dropped as soon as a better tip
arrives: checked after each training run, and the wait for a timestamp wakes on a tip change.
Once the tip is older than the genesis ``decay_ms`` and training brought nothing, an empty
(zero-delta) block keeps the chain moving for transactions. While a valid candidate waits for
its moment, training runs are spaced by ``retrain_pause_ms`` so a miner leaves CPU to others.

The miner never proposes a block its own chain would reject: :func:`relay.assemble_block` runs
the chain's full validation before returning the block.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from derelayl_chain import relay
from derelayl_chain.block import Block
from derelayl_chain.chain import Chain, now_ms
from derelayl_chain.crypto import KeyPair, encode_address
from derelayl_chain.encoding import hash_domain
from derelayl_chain.exceptions import BlockFromFuture, ChainError, InvalidBlock, InvalidTransaction
from derelayl_chain.learning.data import Dataset
from derelayl_chain.learning.task import LOSS_SCALE
from derelayl_chain.learning.train import TrainingConfig
from derelayl_chain.log import Logger, get_logger

if TYPE_CHECKING:
    from derelayl_chain.node import Node

_SEED_MODULUS = 2**31


@dataclass(frozen=True, slots=True)
class MiningPolicy:
    """Local choices of the miner (not consensus)."""

    wait_horizon_ms: int = 1_500
    """Wait for a candidate's timestamp only if it is at most this far off; else train again."""
    retrain_pause_ms: int = 200
    """Pause between training runs while a valid but not yet timely candidate is held."""
    training: TrainingConfig = TrainingConfig()
    """Hyper-parameters of each training run (the seed is replaced per attempt)."""
    retry_delay_s: float = 0.5
    """Pause after an attempt that failed for an unexpected reason."""
    max_block_txs: int = 1_000
    """Most mempool transactions offered to one block."""


@dataclass(frozen=True, slots=True)
class _Proposal:
    candidate: relay.Candidate
    timestamp_ms: int


class Miner:
    """Proposes blocks on the node's chain from a local data set."""

    def __init__(
        self,
        node: Node,
        data: Dataset,
        key: KeyPair,
        reward_to: bytes | None = None,
        *,
        policy: MiningPolicy | None = None,
        log: Logger | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.node = node
        self.data = data
        self.key = key
        self.reward_to = reward_to if reward_to is not None else key.account
        self.policy = policy or MiningPolicy()
        self.log = log or get_logger(component="miner")
        self.clock = clock
        self.attempts = 0
        self.blocks_mined = 0
        self._best: _Proposal | None = None
        self._tip_changed = asyncio.Event()
        self._trainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="derelayl-train")

    @property
    def chain(self) -> Chain:
        return self.node.chain

    def notify_tip(self) -> None:
        """Tell the miner the tip moved: stale work is dropped at the next check."""
        self._tip_changed.set()

    async def run(self) -> None:
        """Mine until cancelled; an attempt that fails is logged and retried."""
        self.log.info("mining_started", reward_to=encode_address(self.reward_to))
        try:
            while True:
                try:
                    await self.mine_once()
                except (InvalidBlock, InvalidTransaction, ChainError, BlockFromFuture) as exc:
                    self.log.warning("mining_attempt_failed", error=str(exc))
                    await asyncio.sleep(self.policy.retry_delay_s)
                except Exception as exc:  # a bug must not stop the node serving
                    self.log.error("mining_error", error=repr(exc), exc_info=True)
                    await asyncio.sleep(self.policy.retry_delay_s)
        finally:
            self.log.info("mining_stopped", blocks_mined=self.blocks_mined)

    async def close(self) -> None:
        """Wait for the training thread to finish its current step (it cannot be interrupted)."""
        await asyncio.to_thread(self._trainer.shutdown, wait=True, cancel_futures=True)

    async def mine_once(self) -> Block | None:
        """One attempt on the current tip; the connected block, or None."""
        self._tip_changed.clear()
        tip = self.chain.tip
        if self._best is not None and self._best.candidate.parent != tip.hash:
            self._best = None
        seed = self._seed(tip.hash)
        self.attempts += 1
        self.log.debug("mining_attempt", height=tip.height + 1, seed=seed)
        config = replace(self.policy.training, seed=seed)
        candidate = await self._in_trainer(relay.train_candidate, self.chain, self.data, config)
        if candidate.parent != self.chain.tip.hash:
            self.log.debug("mining_stale", parent=candidate.parent.hex()[:16])
            return None
        await self._consider(candidate)
        if (
            self._best is None
            and self.clock() - tip.header.timestamp_ms >= self.chain.params.decay_ms
        ):
            self.log.debug("mining_empty_candidate", height=tip.height + 1)
            await self._consider(await self._in_trainer(relay.empty_candidate, self.chain))
        best = self._best
        if best is None:
            self.log.debug("mining_no_improvement", loss=candidate.evaluation.loss)
            return None
        wait_ms = best.timestamp_ms - self.clock()
        if wait_ms > self.policy.wait_horizon_ms:
            self.log.debug("mining_retrain", loss=best.candidate.evaluation.loss, wait_ms=wait_ms)
            await self._wait_until(self.clock() + self.policy.retrain_pause_ms, tip.hash)
            return None
        if not await self._wait_until(best.timestamp_ms, best.candidate.parent):
            return None
        return await self._propose(best)

    async def _consider(self, candidate: relay.Candidate) -> None:
        """Keep ``candidate`` if it beats the best so far on this tip and can ever be valid."""
        best = self._best
        if best is not None and best.candidate.evaluation.loss <= candidate.evaluation.loss:
            return
        loss = candidate.evaluation.loss
        timestamp = await self.node.run_chain(relay.earliest_timestamp, self.chain, loss)
        if timestamp is not None and candidate.parent == self.chain.tip.hash:
            self._best = _Proposal(candidate, timestamp)

    def _seed(self, tip_hash: bytes) -> int:
        """A seed no other attempt of this miner (or another miner's key) shares."""
        material = self.key.account + tip_hash + self.attempts.to_bytes(8, "big")
        return int.from_bytes(hash_domain(b"drl-mine-seed", material), "big") % _SEED_MODULUS

    async def _wait_until(self, timestamp_ms: int, parent: bytes) -> bool:
        """Sleep until ``timestamp_ms``; False as soon as the tip moves away from ``parent``."""
        while self.chain.tip.hash == parent:
            remaining = timestamp_ms - self.clock()
            if remaining <= 0:
                return True
            self._tip_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tip_changed.wait(), remaining / 1000)
        return False

    async def _propose(self, proposal: _Proposal) -> Block | None:
        """Assemble (fully validated), submit and announce the block."""
        if proposal.candidate.parent != self.chain.tip.hash:
            return None
        transactions = self.node.mempool.select(
            self.policy.max_block_txs, self.chain.tip.height + 1
        )
        # Honest timestamp: our clock, never before the earliest moment the block is valid.
        # The rules would accept back-dating down to the median time past (more d_eff, more
        # emission); the reference miner does not do it (see docs/threat-model.md).
        timestamp = max(proposal.timestamp_ms, self.clock())
        block = await self.node.run_chain(
            relay.assemble_block,
            self.chain,
            self.key,
            proposal.candidate,
            timestamp,
            transactions,
            self.reward_to,
        )
        self._best = None
        result = await self.node.submit_block(block)
        if block.hash not in {connected.hash for connected in result.connected}:
            self.log.info("block_not_connected", hash=block.hash.hex()[:16], status=result.status)
            return None
        self.blocks_mined += 1
        self.node.metrics.blocks_mined.inc()
        self.log.info(
            "block_mined",
            height=block.height,
            hash=block.hash.hex()[:16],
            loss=block.header.claimed_loss / LOSS_SCALE,
            txs=len(block.transactions),
        )
        await self.node.peers.announce_block(block.hash)
        return block

    async def _in_trainer(self, fn: Callable[..., Any], *args: Any) -> relay.Candidate:
        loop = asyncio.get_running_loop()
        result: relay.Candidate = await loop.run_in_executor(self._trainer, fn, *args)
        return result
