"""fedmoe: federated and split learning of multimodal mixture-of-experts models over wireless devices.

Subpackages
-----------
fedmoe.wireless
    Channel (3GPP TR 38.901), antennas and beam codebooks, OFDMA uplink, device
    latency/energy accounting, and the exact resource allocator.
fedmoe.data
    The embedded synthetic multimodal ISAC generator, partitioners and real-format loaders.
fedmoe.config
    Pydantic models for every configuration, loaded from TOML.
"""

__version__ = "0.1.0"
