"""``python -m miner``: the same as the ``derelayl-miner`` command."""

from __future__ import annotations

from miner.cli import main

if __name__ == "__main__":
    main()
