"""DeRelayL miner: the node process and the local devnet."""
