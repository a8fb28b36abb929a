"""Who may download the model weights (derelayl_chain/access.py)."""

from __future__ import annotations

import pytest

from derelayl_chain.access import holds_licence, may_download
from derelayl_chain.state import Account

NEVER_LICENSED = Account(balance=10**9, nonce=3)


def test_never_licensed_account_may_not_download_at_height_zero() -> None:
    """A licensed_until of 0 means never licensed, even at the genesis height."""
    assert not holds_licence(NEVER_LICENSED, 0)
    assert not may_download(NEVER_LICENSED, 0, False)


@pytest.mark.parametrize("height", [0, 1, 100])
def test_account_without_licence_or_shares_may_not_download(height: int) -> None:
    """Neither a licence nor shares: refused at any height, and so is an unknown account."""
    assert not may_download(NEVER_LICENSED, height, False)
    assert not may_download(None, height, False)


@pytest.mark.parametrize(("height", "licensed"), [(0, True), (1, True), (7, True), (8, False)])
def test_licence_holds_through_its_last_height(height: int, licensed: bool) -> None:
    """A licence until height 7 lets its holder download up to and including height 7."""
    account = Account(licensed_until=7)
    assert holds_licence(account, height) is licensed
    assert may_download(account, height, False) is licensed


@pytest.mark.parametrize("height", [0, 50])
def test_contributor_may_download_without_a_licence(height: int) -> None:
    """Contribution shares unlock the weights whether or not a licence was ever paid for."""
    assert may_download(Account(shares=1), height, False)
    assert may_download(Account(shares=1, licensed_until=3), height, False)


def test_open_model_may_be_downloaded_by_anyone() -> None:
    """When genesis declares the model open, no account or licence is needed."""
    assert may_download(None, 0, True)
    assert may_download(NEVER_LICENSED, 0, True)
