"""``python -m wallet``: the same as the ``derelayl-wallet`` command."""

from __future__ import annotations

from wallet.cli import main

if __name__ == "__main__":
    main()
