"""DeRelayL wallet: keystore and command-line client."""
