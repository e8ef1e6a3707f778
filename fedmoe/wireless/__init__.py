"""Wireless and device layer: channel, antennas, OFDMA uplink, latency/energy, allocation."""
