"""The wallet against a real mining node: rewards, payments, royalties and the model.

One node process mines for the whole module. It first mines to wallet D until D holds
contribution shares, then is restarted mining to wallet A, so the model has two contributors
with known shares (each block's shares are its loss improvement, which ``/blocks`` reports).
Every wallet action runs ``derelayl-wallet`` as a process and is checked against the chain's
own account of the blocks, to the base unit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from derelayl_chain.genesis import BASE_UNITS_PER_DRL, GenesisConfig, load_genesis
from derelayl_chain.learning.data import load_task_split
from derelayl_chain.learning.evaluate import evaluate
from derelayl_chain.learning.model import build_model
from derelayl_chain.learning.task import BUILTIN_TASKS, DEFAULT_TASK, LOSS_SCALE
from derelayl_chain.learning.weights import model_hash
from tests.functional._wallet_harness import (
    Wallet,
    account,
    assert_one_line_error,
    at_rest,
    full_blocks,
    get_json,
    new_wallet,
    units,
    wait_until,
    write_steady_genesis,
)
from tests.functional.framework import TestNode, scaled
from wallet.amounts import format_drl

pytestmark = [pytest.mark.functional, pytest.mark.slow]

DRL = BASE_UNITS_PER_DRL
WAIT_S = 60.0
"""Seconds a ``--wait`` may take (scaled): a block comes within the test network's decay."""


@dataclass(frozen=True, slots=True)
class Network:
    """The running node and the module's wallets."""

    node: TestNode
    genesis: GenesisConfig
    wallets: dict[str, Wallet]
    """A mines, B and C only transact, D mined the first blocks."""
    addresses: dict[str, str]


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    root = tmp_path_factory.mktemp("wallet-flow")
    created = {name: new_wallet(root / "keys", name, "http://127.0.0.1:1") for name in "ABCD"}
    addresses = {name: address for name, (_, address) in created.items()}
    genesis_path = write_steady_genesis(root / "genesis.json")
    node = TestNode(0, root, genesis=genesis_path, reward_address=addresses["D"])
    try:
        node.start()
        wait_until(lambda: shares_of(node, addresses["D"]) or None, 60, "D's first shares")
        assert node.stop() == 0, node.log_tail()
        node.reward_address = addresses["A"]
        node.start()
        wait_until(lambda: shares_of(node, addresses["A"]) or None, 60, "A's first shares")
        wallets = {name: wallet.with_node(node.url) for name, (wallet, _) in created.items()}
        yield Network(node, load_genesis(genesis_path), wallets, addresses)
    finally:
        node.stop()


def shares_of(node: TestNode, address: str) -> int:
    return units(account(node, address), "shares")


def block_summaries(node: TestNode, first: int, last: int) -> list[dict[str, Any]]:
    """Summaries (``reward_to``, ``improvement_fixed``, ...) of canonical heights first..last."""
    items: list[dict[str, Any]] = []
    while first <= last:
        limit = min(100, last - first + 1)
        page = get_json(node, f"/blocks?from={first}&limit={limit}")["items"]
        assert page, f"no blocks from height {first}"
        items += page
        first += len(page)
    assert [item["height"] for item in items] == list(range(items[0]["height"], last + 1))
    return items


def balances(net: Network, *names: str) -> dict[str, int]:
    """The balances the wallet shows for the named wallets."""
    wallet = net.wallets["A"]
    return {name: units(wallet.json("balance", net.addresses[name]), "balance") for name in names}


def send(net: Network, sender: str, recipient: str, amount: str, fee: str) -> dict[str, Any]:
    """``send --wait``: the confirmed transfer's JSON document."""
    to = net.addresses[recipient]
    wait = f"{scaled(WAIT_S):g}"
    document = net.wallets[sender].json(
        "send", to, amount, "--fee", fee, "--wait", "--timeout", wait, timeout_s=2 * WAIT_S
    )
    assert document["status"] == "confirmed" and document["to"] == to, document
    return document


def royalties_earned(net: Network, name: str) -> int:
    """All royalties the wallet reports for ``name``: settled plus pending."""
    summary = net.wallets["A"].json("rewards", net.addresses[name])
    return units(summary, "royalties") + units(summary, "royalties_pending")


# --- mining rewards -----------------------------------------------------------------------------


def test_mining_pays_emission_fees_and_shares_to_the_reward_address(network: Network) -> None:
    """The wallet's rewards view of the reward address matches the blocks paid to it, to the
    base unit, and its balance is those rewards less what its history shows it spent."""
    net, a = network, network.addresses["A"]
    wallet = net.wallets["A"]
    height, (summary, balance, spent) = at_rest(
        net.node, lambda: (wallet.json("rewards"), wallet.json("balance"), spent_by(net.node, a))
    )
    paid = [b for b in full_blocks(net.node, 1, height) if b["reward_to"] == a]
    assert paid, "A proposed no block"
    emission = sum(int(b["rewards"]["emission"]) for b in paid)
    fees = sum(int(b["rewards"]["fees"]) for b in paid)
    assert emission > 0
    assert summary["address"] == a and summary["blocks_proposed"] == len(paid)
    assert (units(summary, "emission"), units(summary, "fees")) == (emission, fees)
    assert summary["emission_drl"] == format_drl(emission)
    assert int(summary["shares"]) == sum(b["improvement_fixed"] for b in paid)
    assert int(summary["total_shares"]) == sum(
        b["improvement_fixed"] for b in block_summaries(net.node, 1, height)
    )
    expected = emission + fees + units(summary, "royalties") - spent
    assert units(balance, "balance") == expected
    assert units(balance, "spendable") == expected + units(balance, "royalties_pending")


def spent_by(node: TestNode, address: str) -> int:
    """Amounts and fees of the address's confirmed transactions, from its whole history."""
    spent, cursor = 0, ""
    for _ in range(1_000):
        query = f"limit=100&before={cursor}" if cursor else "limit=100"
        page = get_json(node, f"/accounts/{address}/txs?{query}")
        for item in page["items"]:
            if item["type"] == "tx" and item["from"] == address:
                spent += int(item["amount"]) + int(item["fee"])
        cursor = page["next"]
        if cursor is None:
            return spent
    raise AssertionError("history does not end")


# --- payments -----------------------------------------------------------------------------------


def test_send_moves_both_balances_by_exactly_amount_and_fee(network: Network) -> None:
    """A transfer moves the amount from sender to recipient and charges the sender the fee; the
    miner's balance also grows by exactly the rewards of the blocks mined meanwhile."""
    net = network
    node, a = net.node, net.addresses["A"]
    h1, before = at_rest(node, lambda: balances(net, "A", "B"))
    sent = send(net, "A", "B", "12.5", "0.0015")
    amount, fee = 12_500_000_000, 1_500_000
    assert (units(sent, "amount"), units(sent, "fee")) == (amount, fee)
    assert sent["txid"] in get_json(node, f"/blocks/{sent['height']}")["transactions"]
    h2, after = at_rest(node, lambda: balances(net, "A", "B"))
    assert after["B"] - before["B"] == amount
    mined = sum(
        int(b["rewards"]["total"]) for b in full_blocks(node, h1 + 1, h2) if b["reward_to"] == a
    )
    rewards = net.wallets["A"].json("rewards")["items"]
    settled = sum(int(i["royalties"]) for i in rewards if h1 < i["height"] <= h2)
    assert after["A"] - before["A"] == -amount - fee + mined + settled

    before = balances(net, "B", "C")  # neither mines nor holds shares: nothing else moves them
    sent = send(net, "B", "C", "2.25", "0.00002")
    after = balances(net, "B", "C")
    assert after["B"] - before["B"] == -(2_250_000_000 + 20_000)
    assert after["C"] - before["C"] == 2_250_000_000
    history = net.wallets["B"].json("history")
    directions = {item["txid"]: item["direction"] for item in history["items"] if "txid" in item}
    assert directions[sent["txid"]] == "out" and "in" in directions.values()


# --- access and royalties -----------------------------------------------------------------------


def test_access_pays_royalties_to_contributors_in_proportion_to_shares(network: Network) -> None:
    """An access payment buys a licence and is shared among the contributors by their shares
    at the block before it, each within a base unit of its exact share."""
    net = network
    send(net, "A", "C", "5", "0.00001")
    earned_before = {name: royalties_earned(net, name) for name in ("A", "D")}
    c_before = balances(net, "C")["C"]
    wait = f"{scaled(WAIT_S):g}"
    paid = net.wallets["C"].json(
        "access", "2", "--fee", "0.00003", "--wait", "--timeout", wait, timeout_s=2 * WAIT_S
    )
    amount, height = 2 * DRL, paid["height"]
    assert paid["status"] == "confirmed" and paid["kind"] == "access"
    params = net.genesis.params
    assert paid["licensed_until"] == height + params.licence_blocks * (
        amount // params.licence_price
    )
    assert balances(net, "C")["C"] == c_before - amount - 30_000

    blocks = block_summaries(net.node, 1, height - 1)
    shares = {
        name: sum(b["improvement_fixed"] for b in blocks if b["reward_to"] == net.addresses[name])
        for name in ("A", "D")
    }
    total = sum(b["improvement_fixed"] for b in blocks)
    assert shares["A"] > 0 and shares["D"] > 0 and sum(shares.values()) == total
    gained = {name: royalties_earned(net, name) - earned_before[name] for name in shares}
    for name, share in shares.items():
        exact = Fraction(amount * share, total)
        assert abs(gained[name] - exact) <= 1, (name, gained, shares)
    assert amount - len(shares) <= sum(gained.values()) <= amount


def test_a_licensee_downloads_the_model(network: Network, tmp_path: Path) -> None:
    """A wallet that bought access may download the weights; one without may not."""
    net = network
    licensed = net.wallets["C"].json("balance")["licensed_until"]
    if licensed < net.node.height():
        send(net, "A", "C", "1.1", "0.00001")
        wait = f"{scaled(WAIT_S):g}"
        net.wallets["C"].json("access", "1", "--wait", "--timeout", wait, timeout_s=2 * WAIT_S)
    out = tmp_path / "licensed.safetensors"
    document = net.wallets["C"].json("model", "download", str(out))
    assert out.stat().st_size == document["bytes"] > 0


# --- the model ----------------------------------------------------------------------------------


def test_downloaded_model_evaluates_to_the_loss_the_chain_reports(
    network: Network, tmp_path: Path
) -> None:
    """A contributor's download loads into the task's PyTorch model and evaluates to the loss
    its block claims (within the genesis tolerance); its hash is the block's model hash."""
    net = network
    out = tmp_path / "model.safetensors"
    model_before = get_json(net.node, "/model")
    document = net.wallets["A"].json("model", "download", str(out))
    model_after = get_json(net.node, "/model")
    height = document["height"]
    assert model_before["height"] <= height <= model_after["height"]
    block = get_json(net.node, f"/blocks/{height}")
    assert document["block"] == block["hash"] and document["bytes"] == out.stat().st_size
    task = BUILTIN_TASKS[model_after["task"]]
    assert task == DEFAULT_TASK == net.genesis.task

    weights = load_file(str(out))
    assert model_hash(weights).hex() == block["model_hash"]
    model = build_model(task)
    model.load_state_dict(weights, strict=True)
    assert model_after["parameters"] == sum(p.numel() for p in model.parameters())
    tolerance = net.genesis.params.loss_tolerance
    evaluation = evaluate(task, dict(model.state_dict()))
    assert abs(evaluation.loss - block["loss_fixed"]) <= tolerance
    _, split = load_task_split(task)
    with torch.inference_mode():
        logits = model(torch.from_numpy(split.x))
        loss = round(float(F.cross_entropy(logits, torch.from_numpy(split.y))) * LOSS_SCALE)
    assert abs(loss - block["loss_fixed"]) <= tolerance
    assert loss < net.genesis.initial_loss  # the chain did learn


def test_download_without_licence_or_shares_is_refused(network: Network, tmp_path: Path) -> None:
    """A wallet with neither licence nor shares gets one error line, exit 2, and no file."""
    net = network
    state = account(net.node, net.addresses["B"])
    assert state["shares"] == "0" and state["licensed_until"] == 0, state
    out = tmp_path / "refused.safetensors"
    result = net.wallets["B"].run("model", "download", str(out), "--json")
    line = assert_one_line_error(result, 2)
    assert "licence" in line and net.addresses["B"] in line
    assert list(tmp_path.iterdir()) == []


def test_balance_json_is_one_document(network: Network) -> None:
    """``balance --json`` prints exactly one JSON document whose amounts agree with the node."""
    net = network
    result = net.wallets["B"].run("balance", "--json")
    assert result.returncode == 0 and result.stderr == ""
    document = json.loads(result.stdout)
    state = account(net.node, net.addresses["B"])
    assert document["balance"] == state["balance"]
    assert document["nonce"] == state["nonce"]
