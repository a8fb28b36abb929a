"""DeRelayL chain: a proof-of-learning blockchain where miners train one model in relay."""

__version__ = "0.1.0"
